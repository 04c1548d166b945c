"""numpy and the session's message mirrors -> rclpy messages, without cv_bridge (which cannot be installed here).

Decoding incoming images is ROS-free and shared with the replay (samwise_ros/images.py); what the node
publishes is described once, ROS-free, in samwise_ros/messages.py: this module makes rclpy messages of it.
"""

from __future__ import annotations

import array
import importlib
from functools import cache

import numpy as np
from sensor_msgs.msg import Image
from std_msgs.msg import Header

from ..messages import build, image


@cache
def message_class(msgtype: str) -> type:
    """The rclpy class of a message type, e.g. "geometry_msgs/msg/Point"."""
    package, _, name = msgtype.split("/")
    return getattr(importlib.import_module(f"{package}.msg"), name)


def ros_message(msgtype: str, **fields):
    """The `make` of samwise_ros.messages.build for rclpy: one message of `msgtype` with these fields."""
    arrays = {name: value for name, value in fields.items() if isinstance(value, np.ndarray)}
    message = message_class(msgtype)(**{name: value for name, value in fields.items() if name not in arrays})
    for name, value in arrays.items():  # after construction, which would copy them element by element
        setattr(message, name, _byte_array(value))
    return message


def array_to_image(pixels: np.ndarray, encoding: str, header: Header) -> Image:
    """An HxW or HxWxC uint8 array as an Image (one copy, into the message's own buffer)."""
    return build(image(pixels, encoding, header), ros_message)


def _byte_array(pixels: np.ndarray) -> array.array:
    # array.array is the type rclpy keeps uint8[] fields in: assigning one skips the per-element check
    data = array.array("B")
    data.frombytes(memoryview(pixels).cast("B"))
    return data
