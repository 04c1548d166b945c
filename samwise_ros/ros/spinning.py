"""Stop signals (SIGINT, SIGTERM) for the package's executables, which start rclpy with its signal
handlers off: before spinning (loading a model) a signal interrupts the work at once; while spinning it
only stops the spin loop, except inside a long callback (configure loading and compiling a model),
which it interrupts too.

A signal is recorded before anything else happens (`stop_requested`): one that lands inside C++ or Rust
code (torch, safetensors) may come out of it as another exception than KeyboardInterrupt, and the
executable must still know it was asked to stop, not that the work failed."""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from typing import Iterator

from rclpy.executors import Executor, ExternalShutdownException

POLL_S = 0.1  # how long a stop signal may wait for the executor to look at it
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
_stop = threading.Event()  # a stop signal arrived
_interrupting = []  # blocks running now in which a stop signal raises KeyboardInterrupt


def stop_requested() -> bool:
    """Whether SIGINT or SIGTERM has arrived since the process began handling them here."""
    return _stop.is_set()


def _on_stop_signal(number, frame) -> None:
    _stop.set()
    if _interrupting:
        raise KeyboardInterrupt


@contextmanager
def _handling_stop_signals() -> Iterator[None]:
    previous = {number: signal.signal(number, _on_stop_signal) for number in STOP_SIGNALS}
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


@contextmanager
def interruptible() -> Iterator[None]:
    """Within the block, a stop signal raises KeyboardInterrupt where it lands. A no-op off the main thread,
    where Python never runs signal handlers."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _interrupting.append(True)
    try:
        yield
    finally:
        _interrupting.pop()


@contextmanager
def stop_signals_interrupt() -> Iterator[None]:
    """For work before spinning (creating the node, loading its model): SIGINT and SIGTERM interrupt it."""
    with _handling_stop_signals(), interruptible():
        yield


def spin_until_signal(executor: Executor) -> None:
    """Spin until SIGINT or SIGTERM (or an external shutdown), then return with every entity intact.

    The signal only sets a flag that the spin loop reads between callbacks (but inside `interruptible`
    callbacks). With rclpy's handlers, the KeyboardInterrupt lands wherever the executor is, and destroying
    the node after it crashed samwise_player with SIGSEGV in about one run in four (in destroy_node),
    leaving its Fast DDS segments in /dev/shm."""
    with _handling_stop_signals():
        try:
            while not stop_requested() and executor.context.ok():
                executor.spin_once(timeout_sec=POLL_S)
        except (ExternalShutdownException, KeyboardInterrupt):  # the latter out of an interruptible callback
            pass
