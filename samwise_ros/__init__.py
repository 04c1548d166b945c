"""samwise_ros: streaming SAMWISE text-driven video segmentation, as a library and a ROS 2 node."""

# The generated ROS messages (samwise_ros.msg) may be installed in another directory of the same
# package name (a colcon install, or the venv's site-packages): merge them into this package.
__path__ = __import__("pkgutil").extend_path(__path__, __name__)

from .model import Samwise, SamwiseConfig  # noqa: E402
from .tracker import StreamTracker, TrackResult  # noqa: E402

__all__ = ["Samwise", "SamwiseConfig", "StreamTracker", "TrackResult"]
