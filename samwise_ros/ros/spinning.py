"""Spinning an executor until SIGINT or SIGTERM, for the package's executables (started with rclpy's
signal handlers off)."""

from __future__ import annotations

import signal
from contextlib import contextmanager
from typing import Iterator

from rclpy.executors import Executor, ExternalShutdownException

POLL_S = 0.1  # how long a stop signal may wait for the executor to look at it


@contextmanager
def sigterm_interrupts() -> Iterator[None]:
    """SIGTERM raises KeyboardInterrupt inside the block, as SIGINT does: for work before spinning
    (loading a model), which either signal must end."""
    previous = signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def spin_until_signal(executor: Executor) -> None:
    """Spin until SIGINT or SIGTERM (or an external shutdown), then return with every entity intact.

    For processes started with rclpy's signal handlers off (`SignalHandlerOptions.NO`): the signal only
    sets a flag that the spin loop reads between callbacks. With rclpy's handlers, the KeyboardInterrupt
    lands wherever the executor is, and destroying the node after it crashed samwise_player with SIGSEGV
    in about one run in four (in destroy_node), leaving its Fast DDS segments in /dev/shm."""
    stop_requested = []

    def request_stop(number, frame) -> None:
        stop_requested.append(number)

    previous = {number: signal.signal(number, request_stop) for number in (signal.SIGINT, signal.SIGTERM)}
    try:
        while not stop_requested and executor.context.ok():
            executor.spin_once(timeout_sec=POLL_S)
    except ExternalShutdownException:
        pass
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
