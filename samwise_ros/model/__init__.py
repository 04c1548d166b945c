"""The SAMWISE network: pure torch on `sam2` and `transformers`, no ROS."""

from .config import SamwiseConfig
from .samwise import Samwise

__all__ = ["Samwise", "SamwiseConfig"]
