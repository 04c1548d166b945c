"""samwise_node: text-driven video segmentation as a ROS 2 node (the contract: docs/ros-interface.md).

A managed (lifecycle) node: configure loads the model (with `compile`, compiles its steady step for every
query length) and opens the outputs, the query topic and the services; activate subscribes the sensor
topics and processes frames; deactivate unsubscribes them (the model stays loaded); cleanup frees the
model; shutdown ends. The tracked query survives cleanup and configure. Structural parameters change
only while unconfigured and apply at the next configure. With `autostart` (default true) the node walks
to active by itself at start-up.

Threads. The executor runs the callbacks, which only convert and hand over: the newest frame goes
into a bounded WorkQueue (older waiting frames are dropped and counted), a query or a reset becomes a
command for the worker, parameter changes update `settings`. One worker thread owns the stream session
(samwise_ros/session.py, the contract the replay shares) and its tracker: it applies commands, runs the
model and publishes every output. Inference therefore never blocks a callback, and the text topic, the
reset service and parameter services answer during it. `main` spins a single-threaded executor (the
callbacks are short); the callback groups keep the node correct in a multi-threaded executor too
(images one at a time, control apart), e.g. when it is composed with others.

Tests and benchmarks run this same node with another tracker (a deliberately slow one, a null one)
through `main(tracker_factory=...)`.
"""

from __future__ import annotations

import math
import sys
import threading
import time
from dataclasses import dataclass
from functools import partial
from types import SimpleNamespace
from typing import Any, Callable

import numpy as np
import torch
from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import SetParametersResult
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.clock import Clock, ClockType
from rclpy.exceptions import ParameterException
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_msgs.msg import Header, String
from std_srvs.srv import Trigger

from .. import messages
from ..depth import DepthPairing, camera_info_to_intrinsics
from ..images import ImageError, check_image_size, compressed_to_rgb, depth_to_array, image_to_rgb
from ..messages import build, stamp_to_ns
from ..overlay import draw_overlay
from ..params import PARAMETERS
from ..result_messages import OUTPUT_TOPICS
from ..runtime import model_from_parameters, tracker_from_parameters
from ..session import Notice, Publication, QueryRejected, StreamFrame, StreamSession, check_query
from ..tracker import Tracker, release_compiled_steps
from .conversions import array_to_image, message_class, ros_message
from .diagnostics import ProcessingStats, make_status
from .executable import run_executable
from .parameters import declare_parameters, validate_changes
from .spinning import interruptible, stop_requested
from .work_queue import WorkQueue

NODE_NAME = "samwise"
LOG_THROTTLE_S = 5.0  # the same kind of problem is logged at most this often
DIAGNOSTICS_PERIOD_S = 1.0
STOP_TIMEOUT_S = 10.0  # how long shutdown waits for a frame in inference
RELIABILITY = {
    "best_effort": ReliabilityPolicy.BEST_EFFORT,
    "reliable": ReliabilityPolicy.RELIABLE,
    "system_default": ReliabilityPolicy.SYSTEM_DEFAULT,
}


SUBSCRIBED = {  # topic: what the node reads from it
    "image": "sensor_msgs/Image (rgb8, bgr8, rgba8, bgra8, mono8), with image_transport:=raw",
    "image/compressed": "sensor_msgs/CompressedImage, with image_transport:=compressed",
    "depth": "sensor_msgs/Image (16UC1, 32FC1) aligned to the colour image, with use_depth:=true",
    "camera_info": "sensor_msgs/CameraInfo of the depth image, with use_depth:=true",
    "text_query": "std_msgs/String: track exactly this expression (the same text again changes nothing)",
}
PUBLISHED = {  # topic: what the node writes on it
    "mask": "sensor_msgs/Image mono8 for every processed frame, at the image's size",
    "result": "samwise_ros/Segmentation for every processed frame",
    "centroid": "geometry_msgs/PointStamped, with a 3-D centroid",
    "markers": "visualization_msgs/MarkerArray, with a 3-D centroid (rviz)",
    "cme_switch": "samwise_ros/CmeSwitch when the CME redirects the memory",
    "overlay": "sensor_msgs/Image bgr8, with publish_overlay:=true",
    "/diagnostics": "diagnostic_msgs/DiagnosticArray, about once a second",
}
SERVICES = {"~/reset": "std_srvs/Trigger: clear the stream state, keep the query"}


