"""Depth for a colour image: the depth frame nearest in stamp, within a tolerance (slop).

This replaces message_filters' approximate-time synchroniser (not installable here) with the one thing
the node needs: colour images are never held back waiting for depth. Recent depth frames and camera
intrinsics are kept in small bounded buffers; when a result is published, the depth frame nearest to
the image's stamp is looked up. Callbacks add from executor threads while the worker looks up, hence
the lock.
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass
from typing import Any

import numpy as np

from .conversions import Intrinsics


@dataclass(frozen=True)
class DepthFrame:
    stamp: float  # seconds
    values: np.ndarray  # HxW raw depth values
    metres_per_unit: float
    intrinsics: Intrinsics


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
