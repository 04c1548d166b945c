"""What a replay reads: a rosbag2 (mcap or sqlite3, via rosbags), a video file (OpenCV) or a folder of
frames, as a stream of `Frame`s and, from a bag's query topic, `QueryChange`s in recording order.
A bag's frames can carry the depth frame paired with them (depth + camera_info topics)."""

from __future__ import annotations

import os
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np
from rosbags.highlevel import AnyReader
from rosbags.typesys import Stores, get_typestore

from ..bags import CAMERA_INFO, COMPRESSED_IMAGE, IMAGE, STRING, UnsupportedImage, image_to_rgb
from ..depth import DepthFrame, DepthPairing, camera_info_to_intrinsics
from ..images import depth_to_array
from ..messages import stamp_to_ns

FRAME_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}
BAG_SUFFIXES = {".mcap", ".db3"}


class ReplayInputError(Exception):
    """The input cannot be (further) read; the message says why and what to do."""


@dataclass
class Frame:
    number: int  # position among the input's frames
    name: str  # file stem for a folder of frames, else the zero-padded number
    rgb: np.ndarray  # HxWx3 uint8
    stamp_ns: int  # header stamp (bag) or time in the video
    log_time_ns: int  # when it was recorded: the bag's receive time, else the stamp
    frame_id: str
    depth: DepthFrame | None = None  # the depth nearest in stamp within the slop, when depth is read


@dataclass(frozen=True)
class DepthTopics:
    depth: str  # sensor_msgs/Image, 16UC1 (depth_scale metres per unit) or 32FC1 (metres)
    camera_info: str
    depth_scale: float
    slop: float  # seconds between the colour and the depth stamps, at most


@dataclass
class QueryChange:
    text: str


class BagSource:
    """Image messages of one topic, and std_msgs/String messages of an optional query topic."""

    def __init__(self, path: Path, image_topic: str | None, query_topic: str | None,
                 depth_topics: DepthTopics | None = None):
        if not path.exists():
            raise ReplayInputError(f"no bag at {path}")
        self._path = path
        # bags without message definitions (sqlite3 before Iron) are read with the Kilted definitions
        self._reader = AnyReader([path], default_typestore=get_typestore(Stores.ROS2_KILTED))
        try:
            self._reader.open()
        except Exception as err:  # rosbags raises several types for unreadable files
            raise ReplayInputError(f"cannot open bag {path}: {err}{_repair_hint(path)}") from err
        topics = self._reader.topics
        self.image_topic = _choose_image_topic(topics, image_topic)
        if query_topic is not None and topics.get(query_topic, None) is None:
            strings = sorted(t for t, info in topics.items() if info.msgtype == STRING) or ["none"]
            raise ReplayInputError(f"query topic {query_topic!r} is not in the bag "
                                   f"(std_msgs/String topics: {', '.join(strings)})")
        if query_topic is not None and topics[query_topic].msgtype != STRING:
            raise ReplayInputError(f"query topic {query_topic!r} has type {topics[query_topic].msgtype}, "
                                   f"not {STRING}")
        self.query_topic = query_topic
        self.query_messages = topics[query_topic].msgcount if query_topic is not None else 0
        if depth_topics is not None:
            _check_topic(topics, depth_topics.depth, IMAGE, "depth")
            _check_topic(topics, depth_topics.camera_info, CAMERA_INFO, "camera_info")
        self.depth_topics = depth_topics
        self.total = topics[self.image_topic].msgcount
        self.fps = None
        self.description = f"bag {path}, topic {self.image_topic} ({topics[self.image_topic].msgtype})"

    def __iter__(self) -> Iterator[Frame | QueryChange]:
        wanted = {self.image_topic, self.query_topic}
        if self.depth_topics is not None:
            wanted |= {self.depth_topics.depth, self.depth_topics.camera_info}
        connections = [c for c in self._reader.connections if c.topic in wanted]
        messages = self._reader.messages(connections=connections)
        depth = _DepthAttacher(self.depth_topics) if self.depth_topics is not None else None
        number = 0
        try:
            while True:
                try:
                    connection, log_time, raw = next(messages)
                    message = self._reader.deserialize(raw, connection.msgtype)
                except StopIteration:
                    break
                except Exception as err:
                    raise ReplayInputError(f"the bag cannot be read past image {number} of {self.total}: "
                                           f"{err}{_repair_hint(self._path)}") from err
                if connection.topic == self.query_topic:
                    yield from depth.drain() if depth else ()  # frames before a query change stay before it
                    yield QueryChange(message.data)
                elif connection.topic == self.image_topic:
                    frame = self._frame(number, message, log_time)
                    number += 1
                    if depth is None:
                        yield frame
                    else:
                        depth.hold(frame)
                else:
                    depth.add(connection.topic, message)
                if depth is not None:
                    yield from depth.ready()
            if depth is not None:
                yield from depth.drain()
        finally:
            self._reader.close()

    def _frame(self, number: int, message, log_time: int) -> Frame:
        try:
            rgb = image_to_rgb(message)
        except UnsupportedImage as err:
            raise ReplayInputError(f"image {number} on {self.image_topic}: {err}") from err
        return Frame(number, f"{number:06d}", rgb, stamp_to_ns(message.header.stamp), log_time,
                     message.header.frame_id)