def usage() -> str:
    """samwise_node --help: how to start it, its parameters and its topics."""
    lines = ["usage: samwise_node [-h] [--ros-args -p NAME:=VALUE ... --params-file FILE -r TOPIC:=NEW ...]", "",
             "Text-driven video segmentation (SAMWISE) as a managed ROS 2 node: an image stream and a referring",
             "expression in, the object's mask, box and centroid out.", "", "parameters (config/samwise.yaml):"]
    for spec in PARAMETERS:
        default = repr(spec.default) if isinstance(spec.default, str) else str(spec.default).lower()
        applies = "at once" if spec.dynamic else "at configure"
        lines.append(f"  {spec.name} (default {default}, {applies}): {spec.description}")
    for title, table in (("subscribes", SUBSCRIBED), ("publishes", PUBLISHED), ("services", SERVICES)):
        lines += ["", f"{title}:", *(f"  {name}: {meaning}" for name, meaning in table.items())]
    return "\n".join(lines)


class StartupError(Exception):
    """The node cannot start (bad parameter, checkpoint, device); the text is the one line shown."""


@dataclass
class LoadedTracker:
    """What the node runs, and the words diagnostics use to describe it."""

    tracker: Tracker
    device: str
    precision: str
    model: str


TrackerFactory = Callable[[SimpleNamespace], LoadedTracker]


def compiled_step_state(tracker: Tracker) -> str:
    """The diagnostics' word on the compiled step (the `compile` parameter)."""
    if not tracker.compile:
        return "off"
    ready = (f"compiled at configure ({tracker.compile_seconds:.0f} s) for queries of up to "
             f"{tracker.token_lengths[-1]} tokens")
    if tracker.compiled_step_active:
        return f"{ready}: active"
    return f"{ready}: not active yet (a stream's first frames run eagerly)"


def load_tracker(settings: SimpleNamespace) -> LoadedTracker:
    """The default factory: the model of the `checkpoint` parameter (empty: the bundled demo weights)
    in a StreamTracker, built as the offline tools build it."""
    parameters = vars(settings)
    model = model_from_parameters(parameters)
    tracker = tracker_from_parameters(model, parameters)
    return LoadedTracker(tracker, str(model.device), model.precision,
                         str(settings.checkpoint) or "bundled demo weights")


def sensor_qos(reliability: str, depth: int) -> QoSProfile:
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=depth, reliability=RELIABILITY[reliability])


