"""Child processes whose output is read line by line, and their ROS arguments: the nodes `samwise-demo`
starts (and the tests' nodes). A stop is a signal, as Ctrl-C would send, then a bounded wait: a process
killed instead leaves its Fast DDS segments in /dev/shm, so a kill is said, never hidden."""

from __future__ import annotations

import re
import signal
import subprocess
import threading
import time
from pathlib import Path


def ros_arguments(namespace: str, params_file: Path | None = None, remappings: dict[str, str] | None = None,
                  **parameters) -> list[str]:
    """--ros-args: the namespace, remappings, a parameters file, then single parameters (which override
    the file)."""
    arguments = ["--ros-args", "-r", f"__ns:={namespace}"]
    for source, target in (remappings or {}).items():
        arguments += ["-r", f"{source}:={target}"]
    if params_file is not None:
        arguments += ["--params-file", str(params_file)]
    for name, value in parameters.items():
        text = str(value).lower() if isinstance(value, bool) else str(value) or "''"
        arguments += ["-p", f"{name}:={text}"]
    return arguments


class ProcessStopError(Exception):
    """A child ignored its stop signal and was killed; the text says which and its last output."""


class ChildProcess:
    """A process started with its stdout and stderr as one stream of lines, all kept."""

    def __init__(self, name: str, command: list[str], environment: dict[str, str]):
        self.name = name
        self.command = command
        self.popen = subprocess.Popen(command, env=environment, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                      stdin=subprocess.DEVNULL, text=True, bufsize=1)
        self.lines: list[str] = []
        self._eof = False
        self._changed = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.popen.stdout:
            with self._changed:
                self.lines.append(line.rstrip("\n"))
                self._changed.notify_all()
        with self._changed:
            self._eof = True
            self._changed.notify_all()

    @property
    def pid(self) -> int:
        return self.popen.pid

    def running(self) -> bool:
        return self.popen.poll() is None

    def mark(self) -> int:
        """Where the output is now: wait_for_line(..., after=mark) looks only at what comes next."""
        with self._changed:
            return len(self.lines)

    def said(self, text: str) -> bool:
        with self._changed:
            return any(text in line for line in self.lines)

    def wait_for_line(self, pattern: str, timeout: float = 20.0, after: int = 0) -> str:
        """The first line from `after` on that matches `pattern`; AssertionError with the output's tail when
        none comes within `timeout` or the process ends first."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                match = next((line for line in self.lines[after:] if regex.search(line)), None)
                if match is not None:
                    return match
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._eof:
                    raise AssertionError(f"{self.name}: no line matching {pattern!r} within {timeout} s; "
                                         f"output:\n{self.tail()}")
                self._changed.wait(min(remaining, 0.2))

    def tail(self, count: int = 40) -> str:
        with self._changed:
            return "\n".join(self.lines[-count:])

    def last_line(self) -> str:
        with self._changed:
            return next((line for line in reversed(self.lines) if line.strip()), "(no output)")

    def stop(self, timeout: float, stop_signal: signal.Signals = signal.SIGINT) -> int:
        """Send `stop_signal` and wait up to `timeout` for the exit status; a process still running then is
        killed and ProcessStopError raised."""
        if self.running():
            self.popen.send_signal(stop_signal)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
                raise ProcessStopError(f"{self.name} did not stop within {timeout:g} s of {stop_signal.name}; killed "
                                       f"(last output: {self.last_line()})") from None
        return self.popen.returncode
