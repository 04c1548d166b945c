"""Image messages -> numpy, without ROS: the decoding the node and the replay share.

Works on any object with sensor_msgs/Image's fields (an rclpy message, or a rosbags-deserialised one).
Images become numpy *views* of the message buffer wherever numpy can express the layout (row padding
through `step`, channel order through negative strides, alpha dropped by slicing), so a frame costs no
copy until the model's preprocessing. Every malformed message is an ImageError whose text names the
problem.
"""

from __future__ import annotations

import cv2
import numpy as np

# encoding -> (channels, which channels make RGB)
COLOUR_ENCODINGS = {
    "rgb8": (3, slice(None)),
    "bgr8": (3, slice(None, None, -1)),
    "rgba8": (4, slice(0, 3)),
    "bgra8": (4, slice(2, None, -1)),
    "mono8": (1, None),
}
# encoding -> (element type, unit): 16UC1 counts depth_scale metres, 32FC1 is metres
DEPTH_ENCODINGS = {"16UC1": np.uint16, "mono16": np.uint16, "32FC1": np.float32}


class ImageError(ValueError):
    """A message that cannot be used as an image. `kind` names the problem without its details (the
    same for every message that has it), so a caller can throttle its log by kind, not by text."""

    def __init__(self, kind: str, text: str):
        super().__init__(text)
        self.kind = kind


def check_image_size(width: int, height: int, max_pixels: int, what: str) -> None:
    """An ImageError when width x height is more than `max_pixels` (the max_image_pixels parameter)."""
    if width * height > max_pixels:
        raise ImageError("too large", f"{what}: {width}x{height} is {width * height} pixels, more than "
                                      f"max_image_pixels ({max_pixels}): frame rejected")


def pixel_view(msg, channels: int, dtype: type, what: str) -> np.ndarray:
    """An HxWxC view of `msg.data`, honouring `step` (row padding) and `is_bigendian`."""
    height, width, step, size = msg.height, msg.width, msg.step, len(msg.data)
    if height == 0 or width == 0 or size == 0:
        raise ImageError("empty", f"{what}: empty image ({width}x{height}, {size} bytes)")
    item = np.dtype(dtype).newbyteorder(">" if msg.is_bigendian else "<")
    row_bytes = width * channels * item.itemsize
    if step < row_bytes:
        raise ImageError("short step", f"{what}: step {step} is shorter than a row of {width} {msg.encoding} "
                                       f"pixels ({row_bytes} bytes)")
    if size != step * height:
        raise ImageError("data size", f"{what}: data has {size} bytes, but step x height = {step} x {height} = "
                                      f"{step * height}")
    return np.ndarray((height, width, channels), dtype=item, buffer=msg.data,
                      strides=(step, channels * item.itemsize, item.itemsize))


def image_to_rgb(msg) -> np.ndarray:
    """A colour or mono image as an HxWx3 uint8 RGB view of the message (no copy)."""
    if msg.encoding not in COLOUR_ENCODINGS:
        raise ImageError("unsupported encoding", f"image: unsupported encoding {msg.encoding!r} "
                                                 f"(expected one of {', '.join(COLOUR_ENCODINGS)})")
    channels, rgb = COLOUR_ENCODINGS[msg.encoding]
    pixels = pixel_view(msg, channels, np.uint8, "image")
    if rgb is None:  # mono8: the grey channel three times, by a zero stride
        return np.broadcast_to(pixels, (msg.height, msg.width, 3))
    return pixels[:, :, rgb]


def compressed_to_rgb(msg) -> np.ndarray:
    """A JPEG or PNG CompressedImage decoded with OpenCV, as HxWx3 uint8 RGB."""
    if len(msg.data) == 0:
        raise ImageError("empty", f"image/compressed: empty message (format {msg.format!r})")
    bgr = cv2.imdecode(np.frombuffer(msg.data, np.uint8), cv2.IMREAD_COLOR)
    if bgr is None:
        raise ImageError("undecodable",
                         f"image/compressed: cannot decode {len(msg.data)} bytes of format {msg.format!r}")
    return bgr[:, :, ::-1]


def depth_to_array(msg, depth_scale: float) -> tuple[np.ndarray, float]:
    """(HxW view of the depth values, metres per value): 16UC1 is in depth_scale units, 32FC1 in metres."""
    if msg.encoding not in DEPTH_ENCODINGS:
        raise ImageError("unsupported encoding", f"depth: unsupported encoding {msg.encoding!r} "
                                                 f"(expected one of {', '.join(DEPTH_ENCODINGS)})")
    dtype = DEPTH_ENCODINGS[msg.encoding]
    values = pixel_view(msg, 1, dtype, "depth")[:, :, 0]
    return values, (depth_scale if dtype is np.uint16 else 1.0)
