"""Scaffolding for the ROS tests: the node in a process of its own, a tester node in this process,
and bounded waits (never a fixed sleep). DDS stays on this machine (ROS_AUTOMATIC_DISCOVERY_RANGE =
LOCALHOST), each test module gets a ROS domain of its own, and each node a namespace of its own, so
runs side by side on one machine cannot hear each other.
"""

from __future__ import annotations

import itertools
import os
import random
import signal
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import Header
from builtin_interfaces.msg import Time

from samwise_ros.ros.conversions import array_to_image
from samwise_ros.tools.processes import ChildProcess, ProcessStopError, ros_arguments

REPO = Path(__file__).resolve().parents[2]
HELPERS_DIR = Path(__file__).resolve().parent
FASTDDS_PROFILE = REPO / "config" / "fastdds_shm.xml"
PARAMETERS_FILE = REPO / "config" / "samwise.yaml"
SAMWISE_NODE = Path(sys.executable).parent / "samwise_node"
QUERY = "the red ball rolling to the left"
START_TIMEOUT_S = 90.0  # importing torch and building a model on a loaded 2-core machine
RELIABLE = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=50, reliability=ReliabilityPolicy.RELIABLE)

# never let a test's DDS discovery leave the machine, whatever the caller's environment says
os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
# Fast DDS reads its profiles file once per process, when the first participant starts: set it before
# any test starts one (large BEST_EFFORT images from this process need the shared-memory segment)
os.environ["FASTDDS_DEFAULT_PROFILES_FILE"] = str(FASTDDS_PROFILE)


def _worker_domains() -> list[int]:
    """The ROS domains this test process may use: all of 1..100, or under pytest-xdist its share of them, so
    that tests running side by side in two workers never share a domain (nor /diagnostics)."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    index = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw"))
    share = 100 // workers
    return list(range(index * share + 1, (index + 1) * share + 1))


_domains = _worker_domains()
_domain_ids = itertools.count(random.Random(os.getpid() ^ time.time_ns()).randrange(len(_domains)))


def unique_domain_id() -> int:
    """A ROS domain that no other module of this test session uses (while the session uses fewer than 100)."""
    return _domains[next(_domain_ids) % len(_domains)]


def unique_namespace(name: str) -> str:
    return f"/{name}_{os.getpid()}_{random.randrange(1 << 30)}"


def ros_environment(domain_id: int) -> dict[str, str]:
    return dict(os.environ, ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST", ROS_DOMAIN_ID=str(domain_id),
                FASTDDS_DEFAULT_PROFILES_FILE=str(FASTDDS_PROFILE), PYTHONUNBUFFERED="1",
                RCUTILS_COLORIZED_OUTPUT="0", AMENT_PREFIX_PATH=os.environ.get("AMENT_PREFIX_PATH", sys.prefix))


def node_arguments(namespace: str, **parameters) -> list[str]:
    """--ros-args for the node: a namespace, the shipped parameters file, then overrides."""
    return ros_arguments(namespace, PARAMETERS_FILE, **parameters)


# ---- the node's process ----------------------------------------------------------------------------

class NodeProcess(ChildProcess):
    """A node's process (samwise_ros.tools.processes.ChildProcess) and the checks of a clean stop."""

    def __init__(self, command: list[str], env: dict[str, str]):
        super().__init__(Path(command[0]).name, command, env)

    def shm_segments(self) -> set[str]:
        """The Fast DDS shared-memory segments this process created: those it has mapped, less the
        port files (shared by all participants of the domain) and its peers' segments (mapped here
        too, as readers map the writers' segments)."""
        return {path for path in mapped_shm_files(self.pid) - mapped_shm_files("self")
                if "fastdds_port" not in path}

    def stop(self, timeout: float = 30.0, stop_signal: signal.Signals = signal.SIGINT) -> int:
        """SIGINT, as Ctrl-C would (or `stop_signal`): the node must shut down cleanly within `timeout`."""
        try:
            return super().stop(timeout, stop_signal)
        except ProcessStopError as error:
            raise AssertionError(f"{error}; output:\n{self.tail()}") from None

    def stop_cleanly(self, stop_signal: signal.Signals = signal.SIGINT) -> None:
        """stop(), and check that it was clean: exit status 0, no error or traceback in the whole output,
        none of the process's shared-memory segments left in /dev/shm."""
        segments = self.shm_segments()
        assert segments, "the process should use Fast DDS shared memory (config/fastdds_shm.xml)"
        assert self.stop(stop_signal=stop_signal) == 0, self.tail()
        assert not [line for line in self.lines if "[ERROR]" in line or "Traceback" in line], self.tail()
        assert not [s for s in segments if os.path.exists(s)], "shared-memory segments left in /dev/shm"