class _DepthAttacher:
    """Pairs a bag's frames with its depth. A recorder writes a depth frame beside or shortly after the
    colour frame of the same instant, so frames are held until depth stamped at or after theirs has
    been read (or too many wait: the depth stream stopped), then given the nearest one within the slop."""

    MAX_WAITING = 64

    def __init__(self, topics: DepthTopics):
        self._topics = topics
        self._pairing = DepthPairing(capacity=2 * self.MAX_WAITING)
        self._waiting: deque[Frame] = deque()

    def add(self, topic: str, message) -> None:
        stamp = stamp_to_ns(message.header.stamp) / 1e9
        try:
            if topic == self._topics.depth:
                self._pairing.add_depth(stamp, *depth_to_array(message, self._topics.depth_scale))
            else:
                self._pairing.add_intrinsics(stamp, camera_info_to_intrinsics(message))
        except ValueError as err:
            raise ReplayInputError(f"{topic}: {err}") from err

    def hold(self, frame: Frame) -> None:
        self._waiting.append(frame)

    def ready(self) -> Iterator[Frame]:
        newest = self._pairing.newest_depth_stamp()
        while self._waiting and (len(self._waiting) > self.MAX_WAITING or (
                newest is not None and self._pairing.has_intrinsics() and self._waiting[0].stamp_ns / 1e9 <= newest)):
            yield self._paired(self._waiting.popleft())

    def drain(self) -> Iterator[Frame]:
        while self._waiting:
            yield self._paired(self._waiting.popleft())

    def _paired(self, frame: Frame) -> Frame:
        frame.depth = self._pairing.match(frame.stamp_ns / 1e9, self._topics.slop)
        return frame


def quiet_ffmpeg_log() -> None:
    """Keep FFmpeg's own log quiet: a damaged video makes it write a line for every damaged block
    (thousands), and VideoSource says what went wrong once. OpenCV reads the level when it first opens a
    video (or a video writer) in the process, so this must come before that. A level the user set wins
    (OpenCV then prints FFmpeg's lines to stdout)."""
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # AV_LOG_QUIET


class VideoSource:
    def __init__(self, path: Path, frame_id: str):
        if not path.is_file():
            raise ReplayInputError(f"no video file at {path}")
        self._capture = cv2.VideoCapture(str(path))
        if not self._capture.isOpened():
            raise ReplayInputError(f"OpenCV cannot open {path} as a video (unknown format, or a damaged file)")
        self.total = int(self._capture.get(cv2.CAP_PROP_FRAME_COUNT)) or None
        self.fps = self._capture.get(cv2.CAP_PROP_FPS) or None
        self._frame_id = frame_id
        self.description = f"video {path}"

    def __iter__(self) -> Iterator[Frame]:
        number = 0
        try:
            while True:
                ok, bgr = self._capture.read()
                if not ok:
                    break
                stamp = round(number * 1e9 / (self.fps or 1.0))
                yield Frame(number, f"{number:06d}", cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), stamp, stamp,
                            self._frame_id)
                number += 1
        finally:
            self._capture.release()
        if self.total is not None and number < self.total:
            raise ReplayInputError(f"the video ended after {number} of the {self.total} frames it declares: "
                                   "the file is truncated or damaged")


