"""The hand-over between ROS callbacks and the one worker thread that runs the tracker.

Callbacks put frames and commands (query changes, resets); the worker takes them. Frames wait in a
bounded queue: when the model is slower than the camera, the oldest waiting frame is dropped (and
counted) so the worker always gets the newest ones and latency cannot grow. Commands are never
dropped and go before frames, so a reset or a new query applies to the next frame processed.
"""

from __future__ import annotations

import threading
from collections import deque
from typing import Any, Callable


class WorkQueue:
    def __init__(self, max_frames: int = 1):
        if max_frames < 1:
            raise ValueError(f"max_frames must be at least 1, got {max_frames}")
        self._frames: deque[Any] = deque()
        self._max_frames = max_frames
        self._commands: deque[Callable[[], None]] = deque()
        self._changed = threading.Condition()
        self._closed = False
        self.dropped = 0  # frames replaced by newer ones before the worker took them

    def put_frame(self, frame: Any) -> bool:
        """Queue a frame; returns True when an older frame was dropped to make room."""
        with self._changed:
            dropped = len(self._frames) == self._max_frames
            if dropped:
                self._frames.popleft()
                self.dropped += 1
            self._frames.append(frame)
            self._changed.notify()
            return dropped

    def put_command(self, command: Callable[[], None]) -> None:
        with self._changed:
            self._commands.append(command)
            self._changed.notify()

    def get(self) -> tuple[str, Any] | None:
        """Block until there is work: ("command", callable) first, else ("frame", frame); None once
        closed."""
        with self._changed:
            self._changed.wait_for(lambda: self._closed or self._commands or self._frames)
            if self._closed:
                return None
            if self._commands:
                return "command", self._commands.popleft()
            return "frame", self._frames.popleft()

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Wake the worker for good (pending work is discarded)."""
        with self._changed:
            self._closed = True
            self._changed.notify_all()
