"""Depth for a colour image, without ROS: camera intrinsics, the depth frame nearest in stamp within a
tolerance (slop), and the 3-D centroid of a mask over it. The node and the replay share it.

This replaces message_filters' approximate-time synchroniser (not installable here) with the one thing
needed: colour images are never held back waiting for depth. Recent depth frames and intrinsics are
kept in small bounded buffers; when a result is ready, the depth frame nearest to the image's stamp is
looked up. The node adds from executor threads while its worker looks up, hence the lock.
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass
from typing import Any

import numpy as np

from .geometry import centroid_3d


@dataclass(frozen=True)
class Intrinsics:
    """Pinhole intrinsics of the (rectified) image: focal lengths and principal point, in pixels."""

    fx: float
    fy: float
    cx: float
    cy: float
    width: int  # the image size they were calibrated for (0 x 0: not given)
    height: int

    def calibrated_for(self, width: int, height: int) -> bool:
        """Whether they apply to a width x height image as they are (a camera_info without its size is
        taken to be the image's: nothing tells otherwise)."""
        return (self.width, self.height) in ((width, height), (0, 0))

    def scaled_to(self, width: int, height: int) -> Intrinsics:
        """These intrinsics for a width x height image: themselves at their calibrated size, scaled for a
        binned or resized image of the same aspect ratio; an IntrinsicsMismatch for another one."""
        if self.calibrated_for(width, height):
            return self
        # the same aspect ratio within a pixel (binning rounds an odd size down)
        if not (self.width and self.height and abs(width * self.height - height * self.width) <= self.height):
            raise IntrinsicsMismatch(f"camera_info: the intrinsics are for {self.width}x{self.height} images, the "
                                     f"image is {width}x{height} (another aspect ratio): no 3-D centroid")
        sx, sy = width / self.width, height / self.height
        return Intrinsics(self.fx * sx, self.fy * sy, self.cx * sx, self.cy * sy, width, height)

    def scaling_note(self, width: int, height: int) -> str | None:
        """What to tell the user (once) when scaled_to(width, height) scales them, else None."""
        if self.calibrated_for(width, height):
            return None
        return (f"camera_info: intrinsics for {self.width}x{self.height} images scaled to the {width}x{height} "
                "image (same aspect ratio: a binned or resized camera)")


class IntrinsicsMismatch(ValueError):
    """camera_info describes images of another shape than the colour image."""


def camera_info_to_intrinsics(msg) -> Intrinsics:
    """From a sensor_msgs/CameraInfo (an rclpy message or a rosbags-deserialised one)."""
    fx, fy, cx, cy = msg.k[0], msg.k[4], msg.k[2], msg.k[5]
    if not (np.isfinite([fx, fy, cx, cy]).all() and fx != 0.0 and fy != 0.0):
        raise ValueError(f"camera_info: unusable intrinsics (fx={fx}, fy={fy}, cx={cx}, cy={cy}): "
                         "zero or non-finite focal length")
    return Intrinsics(float(fx), float(fy), float(cx), float(cy), int(msg.width), int(msg.height))


@dataclass(frozen=True)
class DepthFrame:
    stamp: float  # seconds
    values: np.ndarray  # HxW raw depth values
    metres_per_unit: float
    intrinsics: Intrinsics

    def centroid_3d(self, mask: np.ndarray) -> tuple[float, float, float] | None:
        """The mask's 3-D centroid (metres, camera optical frame), with the intrinsics scaled to the image
        (Intrinsics.scaled_to); None when no masked pixel has a valid depth. A ValueError when the depth
        image is not the colour image's size, an IntrinsicsMismatch when the intrinsics cannot be scaled."""
        height, width = mask.shape
        if self.values.shape != mask.shape:
            raise ValueError(f"depth: the depth image is {self.values.shape[1]}x{self.values.shape[0]}, the colour "
                             f"image {width}x{height}: depth must be aligned to the colour image")
        k = self.intrinsics.scaled_to(width, height)
        return centroid_3d(mask, self.values, k.fx, k.fy, k.cx, k.cy, self.metres_per_unit)


class DepthPairing:
    def __init__(self, capacity: int = 30):
        self._depths: deque[tuple[float, np.ndarray, float]] = deque(maxlen=capacity)
        self._intrinsics: deque[tuple[float, Intrinsics]] = deque(maxlen=capacity)
        self._lock = threading.Lock()

    def add_depth(self, stamp: float, values: np.ndarray, metres_per_unit: float) -> None:
        with self._lock:
            self._depths.append((stamp, values, metres_per_unit))

    def add_intrinsics(self, stamp: float, intrinsics: Intrinsics) -> None:
        with self._lock:
            self._intrinsics.append((stamp, intrinsics))

    def clear(self) -> None:
        with self._lock:
            self._depths.clear()
            self._intrinsics.clear()

    def newest_depth_stamp(self) -> float | None:
        with self._lock:
            return max((entry[0] for entry in self._depths), default=None)

    def has_intrinsics(self) -> bool:
        with self._lock:
            return bool(self._intrinsics)

    def match(self, stamp: float, slop: float) -> DepthFrame | None:
        """The depth frame nearest to `stamp` if it is within `slop` seconds, with the intrinsics
        nearest to the depth's own stamp (intrinsics rarely change, so any age will do); None when
        there is no such depth frame or no intrinsics yet."""
        with self._lock:
            depth = _nearest(self._depths, stamp)
            if depth is None or abs(depth[0] - stamp) > slop:
                return None
            intrinsics = _nearest(self._intrinsics, depth[0])
        if intrinsics is None:
            return None
        return DepthFrame(depth[0], depth[1], depth[2], intrinsics[1])


def _nearest(entries: deque, stamp: float) -> tuple[Any, ...] | None:
    return min(entries, key=lambda entry: abs(entry[0] - stamp), default=None)
