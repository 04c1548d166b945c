"""What the package's executables (samwise_node, samwise_player) share: `--help`, one line for a start-up
error (a bad `--params-file` included), rclpy started without its signal handlers (spinning.py handles
SIGINT and SIGTERM), and an orderly teardown whatever stops them."""

from __future__ import annotations

import sys
from typing import Callable

import rclpy
import yaml
from rclpy.executors import SingleThreadedExecutor
from rclpy.impl.implementation_singleton import rclpy_implementation
from rclpy.node import Node
from rclpy.signals import SignalHandlerOptions

from .spinning import spin_until_signal, stop_requested, stop_signals_interrupt

HELP_FLAGS = ("-h", "--help")


def run_executable(name: str, argv: list[str] | None, usage: str, make_node: Callable[[], Node],
                   startup_errors: tuple[type[Exception], ...]) -> int:
    """Start `make_node()` and spin it until SIGINT or SIGTERM; 0 when stopped so (also while starting),
    1 with one fatal line when it cannot start (`startup_errors`, a bad parameters file)."""
    argv = sys.argv if argv is None else argv
    if wants_help(argv):
        print(usage)
        return 0
    problem = parameters_file_problem(argv)
    if problem is None:
        try:
            rclpy.init(args=argv, signal_handler_options=SignalHandlerOptions.NO)
        except rclpy_implementation.RCLError as error:  # what rcl refuses of the arguments
            problem = first_line(str(error))
    if problem is not None:
        return cannot_start(name, problem)
    try:
        with stop_signals_interrupt():  # starting (loading a model) ends on SIGINT or SIGTERM
            node = make_node()
    except KeyboardInterrupt:
        rclpy.try_shutdown()
        return 0
    except startup_errors as error:
        rclpy.try_shutdown()
        # a signal landing in native code may surface as its failure: asked to stop, it did not fail
        return 0 if stop_requested() else cannot_start(name, first_line(str(error)))
    # one executor thread serves every callback; the node's own work (inference) runs on its threads
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    try:
        spin_until_signal(executor)
    finally:
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


def wants_help(argv: list[str]) -> bool:
    """-h or --help among the executable's own arguments (those before --ros-args)."""
    own = argv[1:argv.index("--ros-args")] if "--ros-args" in argv else argv[1:]
    return any(flag in own for flag in HELP_FLAGS)


def parameters_file_problem(argv: list[str]) -> str | None:
    """Why a `--params-file` of the ROS arguments cannot be read (missing, unreadable, not YAML), or None:
    said in one line before rcl, which would log its own parse errors and raise."""
    for index, argument in enumerate(argv[:-1]):
        if argument != "--params-file":
            continue
        path = argv[index + 1]
        try:
            with open(path, encoding="utf-8") as stream:
                yaml.safe_load(stream)
        except OSError as error:
            return f"--params-file {path}: {error.strerror or error}"
        except yaml.YAMLError as error:
            return f"--params-file {path}: not a YAML file ({first_line(str(error))})"
    return None


def cannot_start(name: str, problem: str) -> int:
    rclpy.logging.get_logger(name).fatal(f"cannot start: {problem}")
    return 1


def first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else "unknown error"