def uses_shipped_profile() -> bool:
    """Whether this process's participants run with config/fastdds_shm.xml (a 32 MiB segment)."""
    return any(os.path.getsize(path) >= 32 << 20 for path in mapped_shm_files("self") if os.path.exists(path))


def mapped_shm_files(pid) -> set[str]:
    maps = Path(f"/proc/{pid}/maps").read_text()
    return {line.split()[-1] for line in maps.splitlines() if "/dev/shm/fastdds_" in line}


def start_node(arguments: list[str], domain_id: int, command: list[str] | None = None) -> NodeProcess:
    return NodeProcess((command or [str(SAMWISE_NODE)]) + arguments, ros_environment(domain_id))


# ---- the tester node in this process ---------------------------------------------------------------

class RosPeer:
    """An rclpy node spun in a background thread; every subscription records (arrival time, message)."""

    def __init__(self, domain_id: int, namespace: str):
        self.context = rclpy.Context()
        rclpy.init(context=self.context, domain_id=domain_id)
        self.node = rclpy.create_node("tester", namespace=namespace, context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.received: dict[str, list[tuple[float, object]]] = defaultdict(list)
        self._changed = threading.Condition()
        self._spinner = threading.Thread(target=self._spin, daemon=True)
        self._spinner.start()

    def _spin(self) -> None:
        try:
            self.executor.spin()
        except Exception:  # the context was shut down under it
            pass

    def subscribe(self, msg_type, topic: str, qos=RELIABLE) -> None:
        def record(msg, topic=topic):
            with self._changed:
                self.received[topic].append((time.time(), msg))
                self._changed.notify_all()

        self.node.create_subscription(msg_type, topic, record, qos)

    def publisher(self, msg_type, topic: str, qos=RELIABLE):
        return self.node.create_publisher(msg_type, topic, qos)

    def messages(self, topic: str) -> list:
        with self._changed:
            return [msg for _, msg in self.received[topic]]

    def clear(self) -> None:
        with self._changed:
            self.received.clear()

    def wait_for(self, predicate, timeout: float, what: str):
        """Wait until predicate() is truthy (re-checked on every message, or every 50 ms for things such
        as discovery that no message announces); returns its value."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while not (value := predicate()):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"timed out after {timeout} s waiting for {what}")
                self._changed.wait(min(remaining, 0.05))
            return value

    def wait_for_messages(self, topic: str, count: int, timeout: float = 30.0, where=lambda msg: True) -> list:
        return self.wait_for(lambda: len(m := [x for x in self.messages(topic) if where(x)]) >= count and m,
                             timeout, f"{count} messages on {topic}")

    def call(self, client, request, timeout: float = 10.0):
        assert client.wait_for_service(timeout_sec=timeout), f"service {client.srv_name} not available"
        future = client.call_async(request)
        self.wait_for(future.done, timeout, f"a response from {client.srv_name}")
        return future.result()

    def close(self) -> None:
        self.executor.shutdown()
        self.node.destroy_node()
        self.context.try_shutdown()
        self._spinner.join(5)


# ---- test data -----------------------------------------------------------------------------------

def stamp(seconds: float) -> Time:
    return Time(sec=int(seconds), nanosec=int(round((seconds - int(seconds)) * 1e9)))


def header(seconds: float, frame_id: str = "camera_color_optical_frame") -> Header:
    return Header(stamp=stamp(seconds), frame_id=frame_id)


def frame_pixels(index: int, height: int = 96, width: int = 128) -> np.ndarray:
    """A deterministic RGB test frame."""
    return np.random.default_rng(index).integers(0, 256, (height, width, 3), dtype=np.uint8)


def bgr_image(index: int, seconds: float, height: int = 96, width: int = 128) -> Image:
    return array_to_image(frame_pixels(index, height, width)[:, :, ::-1], "bgr8", header(seconds))


def camera_info(seconds: float, height: int, width: int, fx: float = 100.0, fy: float = 110.0) -> CameraInfo:
    cx, cy = (width - 1) / 2, (height - 1) / 2
    return CameraInfo(header=header(seconds), height=height, width=width,
                      k=[fx, 0.0, cx, 0.0, fy, cy, 0.0, 0.0, 1.0])


def stamp_seconds(msg_header: Header) -> float:
    return msg_header.stamp.sec + msg_header.stamp.nanosec * 1e-9
