"""sensor_msgs images <-> numpy, without cv_bridge (which cannot be installed here).

Incoming images become numpy *views* of the message buffer wherever numpy can express the layout
(row padding through `step`, channel order through negative strides, alpha dropped by slicing), so a
frame costs no copy until the model's preprocessing. Every malformed message is a ValueError whose
text names the problem; callers log it.
"""

from __future__ import annotations

import array
from dataclasses import dataclass

import cv2
import numpy as np
from builtin_interfaces.msg import Time
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_msgs.msg import Header

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


def stamp_to_seconds(stamp: Time) -> float:
    return stamp.sec + stamp.nanosec * 1e-9


def _pixels(msg: Image, channels: int, dtype: type, what: str) -> np.ndarray:
    """An HxWxC view of `msg.data`, honouring `step` (row padding) and `is_bigendian`."""
    height, width, step, size = msg.height, msg.width, msg.step, len(msg.data)
    if height == 0 or width == 0 or size == 0:
        raise ValueError(f"{what}: empty image ({width}x{height}, {size} bytes)")
    item = np.dtype(dtype).newbyteorder(">" if msg.is_bigendian else "<")
    row_bytes = width * channels * item.itemsize
    if step < row_bytes:
        raise ValueError(f"{what}: step {step} is shorter than a row of {width} {msg.encoding} pixels "
                         f"({row_bytes} bytes)")
    if size != step * height:
        raise ValueError(f"{what}: data has {size} bytes, but step x height = {step} x {height} = {step * height}")
    return np.ndarray((height, width, channels), dtype=item, buffer=msg.data,
                      strides=(step, channels * item.itemsize, item.itemsize))


def image_to_rgb(msg: Image) -> np.ndarray:
    """A colour or mono image as an HxWx3 uint8 RGB view of the message (no copy)."""
    if msg.encoding not in COLOUR_ENCODINGS:
        raise ValueError(f"image: unsupported encoding {msg.encoding!r} "
                         f"(expected one of {', '.join(COLOUR_ENCODINGS)})")
    channels, rgb = COLOUR_ENCODINGS[msg.encoding]
    pixels = _pixels(msg, channels, np.uint8, "image")
    if rgb is None:  # mono8: the grey channel three times, by a zero stride
        return np.broadcast_to(pixels, (msg.height, msg.width, 3))
    return pixels[:, :, rgb]


def compressed_to_rgb(msg: CompressedImage) -> np.ndarray:
    """A JPEG or PNG CompressedImage decoded with OpenCV, as HxWx3 uint8 RGB."""
    if len(msg.data) == 0:
        raise ValueError(f"image/compressed: empty message (format {msg.format!r})")
    bgr = cv2.imdecode(np.frombuffer(msg.data, np.uint8), cv2.IMREAD_COLOR)
    if bgr is None:
        raise ValueError(f"image/compressed: cannot decode {len(msg.data)} bytes of format {msg.format!r}")
    return bgr[:, :, ::-1]


def depth_to_array(msg: Image, depth_scale: float) -> tuple[np.ndarray, float]:
    """(HxW view of the depth values, metres per value): 16UC1 is in depth_scale units, 32FC1 in metres."""
    if msg.encoding not in DEPTH_ENCODINGS:
        raise ValueError(f"depth: unsupported encoding {msg.encoding!r} "
                         f"(expected one of {', '.join(DEPTH_ENCODINGS)})")
    dtype = DEPTH_ENCODINGS[msg.encoding]
    values = _pixels(msg, 1, dtype, "depth")[:, :, 0]
    return values, (depth_scale if dtype is np.uint16 else 1.0)


@dataclass(frozen=True)
class Intrinsics:
    """Pinhole intrinsics of the (rectified) image: focal lengths and principal point, in pixels."""

    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int


def camera_info_to_intrinsics(msg: CameraInfo) -> Intrinsics:
    fx, fy, cx, cy = msg.k[0], msg.k[4], msg.k[2], msg.k[5]
    if not (np.isfinite([fx, fy, cx, cy]).all() and fx != 0.0 and fy != 0.0):
        raise ValueError(f"camera_info: unusable intrinsics (fx={fx}, fy={fy}, cx={cx}, cy={cy}): "
                         "zero or non-finite focal length")
    return Intrinsics(float(fx), float(fy), float(cx), float(cy), msg.width, msg.height)


def array_to_image(pixels: np.ndarray, encoding: str, header: Header) -> Image:
    """An HxW or HxWxC uint8 array as an Image (one copy, into the message's own buffer)."""
    pixels = np.ascontiguousarray(pixels)
    channels = 1 if pixels.ndim == 2 else pixels.shape[2]
    msg = Image(header=header, height=pixels.shape[0], width=pixels.shape[1], encoding=encoding,
                is_bigendian=0, step=pixels.shape[1] * channels * pixels.itemsize)
    msg.data = _byte_array(pixels)
    return msg


def mask_to_image(mask: np.ndarray, header: Header) -> Image:
    """A boolean HxW mask as a mono8 Image of 0 and 255."""
    return array_to_image(mask.view(np.uint8) * np.uint8(255), "mono8", header)


def _byte_array(pixels: np.ndarray) -> array.array:
    # array.array is the type rclpy keeps uint8[] fields in: assigning one skips the per-element check
    data = array.array("B")
    data.frombytes(memoryview(pixels).cast("B"))
    return data
