"""What the node reports on /diagnostics about once a second: rates, latencies, dropped frames."""

from __future__ import annotations

import threading
import time

import numpy as np
from diagnostic_msgs.msg import DiagnosticStatus, KeyValue


class ProcessingStats:
    """Counters shared by the callbacks (frames in) and the worker (results out); `report` returns
    the figures of the period since the previous report and the totals."""

    def __init__(self, clock=time.monotonic):
        self._clock = clock
        self._lock = threading.Lock()
        self._period_start = clock()
        self.received = self.processed = self.results = self.errors = 0  # totals
        self._period_results = 0
        self._stamp_latencies: list[float] = []  # seconds, image stamp -> publish
        self._receive_latencies: list[float] = []  # seconds, image received -> publish

    def frame_received(self) -> None:
        with self._lock:
            self.received += 1

    def frame_processed(self) -> None:
        with self._lock:
            self.processed += 1

    def error(self) -> None:
        with self._lock:
            self.errors += 1

    def result_published(self, stamp_latency: float, receive_latency: float) -> None:
        with self._lock:
            self.results += 1
            self._period_results += 1
            self._stamp_latencies.append(stamp_latency)
            self._receive_latencies.append(receive_latency)

    def report(self, dropped: int) -> dict[str, str]:
        """The figures as diagnostic key/values; starts a new period."""
        with self._lock:
            now = self._clock()
            elapsed = max(now - self._period_start, 1e-9)
            stamp, receive = self._stamp_latencies, self._receive_latencies
            values = {
                "rate (results/s)": f"{self._period_results / elapsed:.2f}",
                "latency stamp to publish p50 (ms)": _milliseconds(stamp, np.median),
                "latency stamp to publish max (ms)": _milliseconds(stamp, np.max),
                "latency receive to publish p50 (ms)": _milliseconds(receive, np.median),
                "frames received": str(self.received),
                "frames processed": str(self.processed),
                "results published": str(self.results),
                "dropped frames": str(dropped),
                "errors": str(self.errors),
            }
            self._period_start, self._period_results = now, 0
            self._stamp_latencies, self._receive_latencies = [], []
        return values


def _milliseconds(seconds: list[float], statistic) -> str:
    return f"{1000.0 * float(statistic(seconds)):.1f}" if seconds else "n/a"


def make_status(name: str, hardware_id: str, values: dict[str, str], level: bytes = DiagnosticStatus.OK,
                message: str = "") -> DiagnosticStatus:
    return DiagnosticStatus(level=level, name=name, message=message, hardware_id=hardware_id,
                            values=[KeyValue(key=key, value=value) for key, value in values.items()])
