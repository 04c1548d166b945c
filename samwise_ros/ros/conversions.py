"""sensor_msgs <-> numpy for the node, without cv_bridge (which cannot be installed here).

Decoding incoming images is ROS-free and shared with the replay (samwise_ros/images.py); this module
adds what needs the ROS message types: stamps, CameraInfo intrinsics, and building outgoing images.
Every malformed message is a ValueError whose text names the problem; callers log it.
"""

from __future__ import annotations

import array
from dataclasses import dataclass

import numpy as np
from builtin_interfaces.msg import Time
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import Header


def stamp_to_seconds(stamp: Time) -> float:
    return stamp.sec + stamp.nanosec * 1e-9


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
