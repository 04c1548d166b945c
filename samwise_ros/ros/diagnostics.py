"""What the node reports on /diagnostics about once a second: rates, latencies, dropped and rejected
frames, and a level: WARN while frames are rejected or fail, ERROR once none has been processed for
STALLED_S."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import numpy as np
from diagnostic_msgs.msg import DiagnosticStatus, KeyValue

STALLED_S = 5.0  # problems with no frame processed for this long are an error, not a warning


@dataclass(frozen=True)
class Report:
    values: dict[str, str]
    level: bytes
    problem: str  # why the level is not OK ("" when it is)


class ProcessingStats:
    """Counters shared by the callbacks (frames in) and the worker (results out); `report` returns
    the figures of the period since the previous report and the totals."""

    def __init__(self, clock=time.monotonic):
        self._clock = clock
        self._lock = threading.Lock()
        self._period_start = self._last_processed = clock()
        self.received = self.rejected = self.processed = self.results = self.errors = 0  # totals
        self.ignored = 0  # frames that arrived while the node was inactive
        self._period_results = self._period_rejected = self._period_errors = 0
        self._last_rejection = ""
        self._stamp_latencies: list[float] = []  # seconds, image stamp -> publish
        self._receive_latencies: list[float] = []  # seconds, image received -> publish

    def frame_received(self) -> None:
        with self._lock:
            self.received += 1

    def frame_ignored(self) -> None:
        with self._lock:
            self.ignored += 1

    def frame_rejected(self, reason: str) -> None:
        with self._lock:
            self.rejected += 1
            self._period_rejected += 1
            self._last_rejection = reason

    def frame_processed(self) -> None:
        with self._lock:
            self.processed += 1
            self._last_processed = self._clock()

    def error(self) -> None:
        with self._lock:
            self.errors += 1
            self._period_errors += 1

    def result_published(self, stamp_latency: float | None, receive_latency: float) -> None:
        """stamp_latency None: the image had no stamp to measure from."""
        with self._lock:
            self.results += 1
            self._period_results += 1
            if stamp_latency is not None:
                self._stamp_latencies.append(stamp_latency)
            self._receive_latencies.append(receive_latency)

    def report(self, dropped: int) -> Report:
        """The figures as diagnostic key/values, with the level they call for; starts a new period."""
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
                "frames rejected": str(self.rejected),
                "frames ignored (inactive)": str(self.ignored),
                "frames processed": str(self.processed),
                "results published": str(self.results),
                "dropped frames": str(dropped),
                "errors": str(self.errors),
            }
            level, problem = self._health(now)
            self._period_start, self._period_results = now, 0
            self._period_rejected = self._period_errors = 0
            self._stamp_latencies, self._receive_latencies = [], []
        return Report(values, level, problem)

    def _health(self, now: float) -> tuple[bytes, str]:
        problems = []
        if self._period_rejected:
            problems.append(f"{self._period_rejected} frames rejected ({self._last_rejection})")
        if self._period_errors:
            problems.append(f"{self._period_errors} frames failed")
        if not problems:
            return DiagnosticStatus.OK, ""
        idle = now - self._last_processed
        if idle >= STALLED_S:
            return DiagnosticStatus.ERROR, f"no frame processed for {idle:.0f} s: {'; '.join(problems)}"
        return DiagnosticStatus.WARN, "; ".join(problems)


def _milliseconds(seconds: list[float], statistic) -> str:
    return f"{1000.0 * float(statistic(seconds)):.1f}" if seconds else "n/a"


def make_status(name: str, hardware_id: str, values: dict[str, str], level: bytes = DiagnosticStatus.OK,
                message: str = "") -> DiagnosticStatus:
    return DiagnosticStatus(level=level, name=name, message=message, hardware_id=hardware_id,
                            values=[KeyValue(key=key, value=value) for key, value in values.items()])
