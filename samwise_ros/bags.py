"""rosbag2 files through `rosbags` (pure Python, no ROS install): the ROS 2 type store with this package's
messages, colour frames out of Image / CompressedImage messages, and the node's output messages in.

The output messages are the node's publications (docs/ros-interface.md), as the session describes them
(samwise_ros/session.py: `mask`, `result`, `centroid` and `markers` with a 3-D centroid, `cme_switch`);
each carries the header of the image it was computed from.
"""

from __future__ import annotations

import os
import sys
from functools import partial
from pathlib import Path

import numpy as np
from rosbags.interfaces import Nodetype
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_types_from_msg, get_typestore
from rosbags.typesys.store import Typestore

from . import images
from .messages import build
from .result_messages import OUTPUT_TOPICS
from .session import Publication

PACKAGE = "samwise_ros"
MESSAGES = ("Segmentation", "CmeSwitch")
IMAGE = "sensor_msgs/msg/Image"
COMPRESSED_IMAGE = "sensor_msgs/msg/CompressedImage"
STRING = "std_msgs/msg/String"
CAMERA_INFO = "sensor_msgs/msg/CameraInfo"
STORAGES = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}
BAG_VERSION = 9  # the rosbag2 format of Jazzy and Kilted


class UnsupportedImage(ValueError):
    """An image message this package cannot turn into an RGB frame."""


def message_directory() -> Path:
    """msg/ of this source tree, else share/samwise_ros/msg of an installed package."""
    candidates = [Path(__file__).resolve().parent.parent / "msg"]
    prefixes = [p for p in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep) if p] + [sys.prefix]
    candidates += [Path(prefix) / "share" / PACKAGE / "msg" for prefix in prefixes]
    for candidate in candidates:
        if all((candidate / f"{name}.msg").is_file() for name in MESSAGES):
            return candidate
    raise FileNotFoundError(f"no {PACKAGE} message definitions in {', '.join(map(str, candidates))}")


def samwise_typestore() -> Typestore:
    """The ROS 2 Kilted type store with samwise_ros/msg/Segmentation and CmeSwitch registered."""
    typestore = get_typestore(Stores.ROS2_KILTED)
    directory = message_directory()
    for name in MESSAGES:
        text = (directory / f"{name}.msg").read_text(encoding="utf-8")
        typestore.register(get_types_from_msg(text, f"{PACKAGE}/msg/{name}"))
    return typestore


def image_to_rgb(message) -> np.ndarray:
    """HxWx3 uint8 RGB (own, writable memory) from a deserialised sensor_msgs Image or CompressedImage,
    decoded exactly as the node decodes it."""
    compressed = message.__msgtype__ == COMPRESSED_IMAGE
    if not compressed and message.encoding not in images.COLOUR_ENCODINGS:
        raise UnsupportedImage(f"image encoding {message.encoding!r} is not supported "
                               f"(supported: {', '.join(images.COLOUR_ENCODINGS)})")
    try:
        rgb = images.compressed_to_rgb(message) if compressed else images.image_to_rgb(message)
    except ValueError as err:
        raise UnsupportedImage(str(err)) from None
    return np.array(rgb, order="C")  # a copy: rosbags messages view a read-only buffer


class NodeTopicWriter:
    """An output rosbag2 with the node's topics, one set per stream under `namespace`."""

    def __init__(self, path: Path, storage: str, typestore: Typestore):
        if Path(path).exists():
            raise FileExistsError(f"output bag {path} exists already (rosbag2 writers only create bags)")
        self.typestore = typestore
        self._make = partial(bag_message, typestore)
        self._writer = Writer(path, version=BAG_VERSION, storage_plugin=STORAGES[storage])
        self._writer.open()
        self._connections: dict[str, dict[str, object]] = {}

    def add_stream(self, namespace: str) -> None:
        prefix = namespace.rstrip("/")
        self._connections[namespace] = {
            topic: self._writer.add_connection(f"{prefix}/{topic}", message.MSGTYPE, typestore=self.typestore)
            for topic, message in OUTPUT_TOPICS.items()}

    def write(self, namespace: str, log_time_ns: int, publication: Publication) -> None:
        """The messages the node publishes for one result."""
        for topic, message in publication.messages().items():
            connection = self._connections[namespace][topic]
            data = self.typestore.serialize_cdr(build(message, self._make), connection.msgtype)
            self._writer.write(connection, log_time_ns, data)

    def close(self) -> None:
        self._writer.close()


def bag_message(typestore: Typestore, msgtype: str, **fields):
    """The `make` of samwise_ros.messages.build for rosbags: one message of `msgtype` with these fields and
    the defaults of ROS for the others (rosbags' messages have none)."""
    definitions = typestore.fielddefs[msgtype][1]
    return typestore.types[msgtype](**{name: fields[name] if name in fields else _default(typestore, definition)
                                       for name, definition in definitions})


def _default(typestore: Typestore, definition):
    """ROS's default value of a field: zero, false, empty, a message of defaults."""
    node, detail = definition
    if node == Nodetype.NAME:
        return bag_message(typestore, detail)
    if node == Nodetype.BASE:
        return {"string": "", "wstring": "", "bool": False, "float32": 0.0, "float64": 0.0}.get(detail[0], 0)
    (element_node, element), length = detail  # a sequence (empty) or an array (of `length`)
    count = length if node == Nodetype.ARRAY else 0
    if element_node == Nodetype.BASE and element[0] not in ("string", "wstring"):
        return np.zeros(count, dtype=element[0])
    return [_default(typestore, (element_node, element)) for _ in range(count)]
