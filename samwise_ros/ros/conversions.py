"""sensor_msgs <-> numpy for the node, without cv_bridge (which cannot be installed here).

Decoding incoming images is ROS-free and shared with the replay (samwise_ros/images.py); this module
adds what needs the ROS message types: stamps and building outgoing images.
Every malformed message is a ValueError whose text names the problem; callers log it.
"""

from __future__ import annotations

import array

import numpy as np
from builtin_interfaces.msg import Time
from sensor_msgs.msg import Image
from std_msgs.msg import Header


def stamp_to_seconds(stamp: Time) -> float:
    return stamp.sec + stamp.nanosec * 1e-9


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
