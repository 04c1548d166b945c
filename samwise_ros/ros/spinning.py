"""Spinning an executor until Ctrl-C or an external shutdown, for the package's executables."""

from __future__ import annotations

import signal

from rclpy.executors import Executor, ExternalShutdownException

POLL_S = 0.1  # how long a stop signal may wait for the executor to look at it


def spin_until_shutdown(executor: Executor) -> None:
    """Spin; return on Ctrl-C or an external shutdown.

    rclpy's signal handler shuts the context down while a callback may be running: a timer publishing
    a frame then fails with an RCL error (the publisher's context is invalid). That failure is the
    shutdown itself, so it ends the spin quietly; a failure while the context is still up is raised."""
    try:
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except Exception:
        if executor.context.ok():
            raise


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