class FolderSource:
    """Image files of one folder in name order, one frame each, `fps` apart."""

    def __init__(self, path: Path, frame_id: str, fps: float):
        self._files = sorted(p for p in path.iterdir() if p.suffix.lower() in FRAME_SUFFIXES)
        if not self._files:
            raise ReplayInputError(f"{path} holds no image files ({', '.join(sorted(FRAME_SUFFIXES))})")
        _read_rgb(self._files[0])  # a folder whose first image is unreadable is refused before anything starts
        self.total = len(self._files)
        self.fps = fps
        self._frame_id = frame_id
        self.description = f"frames in {path}"

    def __iter__(self) -> Iterator[Frame]:
        for number, file in enumerate(self._files):
            stamp = round(number * 1e9 / self.fps)
            yield Frame(number, file.stem, _read_rgb(file), stamp, stamp, self._frame_id)


def _read_rgb(file: Path) -> np.ndarray:
    bgr = cv2.imread(str(file), cv2.IMREAD_COLOR)
    if bgr is None:
        raise ReplayInputError(f"cannot read image {file}")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def open_source(path: Path, image_topic: str | None = None, query_topic: str | None = None,
                frame_id: str = "camera", fps: float = 10.0, depth_topics: DepthTopics | None = None):
    """A bag (a directory with metadata.yaml or bag files, or an .mcap/.db3 file), a folder of frames,
    or a video file."""
    if _is_bag(path):
        return BagSource(path, image_topic, query_topic, depth_topics)
    if image_topic or query_topic or depth_topics:
        raise ReplayInputError(f"{path} is not a rosbag2: --image-topic, --query-topic and --depth-topic need a bag")
    if path.is_dir():
        return FolderSource(path, frame_id, fps)
    return VideoSource(path, frame_id)


def _is_bag(path: Path) -> bool:
    if path.is_dir():
        return (path / "metadata.yaml").exists() or any(p.suffix in BAG_SUFFIXES for p in path.iterdir())
    return path.suffix in BAG_SUFFIXES or (not path.exists() and not path.suffix)


def _check_topic(topics: dict, topic: str, msgtype: str, what: str) -> None:
    if topic not in topics or topics[topic].msgtype != msgtype:
        present = sorted(t for t, info in topics.items() if info.msgtype == msgtype) or ["none"]
        raise ReplayInputError(f"{what} topic {topic!r} is not a {msgtype} topic of the bag "
                               f"({msgtype} topics: {', '.join(present)})")


def _choose_image_topic(topics: dict, wanted: str | None) -> str:
    image_topics = sorted(t for t, info in topics.items() if info.msgtype in (IMAGE, COMPRESSED_IMAGE))
    if not image_topics:
        everything = ", ".join(f"{t} ({info.msgtype})" for t, info in sorted(topics.items())) or "none"
        raise ReplayInputError(f"the bag has no {IMAGE} or {COMPRESSED_IMAGE} topic; its topics: {everything}")
    listing = ", ".join(image_topics)
    if wanted is not None:
        if wanted not in image_topics:
            raise ReplayInputError(f"image topic {wanted!r} is not in the bag (image topics: {listing})")
        return wanted
    if len(image_topics) != 1:
        raise ReplayInputError(f"choose the image topic with --image-topic (image topics: {listing})")
    return image_topics[0]


def _repair_hint(path: Path) -> str:
    if path.suffix == ".mcap" or any(path.glob("*.mcap")):
        return " (a recording that was cut off has no index: `mcap recover` or `ros2 bag reindex` repairs it)"
    return ""