class SamwiseNode(LifecycleNode):
    def __init__(self, tracker_factory: TrackerFactory = load_tracker, **node_options):
        """Declares the parameters (they exist in every state) and stays unconfigured."""
        super().__init__(NODE_NAME, **node_options)
        self._tracker_factory = tracker_factory
        self._last_logged: dict[str, float] = {}
        self._log_lock = threading.Lock()
        self.configure_error = ""  # why the last configure failed
        self._accepting_frames = False  # active: the image callbacks hand frames to the worker
        self._opened: list[tuple[Any, Callable[[Any], Any]]] = []  # (entity, its destroyer): configure's
        self._sensors: list[Any] = []  # the sensor subscriptions, open while active
        self.settings = declare_parameters(self)
        self.tracked_query = self.settings.query  # what the next configure tracks: kept across cleanup
        self.add_on_set_parameters_callback(self._check_parameter_changes)
        self.add_post_set_parameters_callback(self._on_parameters_set)

    # ---- lifecycle transitions -------------------------------------------------------------------

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            with interruptible():  # loading and compiling take minutes: a stop signal must not wait
                self._configure()
        except Exception as error:  # any reason: the node stays unconfigured and says why
            if stop_requested():  # the signal landed in native code, which failed with it
                self._release()
                raise KeyboardInterrupt from error
            self.configure_error = str(error).splitlines()[0] if str(error) else type(error).__name__
            if not self.settings.autostart:  # at start-up, the one line is main's "cannot start"
                self.get_logger().error(f"cannot configure: {self.configure_error}")
            self._release()
            return TransitionCallbackReturn.FAILURE
        except BaseException:  # stopped while configuring
            self._release()
            raise
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._subscribe_sensors()
        self._stats.activated()
        self._accepting_frames = True
        self.get_logger().info("active: processing frames")
        return super().on_activate(state)  # enables the publishers

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._accepting_frames = False
        self._unsubscribe_sensors()
        self.get_logger().info("inactive: the sensor topics are unsubscribed, the model stays loaded")
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._release()
        self.get_logger().info("cleaned up: the model is freed")
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._accepting_frames = False
        self._release()
        return TransitionCallbackReturn.SUCCESS

    def _configure(self) -> None:
        """Build the tracker, then open the outputs and the control topics and start the worker."""
        try:
            initial_query = check_query(self.tracked_query, self.settings.max_query_chars)
        except QueryRejected as error:
            raise StartupError(f"parameter query: {error}") from None
        if self.settings.compile:
            self.get_logger().info("compiling the steady step for every query length (minutes on a CPU)")
        self._loaded = self._tracker_factory(self.settings)
        self._depth = DepthPairing()  # filled by the depth callbacks, read by the worker
        self._session = StreamSession(self._loaded.tracker, self.settings, self._depth)  # the worker's
        self._queue = WorkQueue(self.settings.queue_depth)
        self._stats = ProcessingStats()
        self._create_publishers()
        self._create_control()
        if initial_query:
            self._queue.put_command(partial(self._apply_query, initial_query))
        self._worker = threading.Thread(target=self._work, name="samwise-worker", daemon=True)
        self._worker.start()
        self.get_logger().info(
            f"ready: model {self._loaded.model} on {self._loaded.device} ({self._loaded.precision}), "
            f"mode {self.settings.mode}, {self.settings.image_transport} images, "
            f"{self.settings.image_reliability} QoS, depth {'on' if self.settings.use_depth else 'off'}, "
            f"compiled step {compiled_step_state(self._loaded.tracker)}")

    def _release(self) -> None:
        """Stop the worker, close what configure opened and drop the model (returning GPU memory)."""
        self.stop()
        self._unsubscribe_sensors()
        for entity, destroy in reversed(self._opened):
            destroy(entity)
        self._opened.clear()
        compiled = hasattr(self, "_loaded") and self._loaded.tracker.compile
        for name in ("_worker", "_queue", "_session", "_loaded", "_depth", "_stats"):
            self.__dict__.pop(name, None)
        if compiled:
            release_compiled_steps()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def _open(self, entity, destroy: Callable[[Any], Any]):
        """`entity`, remembered for cleanup with the node method that destroys it."""
        self._opened.append((entity, destroy))
        return entity

    def destroy_node(self) -> None:
        self.stop()  # a worker left running would outlive the entities it publishes on
        super().destroy_node()

    def stop(self) -> None:
        """Stop the worker (waiting for a frame in inference to finish, up to STOP_TIMEOUT_S; its results
        are not published)."""
        if not hasattr(self, "_worker"):  # not configured, or configure did not get that far
            return
        self._queue.close()
        self._worker.join(STOP_TIMEOUT_S)

    def _create_publishers(self) -> None:
        # the outputs go through lifecycle publishers: an inactive node publishes none (its diagnostics
        # still say how it is)
        images = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=5, reliability=ReliabilityPolicy.RELIABLE)
        def publisher(msg_type, topic, qos):
            return self._open(self.create_lifecycle_publisher(msg_type, topic, qos), self.destroy_lifecycle_publisher)

        self._output_publishers = {
            topic: publisher(message_class(message.MSGTYPE), topic, images if message is messages.Image else 10)
            for topic, message in OUTPUT_TOPICS.items()}
        self._overlay_pub = publisher(Image, "overlay", images)
        self._diagnostics_pub = self._open(self.create_publisher(DiagnosticArray, "/diagnostics", 10),
                                           self.destroy_publisher)

    def _create_control(self) -> None:
        """The query topic, the reset service and the diagnostics timer, in a callback group of their own so
        that they are never queued behind sensor callbacks; open from configure to cleanup."""
        control = ReentrantCallbackGroup()
        self._open(self.create_subscription(String, "text_query", self._on_text_query, 10, callback_group=control),
                   self.destroy_subscription)
        self._open(self.create_service(Trigger, "~/reset", self._on_reset, callback_group=control),
                   self.destroy_service)
        # on the steady clock: with use_sim_time and no /clock, ROS time stands still, diagnostics must not
        self._open(self.create_timer(DIAGNOSTICS_PERIOD_S, self._publish_diagnostics, callback_group=control,
                                     clock=Clock(clock_type=ClockType.STEADY_TIME)), self.destroy_timer)

    def _subscribe_sensors(self) -> None:
        """The image (and depth) subscriptions, open while the node is active: DDS delivers no frame to an
        inactive node. Images one at a time, depth beside them."""
        settings = self.settings
        sensors = sensor_qos(settings.image_reliability, settings.queue_depth)
        images, depth = MutuallyExclusiveCallbackGroup(), MutuallyExclusiveCallbackGroup()
        subscriptions = [(CompressedImage, "image/compressed", self._on_compressed_image, images)
                         if settings.image_transport == "compressed" else (Image, "image", self._on_image, images)]
        if settings.use_depth:
            subscriptions += [(Image, "depth", self._on_depth, depth),
                              (CameraInfo, "camera_info", self._on_camera_info, depth)]
        self._sensors = [self.create_subscription(msg_type, topic, callback, sensors, callback_group=group)
                         for msg_type, topic, callback, group in subscriptions]

    def _unsubscribe_sensors(self) -> None:
        for subscription in self._sensors:
            self.destroy_subscription(subscription)
        self._sensors = []

    # ---- callbacks (executor threads): convert and hand over, nothing slow --------------------------

    def _on_image(self, msg: Image) -> None:
        self._accept_frame(msg, "image", self._raw_to_rgb)

    def _on_compressed_image(self, msg: CompressedImage) -> None:
        self._accept_frame(msg, "image/compressed", self._compressed_to_rgb)

    def _raw_to_rgb(self, msg: Image) -> np.ndarray:
        # the size the header claims, before anything reads the pixels
        check_image_size(msg.width, msg.height, self.settings.max_image_pixels, "image")
        return image_to_rgb(msg)

    def _compressed_to_rgb(self, msg: CompressedImage) -> np.ndarray:
        rgb = compressed_to_rgb(msg)  # OpenCV tells the size only by decoding
        check_image_size(rgb.shape[1], rgb.shape[0], self.settings.max_image_pixels, "image/compressed")
        return rgb

    def _accept_frame(self, msg: Image | CompressedImage, topic: str,
                      to_rgb: Callable[[Any], np.ndarray]) -> None:
        if not self._accepting_frames:  # delivered while deactivating
            return
        received = time.monotonic()
        self._stats.frame_received()
        try:
            rgb = to_rgb(msg)
        except ImageError as error:
            self._stats.frame_rejected(str(error))
            self._report(f"{topic}: {error.kind}", str(error))
            return
        self._queue.put_frame(StreamFrame(rgb, stamp_to_ns(msg.header.stamp), msg.header.frame_id, received))

    def _on_depth(self, msg: Image) -> None:
        try:
            values, metres_per_unit = depth_to_array(msg, self.settings.depth_scale)
        except ImageError as error:
            self._report(f"depth: {error.kind}", str(error))
            return
        self._depth.add_depth(stamp_to_ns(msg.header.stamp) / 1e9, values, metres_per_unit)

    def _on_camera_info(self, msg: CameraInfo) -> None:
        try:
            intrinsics = camera_info_to_intrinsics(msg)
        except ValueError as error:
            self._report("camera_info: unusable intrinsics", str(error))
            return
        self._depth.add_intrinsics(stamp_to_ns(msg.header.stamp) / 1e9, intrinsics)

    def _on_text_query(self, msg: String) -> None:
        self._queue.put_command(partial(self._apply_query, msg.data))

    def _on_reset(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        self._queue.put_command(self._apply_reset)
        response.success = True
        response.message = "stream state cleared before the next frame; the query is kept"
        return response

    def _check_parameter_changes(self, parameters) -> SetParametersResult:
        """Values within their constraints; structural ones only while unconfigured (they apply at the next
        configure)."""
        state = self._state_machine.current_state[1]
        return validate_changes(parameters, configurable=state == "unconfigured")

    def _on_parameters_set(self, parameters) -> None:
        # already validated; the worker reads the dynamic ones for every frame, configure the others
        for parameter in parameters:
            setattr(self.settings, parameter.name, parameter.value)
            if parameter.name == "query":
                self.tracked_query = parameter.value

    def _publish_diagnostics(self) -> None:
        report = self._stats.report(dropped=self._queue.dropped, active=self._accepting_frames)
        values = dict(report.values, device=self._loaded.device, precision=self._loaded.precision,
                      model=self._loaded.model, mode=self.settings.mode, query=self._session.query)
        values["compiled step"] = compiled_step_state(self._loaded.tracker)
        query = self._session.query
        message = report.problem or (f"tracking {query!r}" if query else "waiting for a query")
        if not self._accepting_frames:
            message = f"inactive (lifecycle): the sensor topics are unsubscribed; {message}"
        status = make_status(f"{self.get_fully_qualified_name()}: segmentation", self._loaded.device, values,
                             report.level, message)
        self._diagnostics_pub.publish(DiagnosticArray(header=Header(stamp=self.get_clock().now().to_msg()),
                                                      status=[status]))

    # ---- the worker thread: owns the tracker, runs the model, publishes ---------------------------

    def _work(self) -> None:
        while (work := self._queue.get()) is not None:
            kind, item = work
            try:
                item() if kind == "command" else self._process(item)
            except Exception as error:  # one bad frame or command must not end the worker
                self._stats.error()
                self._report(f"{kind} failed", f"{kind} failed: {type(error).__name__}: {error}")

    def _apply_query(self, text: str) -> None:
        try:
            self._say(self._session.set_query(text))
        except QueryRejected as rejection:
            self._say(rejection.notice)
            return
        self.tracked_query = self._session.query

    def _apply_reset(self) -> None:
        self._session.reset()
        self.get_logger().info("stream state reset")

    def _process(self, frame: StreamFrame) -> None:
        self._stats.inference_started()
        try:
            self._infer_and_publish(frame)
        finally:
            self._stats.inference_done()

    def _infer_and_publish(self, frame: StreamFrame) -> None:
        try:
            publications = self._session.push(frame)
        except torch.OutOfMemoryError:
            self._stats.error()
            self._report("out of memory", f"out of memory on the {self._loaded.device} for the frame stamped "
                         f"{frame.stamp:.3f}: frame skipped")
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            return
        if self._queue.closed:  # shutting down: the publishers may be gone, the results are abandoned
            return
        for publication in publications:
            self._publish(publication)

    def _publish(self, publication: Publication) -> None:
        for notice in publication.notices:
            self._say(notice)
        for topic, message in publication.messages().items():
            self._output_publishers[topic].publish(build(message, ros_message))
        if self.settings.publish_overlay:
            self._publish_overlay(publication)
        stamp = publication.frame.stamp
        # an unset (zero) stamp says nothing about latency
        stamp_latency = self.get_clock().now().nanoseconds * 1e-9 - stamp if stamp else None
        self._stats.result_published(stamp_latency, publication.latency_s)

    def _publish_overlay(self, publication: Publication) -> None:
        result = publication.track
        picture = draw_overlay(np.ascontiguousarray(publication.frame.rgb), result.mask, result.query,
                               result.centroid, result.bbox, result.cme_switched, result.object_score)
        self._overlay_pub.publish(array_to_image(picture, "bgr8", build(publication.header, ros_message)))

    # ---- logging ---------------------------------------------------------------------------------

    def _say(self, notice: Notice | None) -> None:
        """An info notice as it comes (the session says each once); a problem throttled by its kind."""
        if notice is None:
            return
        if notice.level == "info":
            self.get_logger().info(notice.text)
        else:
            self._report(notice.kind, notice.text, notice.level)

    def _report(self, kind: str, text: str, level: str = "error") -> None:
        """Log a problem at most once per LOG_THROTTLE_S for its kind ("topic: problem", never the text,
        whose details vary: a broken camera must not log at camera rate); other kinds are all shown."""
        now = time.monotonic()
        with self._log_lock:
            if now - self._last_logged.get(kind, -math.inf) < LOG_THROTTLE_S:
                return
            self._last_logged[kind] = now
        # one call site per severity: rclpy refuses a call site whose severity changes
        if level == "warning":
            self.get_logger().warning(text)
        else:
            self.get_logger().error(text)


def create_node(tracker_factory: TrackerFactory | None = None, **node_options) -> SamwiseNode:
    """A node (rclpy must be initialised), walked to active when its `autostart` parameter says so, or
    StartupError with one line saying why not. `node_options` go to rclpy's Node (context,
    parameter_overrides, ...)."""
    try:
        node = SamwiseNode(tracker_factory or load_tracker, **node_options)
    except (ParameterException, ValueError) as error:
        raise StartupError(str(error).splitlines()[0]) from None
    try:
        if node.settings.autostart:
            autostart(node)
    except BaseException:
        node.destroy_node()
        raise
    return node


def autostart(node: SamwiseNode) -> None:
    if node.trigger_configure() != TransitionCallbackReturn.SUCCESS:
        raise StartupError(node.configure_error or "configure failed")
    if node.trigger_activate() != TransitionCallbackReturn.SUCCESS:
        raise StartupError("activate failed")


def main(argv: list[str] | None = None, tracker_factory: TrackerFactory | None = None) -> int:
    return run_executable(NODE_NAME, argv, usage(), partial(create_node, tracker_factory), (StartupError,))


if __name__ == "__main__":
    sys.exit(main())
