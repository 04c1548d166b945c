"""samwise_player: a stand-in camera for the demo, publishing a video as sensor_msgs/Image (bgr8).

The video is the bundled synthetic scene (samwise_ros.data.synthetic.demo_scene, the default) or a
video file read with OpenCV. Frames are stamped with the current time when published, so a loop is
a continuing stream for its subscribers, not a jump back in time.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.node import Node
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image
from std_msgs.msg import Header

from ..data.synthetic import demo_scene
from .conversions import array_to_image
from .executable import run_executable

END_OF_VIDEO = "end of the video"  # logged after the last frame when not looping

PARAMETERS = {  # name: (default, description)
    "video": ("", "video file to play (empty: the bundled synthetic scene)"),
    "rate": (10.0, "frames per second"),
    "frame_id": ("camera_color_optical_frame", "frame_id of the published images"),
    "loop": (True, "start again at the end of the video (false: stop publishing)"),
    "scene_frames": (48, "length of the synthetic scene in frames"),
    "wait_for_subscribers": (0, "hold the first frame until this many subscribers listen (0: start at once)"),
}


def usage() -> str:
    """samwise_player --help."""
    lines = ["usage: samwise_player [-h] [--ros-args -p NAME:=VALUE ... -r image:=TOPIC]", "",
             "Publishes a video (the bundled synthetic scene by default) as a camera: sensor_msgs/Image bgr8 on",
             "`image`, stamped with the time of publishing.", "", "parameters:"]
    lines += [f"  {name} (default {default!r}): {description}" for name, (default, description) in PARAMETERS.items()]
    return "\n".join(lines)


def synthetic_frames(count: int) -> list[np.ndarray]:
    """The demo scene's frames, as BGR (rendered once: the player then costs next to nothing)."""
    return [np.ascontiguousarray(rgb[:, :, ::-1]) for rgb, _ in demo_scene().frames(count)]


def video_frames(path: str) -> Iterator[np.ndarray]:
    """The BGR frames of a video file, once."""
    capture = cv2.VideoCapture(path)
    try:
        while True:
            ok, frame = capture.read()
            if not ok:
                return
            yield frame
    finally:
        capture.release()


class Player(Node):
    def __init__(self):
        super().__init__("samwise_player")
        try:
            self._start()
        except BaseException:
            self.destroy_node()
            raise

    def _start(self) -> None:
        for name, (default, description) in PARAMETERS.items():
            self.declare_parameter(name, default, ParameterDescriptor(description=description, read_only=True))
        self.video = self.get_parameter("video").value
        self.frame_id = self.get_parameter("frame_id").value
        self.loop = self.get_parameter("loop").value
        self.wait_for_subscribers = self.get_parameter("wait_for_subscribers").value
        rate = self.get_parameter("rate").value
        if rate <= 0:
            raise ValueError(f"parameter rate must be positive, got {rate}")
        if self.video and not Path(self.video).is_file():
            raise ValueError(f"parameter video: {self.video}: file not found")
        self.scene = [] if self.video else synthetic_frames(self.get_parameter("scene_frames").value)
        self.frames = self._frames()
        # RELIABLE publishers serve both BEST_EFFORT and RELIABLE subscribers
        qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.RELIABLE)
        self.publisher = self.create_publisher(Image, "image", qos)
        self.timer = self.create_timer(1.0 / rate, self._publish_next)
        self.get_logger().info(f"playing {self.video or 'the synthetic demo scene'} at {rate} Hz on "
                               f"{self.publisher.topic_name}")

    def _frames(self) -> Iterator[np.ndarray]:
        while True:
            count = 0
            for count, frame in enumerate(video_frames(self.video) if self.video else self.scene, 1):
                yield frame
            if not self.loop or count == 0:  # a file OpenCV cannot read gives no frames: stop
                return

    def _publish_next(self) -> None:
        if self.wait_for_subscribers:  # until the pipeline is connected: no frame is lost to discovery
            if self.publisher.get_subscription_count() < self.wait_for_subscribers:
                return
            self.wait_for_subscribers = 0
        frame = next(self.frames, None)
        if frame is None:
            self.get_logger().info(END_OF_VIDEO)
            self.timer.cancel()
            return
        header = Header(stamp=self.get_clock().now().to_msg(), frame_id=self.frame_id)
        self.publisher.publish(array_to_image(frame, "bgr8", header))


def main(argv: list[str] | None = None) -> int:
    return run_executable("samwise_player", argv, usage(), Player, (ValueError,))


if __name__ == "__main__":
    sys.exit(main())
