"""What a replay reads: a rosbag2 (mcap or sqlite3, via rosbags), a video file (OpenCV) or a folder of
frames, as a stream of `Frame`s and, from a bag's query topic, `QueryChange`s in recording order."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np
from rosbags.highlevel import AnyReader
from rosbags.typesys import Stores, get_typestore

from ..bags import COMPRESSED_IMAGE, IMAGE, STRING, UnsupportedImage, image_to_rgb, stamp_to_ns

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


@dataclass
class QueryChange:
    text: str


class BagSource:
    """Image messages of one topic, and std_msgs/String messages of an optional query topic."""

    def __init__(self, path: Path, image_topic: str | None, query_topic: str | None):
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
        image_topics = sorted(t for t, info in topics.items() if info.msgtype in (IMAGE, COMPRESSED_IMAGE))
        self.image_topic = _choose_image_topic(image_topics, image_topic)
        if query_topic is not None and topics.get(query_topic, None) is None:
            strings = sorted(t for t, info in topics.items() if info.msgtype == STRING) or ["none"]
            raise ReplayInputError(f"query topic {query_topic!r} is not in the bag "
                                   f"(std_msgs/String topics: {', '.join(strings)})")
        if query_topic is not None and topics[query_topic].msgtype != STRING:
            raise ReplayInputError(f"query topic {query_topic!r} has type {topics[query_topic].msgtype}, "
                                   f"not {STRING}")
        self.query_topic = query_topic
        self.total = topics[self.image_topic].msgcount
        self.fps = None
        self.description = f"bag {path}, topic {self.image_topic} ({topics[self.image_topic].msgtype})"

    def __iter__(self) -> Iterator[Frame | QueryChange]:
        wanted = {self.image_topic, self.query_topic}
        connections = [c for c in self._reader.connections if c.topic in wanted]
        messages = self._reader.messages(connections=connections)
        number = 0
        try:
            while True:
                try:
                    connection, log_time, raw = next(messages)
                    message = self._reader.deserialize(raw, connection.msgtype)
                except StopIteration:
                    return
                except Exception as err:
                    raise ReplayInputError(f"the bag cannot be read past image {number} of {self.total}: "
                                           f"{err}{_repair_hint(self._path)}") from err
                if connection.topic == self.query_topic:
                    yield QueryChange(message.data)
                    continue
                try:
                    rgb = image_to_rgb(message)
                except UnsupportedImage as err:
                    raise ReplayInputError(f"image {number} on {self.image_topic}: {err}") from err
                yield Frame(number, f"{number:06d}", rgb, stamp_to_ns(message.header.stamp), log_time,
                            message.header.frame_id)
                number += 1
        finally:
            self._reader.close()


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
        self.total = len(self._files)
        self.fps = fps
        self._frame_id = frame_id
        self.description = f"frames in {path}"

    def __iter__(self) -> Iterator[Frame]:
        for number, file in enumerate(self._files):
            bgr = cv2.imread(str(file), cv2.IMREAD_COLOR)
            if bgr is None:
                raise ReplayInputError(f"cannot read image {file}")
            stamp = round(number * 1e9 / self.fps)
            yield Frame(number, file.stem, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), stamp, stamp, self._frame_id)


def open_source(path: Path, image_topic: str | None = None, query_topic: str | None = None,
                frame_id: str = "camera", fps: float = 10.0):
    """A bag (a directory with metadata.yaml or bag files, or an .mcap/.db3 file), a folder of frames,
    or a video file."""
    if _is_bag(path):
        return BagSource(path, image_topic, query_topic)
    if image_topic or query_topic:
        raise ReplayInputError(f"{path} is not a rosbag2: --image-topic and --query-topic need a bag")
    if path.is_dir():
        return FolderSource(path, frame_id, fps)
    return VideoSource(path, frame_id)


def _is_bag(path: Path) -> bool:
    if path.is_dir():
        return (path / "metadata.yaml").exists() or any(p.suffix in BAG_SUFFIXES for p in path.iterdir())
    return path.suffix in BAG_SUFFIXES or (not path.exists() and not path.suffix)


def _choose_image_topic(image_topics: list[str], wanted: str | None) -> str:
    listing = ", ".join(image_topics) or "none"
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
