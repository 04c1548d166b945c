"""What the node reports on /diagnostics about once a second: rates, latencies, dropped and rejected
frames, and a level: while the node is active, ERROR once no frame has been processed for STALLED_S
(none arrives, or one is stuck in inference), else WARN while frames are rejected or fail."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import numpy as np
from diagnostic_msgs.msg import DiagnosticStatus, KeyValue

STALLED_S = 5.0  # an active node that has processed no frame for this long reports an error


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
        self._period_start = self._last_processed = self._last_received = clock()
        self._inference_started: float | None = None  # while a frame is in inference
        self.received = self.rejected = self.processed = self.results = self.errors = 0  # totals
        self._period_results = self._period_rejected = self._period_errors = 0
        self._last_rejection = ""
        self._stamp_latencies: list[float] = []  # seconds, image stamp -> publish
        self._receive_latencies: list[float] = []  # seconds, image received -> publish

    def activated(self) -> None:
        """Processing starts (again): the time without frames counts from now."""
        with self._lock:
            self._last_processed = self._last_received = self._clock()

    def frame_received(self) -> None:
        with self._lock:
            self.received += 1
            self._last_received = self._clock()

    def frame_rejected(self, reason: str) -> None:
        with self._lock:
            self.rejected += 1
            self._period_rejected += 1
            self._last_rejection = reason

    def inference_started(self) -> None:
        """The model takes a frame (counted as processed from here)."""
        with self._lock:
            self.processed += 1
            self._inference_started = self._clock()

    def inference_done(self) -> None:
        """The frame taken by inference_started is done (its results published, or it failed)."""
        with self._lock:
            self._last_processed = self._clock()
            self._inference_started = None

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

    def report(self, dropped: int, active: bool) -> Report:
        """The figures as diagnostic key/values, with the level they call for (an inactive node is idle on
        purpose: no error for its silence); starts a new period."""
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
                "frames processed": str(self.processed),
                "results published": str(self.results),
                "dropped frames": str(dropped),
                "errors": str(self.errors),
            }
            level, problem = self._health(now, active)
            self._period_start, self._period_results = now, 0
            self._period_rejected = self._period_errors = 0
            self._stamp_latencies, self._receive_latencies = [], []
        return Report(values, level, problem)

    def _health(self, now: float, active: bool) -> tuple[bytes, str]:
        problems = []
        if self._period_rejected:
            problems.append(f"{self._period_rejected} frames rejected ({self._last_rejection})")
        if self._period_errors:
            problems.append(f"{self._period_errors} frames failed")
        stalled = self._stall(now) if active else ""
        if stalled:
            return DiagnosticStatus.ERROR, "; ".join([stalled, *problems])
        if problems:
            return DiagnosticStatus.WARN, "; ".join(problems)
        return DiagnosticStatus.OK, ""

    def _stall(self, now: float) -> str:
        """Why no frame has been processed for STALLED_S, or ""."""
        if self._inference_started is not None and now - self._inference_started >= STALLED_S:
            return f"one frame has been in inference for {now - self._inference_started:.0f} s"
        idle = now - self._last_processed
        if self._inference_started is not None or idle < STALLED_S:
            return ""
        if now - self._last_received >= STALLED_S:
            return f"no frame processed for {idle:.0f} s: no image received for {now - self._last_received:.0f} s"
        return f"no frame processed for {idle:.0f} s"


def _milliseconds(seconds: list[float], statistic) -> str:
    return f"{1000.0 * float(statistic(seconds)):.1f}" if seconds else "n/a"


def make_status(name: str, hardware_id: str, values: dict[str, str], level: bytes = DiagnosticStatus.OK,
                message: str = "") -> DiagnosticStatus:
    return DiagnosticStatus(level=level, name=name, message=message, hardware_id=hardware_id,
                            values=[KeyValue(key=key, value=value) for key, value in values.items()])
