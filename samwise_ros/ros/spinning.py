"""Spinning an executor until Ctrl-C or an external shutdown, for the package's executables."""

from __future__ import annotations

from rclpy.executors import Executor, ExternalShutdownException


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
