"""rosbag2 files through `rosbags` (pure Python, no ROS install): the ROS 2 type store with this package's
messages, colour frames out of Image / CompressedImage messages, and the node's output messages in.

The output messages mirror the node's publications (README, ROS 2 interface): `mask` (mono8, 0/255),
`result` (samwise_ros/Segmentation), `centroid` (geometry_msgs/PointStamped, when depth gives a 3-D
point), `cme_switch` (samwise_ros/CmeSwitch); each carries the header of the image it was computed from.
"""

from __future__ import annotations

import math
import os
import sys
from pathlib import Path

import numpy as np
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_types_from_msg, get_typestore
from rosbags.typesys.store import Typestore

from . import images
from .tracker import TrackResult

PACKAGE = "samwise_ros"
MESSAGES = ("Segmentation", "CmeSwitch")
IMAGE = "sensor_msgs/msg/Image"
COMPRESSED_IMAGE = "sensor_msgs/msg/CompressedImage"
STRING = "std_msgs/msg/String"
CAMERA_INFO = "sensor_msgs/msg/CameraInfo"
POINT_STAMPED = "geometry_msgs/msg/PointStamped"
SEGMENTATION = f"{PACKAGE}/msg/Segmentation"
CME_SWITCH = f"{PACKAGE}/msg/CmeSwitch"
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


def stamp_to_ns(stamp) -> int:
    return stamp.sec * 1_000_000_000 + stamp.nanosec


class NodeTopicWriter:
    """An output rosbag2 with the node's topics, one set per stream under `namespace`."""

    def __init__(self, path: Path, storage: str, typestore: Typestore):
        if Path(path).exists():
            raise FileExistsError(f"output bag {path} exists already (rosbag2 writers only create bags)")
        self.typestore = typestore
        self._types = typestore.types
        self._writer = Writer(path, version=BAG_VERSION, storage_plugin=STORAGES[storage])
        self._writer.open()
        self._connections: dict[str, dict[str, object]] = {}

    def add_stream(self, namespace: str) -> None:
        prefix = namespace.rstrip("/")
        self._connections[namespace] = {
            "mask": self._writer.add_connection(f"{prefix}/mask", IMAGE, typestore=self.typestore),
            "result": self._writer.add_connection(f"{prefix}/result", SEGMENTATION, typestore=self.typestore),
            "centroid": self._writer.add_connection(f"{prefix}/centroid", POINT_STAMPED, typestore=self.typestore),
            "cme_switch": self._writer.add_connection(f"{prefix}/cme_switch", CME_SWITCH, typestore=self.typestore),
        }

    def write(self, namespace: str, log_time_ns: int, stamp_ns: int, frame_id: str, result: TrackResult,
              latency_ms: float, centroid_before: tuple[float, float] | None,
              centroid_3d: tuple[float, float, float] | None = None) -> None:
        """The messages the node publishes for one result (a PointStamped only with a 3-D centroid, a
        CmeSwitch only when the CME switched)."""
        header = self._header(stamp_ns, frame_id)
        messages = {"mask": self._mask(header, result.mask),
                    "result": self._segmentation(header, result, latency_ms, centroid_3d)}
        if centroid_3d is not None:
            messages["centroid"] = self._types[POINT_STAMPED](header=header, point=self._point(centroid_3d))
        if result.cme_switched:
            messages["cme_switch"] = self._types[CME_SWITCH](
                header=header, query=result.query, frame_index=result.frame_index,
                cme_probability=result.cme_probability or 0.0,
                centroid_px_before=self._point(centroid_before), centroid_px_after=self._point(result.centroid))
        for topic, message in messages.items():
            connection = self._connections[namespace][topic]
            self._writer.write(connection, log_time_ns, self.typestore.serialize_cdr(message, connection.msgtype))

    def close(self) -> None:
        self._writer.close()

    def _header(self, stamp_ns: int, frame_id: str):
        time = self._types["builtin_interfaces/msg/Time"](sec=stamp_ns // 1_000_000_000,
                                                           nanosec=stamp_ns % 1_000_000_000)
        return self._types["std_msgs/msg/Header"](stamp=time, frame_id=frame_id)

    def _mask(self, header, mask: np.ndarray):
        height, width = mask.shape
        return self._types[IMAGE](header=header, height=height, width=width, encoding="mono8", is_bigendian=0,
                                  step=width, data=(mask.astype(np.uint8) * 255).reshape(-1))

    def _segmentation(self, header, result: TrackResult, latency_ms: float,
                      centroid_3d: tuple[float, float, float] | None):
        x0, y0, x1, y1 = result.bbox or (0, 0, -1, -1)  # all zero when nothing is detected
        bbox = self._types["sensor_msgs/msg/RegionOfInterest"](
            x_offset=x0, y_offset=y0, height=y1 - y0 + 1, width=x1 - x0 + 1, do_rectify=False)
        return self._types[SEGMENTATION](
            header=header, query=result.query, frame_index=result.frame_index, detected=result.detected,
            object_score=result.object_score, bbox=bbox, area_px=result.area,
            centroid_px=self._point(result.centroid), has_centroid_3d=centroid_3d is not None,
            centroid_3d=self._point(centroid_3d),
            cme_switched=result.cme_switched,
            cme_probability=math.nan if result.cme_probability is None else result.cme_probability,  # as the node
            latency_ms=latency_ms)

    def _point(self, coordinates: tuple[float, ...] | None):
        """A Point from (x, y) pixels (z = 0) or (x, y, z) metres; all zero for None."""
        x, y, z = (*coordinates, 0.0)[:3] if coordinates else (0.0, 0.0, 0.0)
        return self._types["geometry_msgs/msg/Point"](x=float(x), y=float(y), z=float(z))
