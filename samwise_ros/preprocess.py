"""Frames in, model input out: the release's resize and normalisation, on the model's device.

The release applies torchvision `Resize(1020, max_size=1024)` to PIL images (PIL's antialiased
bilinear filter), then `ToTensor` and ImageNet `Normalize`. Here one implementation serves every
device: `torch.nn.functional.interpolate(mode="bilinear", antialias=True)` on float pixels, which
follows PIL's filter; it differs from PIL only by PIL's rounding to uint8 after resizing (at most
about one grey level, measured in test_preprocess.py).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
RELEASE_IMAGE_SIZE = 1024
RELEASE_SHORT_SIDE = 1020  # the release resizes the short side to 1020, not 1024


def resized_shape(height: int, width: int, image_size: int) -> tuple[int, int]:
    """torchvision Resize(short, max_size=image_size) output size, scaled for other model sizes.

    The short side goes to image_size * 1020 / 1024 unless the long side would then exceed
    image_size, in which case the long side is image_size (so near-square frames end at 1020).
    """
    short_target = image_size * RELEASE_SHORT_SIDE // RELEASE_IMAGE_SIZE
    short, long = min(height, width), max(height, width)
    new_short, new_long = short_target, int(short_target * long / short)
    if new_long > image_size:
        new_short, new_long = int(image_size * new_short / new_long), image_size
    new_short = max(new_short, 1)  # a 1-pixel-wide frame would otherwise vanish
    return (new_short, new_long) if height <= width else (new_long, new_short)


def validate_frame(frame: np.ndarray) -> np.ndarray:
    """An HxWx3 uint8 array (any strides), or a ValueError saying what is wrong."""
    if not isinstance(frame, np.ndarray):
        raise ValueError(f"frame must be a numpy array, got {type(frame).__name__}")
    if frame.dtype != np.uint8:
        raise ValueError(f"frame must be uint8 RGB, got dtype {frame.dtype}")
    if frame.ndim != 3 or frame.shape[2] != 3:
        raise ValueError(f"frame must be HxWx3 RGB, got shape {frame.shape}")
    if frame.shape[0] == 0 or frame.shape[1] == 0:
        raise ValueError(f"frame is empty: shape {frame.shape}")
    return frame


def preprocess_frame(frame: np.ndarray, image_size: int, device: torch.device) -> tuple[Tensor, tuple[int, int]]:
    """HxWx3 uint8 RGB -> ([3, h, w] normalised float32 on `device`, (h, w)), h, w <= image_size."""
    frame = validate_frame(frame)
    height, width = frame.shape[:2]
    target = resized_shape(height, width, image_size)
    pixels = torch.from_numpy(np.ascontiguousarray(frame)).to(device, non_blocking=True)
    pixels = pixels.permute(2, 0, 1).unsqueeze(0).float()  # [1, 3, H, W], 0..255
    if target != (height, width):
        pixels = F.interpolate(pixels, size=target, mode="bilinear", align_corners=False, antialias=True)
    mean = torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1)
    return ((pixels / 255.0 - mean) / std)[0], target
