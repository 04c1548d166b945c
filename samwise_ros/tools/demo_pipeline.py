"""The demo pipeline without `ros2 launch`: what launch/demo.launch.py starts (the player as a camera
and samwise_node, two processes talking over DDS), plus a recorder node in this process that collects
the node's outputs and matches each to the scene frame it was computed from.

DDS stays on this machine (ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST unless set) in a domain of its own;
the package's Fast DDS shared-memory profile carries the images.
"""

from __future__ import annotations

import hashlib
import os
import random
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field

import numpy as np
import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image

from samwise_ros.msg import CmeSwitch, Segmentation

from ..params import default_parameters_file
from ..ros.player import END_OF_VIDEO
from .processes import ChildProcess, ProcessStopError, ros_arguments

NAMESPACE = "/samwise_demo"
CAMERA = {"image": "camera/image"}  # the topic between player and node, as in demo.launch.py
RECORDING = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=200, reliability=ReliabilityPolicy.RELIABLE)
START_TIMEOUT_S = 120.0  # the node loads torch, sam2 and the model before it subscribes
SETTLE_S = 3.0  # after the last frame, how long without a new result ends the recording
STOP_TIMEOUT_S = 15.0  # how long a child may take to shut down after SIGINT


class DemoError(Exception):
    """The pipeline could not run; the text says why (with the node's last output line)."""


@dataclass
class Recording:
    """The node's outputs by the index of the scene frame they belong to."""

    frames_published: int = 0
    results: dict[int, Segmentation] = field(default_factory=dict)
    masks: dict[int, np.ndarray] = field(default_factory=dict)  # HxW bool
    overlays: dict[int, np.ndarray] = field(default_factory=dict)  # HxWx3 BGR
    switches: list[CmeSwitch] = field(default_factory=list)


def frame_key(data) -> bytes:
    return hashlib.blake2b(bytes(data), digest_size=16).digest()


def image_array(msg: Image, channels: int) -> np.ndarray:
    rows = np.frombuffer(bytes(msg.data), np.uint8).reshape(msg.height, msg.step)
    return rows[:, : msg.width * channels].reshape(msg.height, msg.width, channels)


class Recorder:
    """A node spun in a thread: camera frames are identified by their pixels (the scene's BGR frames,
    known in advance), the node's outputs by their header stamp, which is the camera frame's."""

    def __init__(self, domain_id: int, scene_bgr: list[np.ndarray]):
        self._index_of_pixels = {frame_key(np.ascontiguousarray(frame)): i for i, frame in enumerate(scene_bgr)}
        self._index_of_stamp: dict[tuple[int, int], int] = {}
        self._early: deque = deque()  # outputs whose camera frame has not been seen yet
        self.recording = Recording()
        self.last_output = time.monotonic()
        self._lock = threading.Lock()
        self.context = rclpy.Context()
        rclpy.init(context=self.context, domain_id=domain_id)
        self.node = rclpy.create_node("samwise_demo_recorder", namespace=NAMESPACE, context=self.context)
        self.node.create_subscription(Image, "camera/image", self._on_camera, RECORDING)
        for msg_type, topic in ((Segmentation, "result"), (Image, "mask"), (Image, "overlay"), (CmeSwitch, "cme_switch")):
            self.node.create_subscription(msg_type, topic, lambda msg, topic=topic: self._on_output(topic, msg),
                                          RECORDING)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self._spinner = threading.Thread(target=self.executor.spin, daemon=True)
        self._spinner.start()

    def camera_subscribers(self) -> int:
        return self.node.count_subscribers(f"{NAMESPACE}/camera/image") - 1  # all but the recorder

    def _on_camera(self, msg: Image) -> None:
        index = self._index_of_pixels.get(frame_key(msg.data))
        if index is None:
            return
        with self._lock:
            self._index_of_stamp[(msg.header.stamp.sec, msg.header.stamp.nanosec)] = index
            self.recording.frames_published += 1
            early, self._early = self._early, deque()
        for topic, output in early:
            self._on_output(topic, output)

    def _on_output(self, topic: str, msg) -> None:
        with self._lock:
            self.last_output = time.monotonic()
            index = self._index_of_stamp.get((msg.header.stamp.sec, msg.header.stamp.nanosec))
            if index is None:
                self._early.append((topic, msg))
                return
            recording = self.recording
            if topic == "result":
                recording.results[index] = msg
            elif topic == "mask":
                recording.masks[index] = image_array(msg, 1)[:, :, 0] > 0
            elif topic == "overlay":
                recording.overlays[index] = image_array(msg, 3).copy()
            else:
                recording.switches.append(msg)

    def close(self) -> None:
        self.executor.shutdown()
        self.node.destroy_node()
        self.context.try_shutdown()
        self._spinner.join(5)


def pipeline_environment() -> dict[str, str]:
    """This process's environment for the pipeline (the recorder's DDS participant reads it too)."""
    environment = dict(os.environ, PYTHONUNBUFFERED="1")
    environment.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    environment.setdefault("ROS_DOMAIN_ID", str(random.randint(1, 100)))
    profile = default_parameters_file().parent / "fastdds_shm.xml"
    environment.setdefault("FASTDDS_DEFAULT_PROFILES_FILE", str(profile))
    return environment


def run_pipeline(scene_bgr: list[np.ndarray], node_parameters: dict, rate: float) -> Recording:
    """Start samwise_node, wait until it listens, play the scene once at `rate`, and record."""
    environment = pipeline_environment()
    os.environ.update({name: environment[name] for name in
                       ("ROS_AUTOMATIC_DISCOVERY_RANGE", "ROS_DOMAIN_ID", "FASTDDS_DEFAULT_PROFILES_FILE")})
    node_arguments = ros_arguments(NAMESPACE, default_parameters_file(), CAMERA, **node_parameters)
    node = ChildProcess("samwise_node", [sys.executable, "-m", "samwise_ros.ros.node", *node_arguments], environment)
    recorder = Recorder(int(environment["ROS_DOMAIN_ID"]), scene_bgr)
    player = None
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while recorder.camera_subscribers() < 1:
            if not node.running():
                raise DemoError(f"samwise_node stopped: {node.last_line()}")
            if time.monotonic() > deadline:
                raise DemoError(f"samwise_node did not subscribe within {START_TIMEOUT_S:.0f} s: {node.last_line()}")
            time.sleep(0.1)
        player_arguments = ros_arguments(NAMESPACE, None, CAMERA, rate=float(rate), loop=False,
                                         scene_frames=len(scene_bgr), wait_for_subscribers=2)  # node, recorder
        player = ChildProcess("samwise_player", [sys.executable, "-m", "samwise_ros.ros.player", *player_arguments],
                         environment)
        deadline = time.monotonic() + len(scene_bgr) / rate + START_TIMEOUT_S
        while not player.said(END_OF_VIDEO) and recorder.recording.frames_published < len(scene_bgr):
            if not player.running() or time.monotonic() > deadline:
                raise DemoError(f"samwise_player stopped before the end of the scene: {player.last_line()}")
            time.sleep(0.1)
        while node.running() and time.monotonic() - recorder.last_output < SETTLE_S:
            time.sleep(0.1)
        if not node.running():
            raise DemoError(f"samwise_node stopped: {node.last_line()}")
        return recorder.recording
    finally:
        for process in (player, node):
            if process is not None:
                stop(process)
        recorder.close()


def stop(process: ChildProcess) -> None:
    """SIGINT, then a kill (said) if it does not stop."""
    try:
        process.stop(STOP_TIMEOUT_S)
    except ProcessStopError as error:
        print(error, file=sys.stderr)
