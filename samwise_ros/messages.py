"""The node's output messages as plain dataclasses, without ROS.

Each class mirrors one ROS message type field by field (the fields this package fills; the others keep
their defaults), so one description of every output serves both message libraries: `build(value, make)`
turns it into the caller's messages, rclpy's in the node (samwise_ros/ros/conversions.py) and rosbags'
in the replay's bag writer (samwise_ros/bags.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, is_dataclass
from typing import Any, Callable, ClassVar

import numpy as np

# make(msgtype, **fields): one message of the caller's library, e.g. make("geometry_msgs/msg/Point", x=1.0, ...)
MessageFactory = Callable[..., Any]


@dataclass(frozen=True)
class Time:
    MSGTYPE: ClassVar[str] = "builtin_interfaces/msg/Time"
    sec: int = 0
    nanosec: int = 0

    @classmethod
    def from_ns(cls, nanoseconds: int) -> Time:
        return cls(sec=nanoseconds // 1_000_000_000, nanosec=nanoseconds % 1_000_000_000)


@dataclass(frozen=True)
class Duration(Time):
    MSGTYPE: ClassVar[str] = "builtin_interfaces/msg/Duration"


@dataclass(frozen=True)
class Header:
    MSGTYPE: ClassVar[str] = "std_msgs/msg/Header"
    stamp: Time
    frame_id: str


@dataclass(frozen=True)
class Point:
    MSGTYPE: ClassVar[str] = "geometry_msgs/msg/Point"
    x: float = 0.0
    y: float = 0.0
    z: float = 0.0

    @classmethod
    def of(cls, coordinates: tuple[float, ...] | None) -> Point:
        """From (x, y) pixels (z = 0) or (x, y, z) metres; all zero for None (the messages' "unknown")."""
        return cls(*map(float, coordinates)) if coordinates is not None else cls()


@dataclass(frozen=True)
class Vector3(Point):
    MSGTYPE: ClassVar[str] = "geometry_msgs/msg/Vector3"


@dataclass(frozen=True)
class Quaternion:
    MSGTYPE: ClassVar[str] = "geometry_msgs/msg/Quaternion"
    x: float = 0.0
    y: float = 0.0
    z: float = 0.0
    w: float = 1.0


@dataclass(frozen=True)
class Pose:
    MSGTYPE: ClassVar[str] = "geometry_msgs/msg/Pose"
    position: Point
    orientation: Quaternion = Quaternion()


@dataclass(frozen=True)
class PointStamped:
    MSGTYPE: ClassVar[str] = "geometry_msgs/msg/PointStamped"
    header: Header
    point: Point


@dataclass(frozen=True)
class ColorRGBA:
    MSGTYPE: ClassVar[str] = "std_msgs/msg/ColorRGBA"
    r: float
    g: float
    b: float
    a: float = 1.0


@dataclass(frozen=True)
class RegionOfInterest:
    MSGTYPE: ClassVar[str] = "sensor_msgs/msg/RegionOfInterest"
    x_offset: int = 0
    y_offset: int = 0
    height: int = 0
    width: int = 0
    do_rectify: bool = False


@dataclass(frozen=True, eq=False)  # pixel arrays do not compare with ==
class Image:
    MSGTYPE: ClassVar[str] = "sensor_msgs/msg/Image"
    header: Header
    height: int
    width: int
    encoding: str
    is_bigendian: int
    step: int
    data: np.ndarray  # uint8, step x height bytes


@dataclass(frozen=True)
class Segmentation:
    MSGTYPE: ClassVar[str] = "samwise_ros/msg/Segmentation"
    header: Header
    query: str
    frame_index: int
    detected: bool
    object_score: float
    bbox: RegionOfInterest
    area_px: int
    centroid_px: Point
    has_centroid_3d: bool
    centroid_3d: Point
    cme_switched: bool
    cme_probability: float
    latency_ms: float


@dataclass(frozen=True)
class CmeSwitch:
    MSGTYPE: ClassVar[str] = "samwise_ros/msg/CmeSwitch"
    header: Header
    query: str
    frame_index: int
    cme_probability: float
    centroid_px_before: Point
    centroid_px_after: Point


@dataclass(frozen=True)
class Marker:
    MSGTYPE: ClassVar[str] = "visualization_msgs/msg/Marker"
    SPHERE: ClassVar[int] = 2
    TEXT_VIEW_FACING: ClassVar[int] = 9
    ADD: ClassVar[int] = 0
    header: Header
    ns: str
    id: int
    type: int
    pose: Pose
    scale: Vector3
    color: ColorRGBA
    lifetime: Duration
    text: str = ""
    action: int = ADD


@dataclass(frozen=True)
class MarkerArray:
    MSGTYPE: ClassVar[str] = "visualization_msgs/msg/MarkerArray"
    markers: list[Marker] = field(default_factory=list)


def image(pixels: np.ndarray, encoding: str, header: Header | Any) -> Image:
    """An HxW or HxWxC uint8 array as an Image (`header` may be a message of the caller's library)."""
    pixels = np.ascontiguousarray(pixels)
    channels = 1 if pixels.ndim == 2 else pixels.shape[2]
    return Image(header=header, height=pixels.shape[0], width=pixels.shape[1], encoding=encoding,
                 is_bigendian=0, step=pixels.shape[1] * channels * pixels.itemsize,
                 data=pixels.reshape(-1).view(np.uint8))


def build(value: Any, make: MessageFactory) -> Any:
    """`value` with every dataclass of this module made a message by `make`, inner ones first; anything
    else (numbers, text, arrays, messages already built) stays as it is."""
    if is_dataclass(value):
        return make(value.MSGTYPE, **{f.name: build(getattr(value, f.name), make) for f in fields(value)})
    if isinstance(value, list):
        return [build(item, make) for item in value]
    return value


def stamp_to_ns(stamp) -> int:
    """Nanoseconds of a builtin_interfaces/Time of any message library."""
    return stamp.sec * 1_000_000_000 + stamp.nanosec
