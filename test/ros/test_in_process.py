"""The real node class with stand-in trackers, run in this process (its own rclpy context and
executor, as main() runs it; real DDS to a peer, which also reads the node's log on /rosout): what
needs a tracker that misbehaves on purpose (out of memory, a long inference) or a mask known in
advance (the bright red pixels), a fresh node for each test (the log throttling), and the compressed
transport."""

import gc
import itertools
import threading
import weakref
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import rclpy
import torch
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from geometry_msgs.msg import PointStamped
from rcl_interfaces.msg import Log
from rcl_interfaces.srv import SetParameters
from rclpy.executors import SingleThreadedExecutor
from rclpy.lifecycle import TransitionCallbackReturn
from rclpy.parameter import Parameter
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_msgs.msg import String
from std_srvs.srv import Trigger

from helpers.ros_harness import (QUERY, RosPeer, bgr_image, frame_pixels, header, stamp_seconds, unique_domain_id,
                         unique_namespace)
from samwise_ros.geometry import mask_stats
from samwise_ros.msg import Segmentation
from samwise_ros.ros.conversions import array_to_image
from samwise_ros.ros.diagnostics import STALLED_S
from samwise_ros.ros.node import LoadedTracker, compiled_step_state, create_node, load_tracker
from samwise_ros.tracker import TrackResult


LOG_MARKERS = itertools.count()


class ThresholdTracker:
    """Stands in for StreamTracker: the mask is the frame's bright red pixels; `failing` frame indices
    raise CUDA out-of-memory instead."""

    def __init__(self, failing=()):
        self.mask_threshold, self.pending_frames, self.query = 0.5, 0, ""
        self.compile = self.compiled_step_active = False
        self.failing, self.pushed = set(failing), 0

    def set_query(self, text):
        self.query = text.strip()

    def reset(self):
        pass

    def push(self, frame, stamp=None):
        self.pushed += 1
        if self.pushed - 1 in self.failing:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        mask = frame[:, :, 0] > 127
        stats = mask_stats(mask)
        return [TrackResult(self.pushed - 1, stamp, self.query, mask, 1.0, stats.area > 0, stats.bbox, stats.area,
                            stats.centroid, None, False)]


class BlockingTracker(ThresholdTracker):
    """push() blocks until released: a model in the middle of a long inference."""

    def __init__(self):
        super().__init__()
        self.inside, self.release = threading.Event(), threading.Event()

    def push(self, frame, stamp=None):
        self.inside.set()
        assert self.release.wait(60)
        return super().push(frame, stamp)


@pytest.fixture
def in_process_node():
    started = []

    def start(tracker, **parameters):
        domain, namespace = unique_domain_id(), unique_namespace("samwise_in_process")
        peer = RosPeer(domain, namespace)
        context = rclpy.Context()
        rclpy.init(context=context, domain_id=domain)
        overrides = [Parameter(name, value=value) for name, value in
                     {**dict(checkpoint="stand-in", mode="frame", query=QUERY, image_reliability="reliable",
                             queue_depth=10), **parameters}.items()]
        node = create_node(lambda settings: LoadedTracker(tracker, "cpu", "fp32", "stand-in"),
                           context=context, namespace=namespace, parameter_overrides=overrides)
        executor = SingleThreadedExecutor(context=context)
        executor.add_node(node)
        thread = threading.Thread(target=executor.spin, daemon=True)
        thread.start()
        started.append((peer, node, executor, context, thread))
        peer.subscribe(Image, "mask")
        peer.subscribe(DiagnosticArray, "/diagnostics")
        peer.subscribe(Log, "/rosout")
        return peer

    yield start
    for peer, node, executor, context, thread in started:
        peer.close()
        node.stop()
        executor.shutdown()
        node.destroy_node()
        context.try_shutdown()
        thread.join(5)


def diagnostics(peer) -> dict:
    arrays = peer.messages("/diagnostics")
    return {kv.key: kv.value for kv in arrays[-1].status[0].values} if arrays else {}


def first_status(peer, condition, what: str, timeout: float = 20.0) -> DiagnosticStatus:
    """The first status received that meets condition(status, its values)."""
    def matching():
        statuses = [array.status[0] for array in peer.messages("/diagnostics")]
        return next((s for s in statuses if condition(s, {kv.key: kv.value for kv in s.values})), None)

    return peer.wait_for(matching, timeout, what)


def node_log(peer, level: int | None = None) -> list[str]:
    """What the node has logged (on /rosout), at `level` (Log.ERROR, ...) or all."""
    return [m.msg for m in peer.messages("/rosout") if m.name.endswith(".samwise") and level in (None, m.level)]


def wait_until_ready(peer, publisher) -> None:
    peer.wait_for(lambda: publisher.get_subscription_count() and diagnostics(peer).get("query") == QUERY, 20,
                  "the node")


def flush_log(peer) -> None:
    """Wait until everything the node logged before now has come in: a new query is logged by the worker
    after whatever it and the callbacks logged earlier, on the same reliable /rosout publisher."""
    marker = f"log marker {next(LOG_MARKERS)}"  # a new text each time: the same query again is said once
    text = peer.publisher(String, "text_query")
    peer.wait_for(text.get_subscription_count, 10, "the node's text_query subscription")
    text.publish(String(data=marker))
    peer.wait_for(lambda: any(marker in line for line in node_log(peer, Log.INFO)), 10, "the marker in the log")


def red_ball_bgr(height: int, width: int, radius: int = 20) -> np.ndarray:
    """A red disc centred in a black BGR image: ThresholdTracker's mask is the disc."""
    rows, cols = np.mgrid[0:height, 0:width]
    bgr = np.zeros((height, width, 3), np.uint8)
    bgr[(rows - (height - 1) / 2) ** 2 + (cols - (width - 1) / 2) ** 2 <= radius**2] = (0, 0, 255)
    return bgr


def depth_32fc1(seconds: float, height: int, width: int, metres: float) -> Image:
    return Image(header=header(seconds), height=height, width=width, encoding="32FC1", is_bigendian=0,
                 step=width * 4, data=np.full((height, width), metres, np.float32).tobytes())


def test_out_of_memory_on_a_frame_skips_it_and_the_node_keeps_running(in_process_node):
    peer = in_process_node(ThresholdTracker(failing={1}))
    image = peer.publisher(Image, "image")
    wait_until_ready(peer, image)
    for i in range(3):
        image.publish(bgr_image(i, 1.0 + i))
    masks = peer.wait_for_messages("mask", 2)
    assert [stamp_seconds(m.header) for m in masks] == [1.0, 3.0]  # frame 2.0 failed and was skipped
    values = peer.wait_for(lambda: diagnostics(peer).get("errors") == "1" and diagnostics(peer), 10, "the error")
    assert values["frames processed"] == "3" and values["results published"] == "2"


@pytest.mark.parametrize("extension", [".png", ".jpg"])
def test_compressed_transport_and_other_encodings(in_process_node, extension):
    peer = in_process_node(ThresholdTracker(), image_transport="compressed")
    compressed = peer.publisher(CompressedImage, "image/compressed")
    raw = peer.publisher(Image, "image")
    wait_until_ready(peer, compressed)
    assert raw.get_subscription_count() == 0  # image_transport compressed: `image` is not subscribed
    rgb = frame_pixels(0, 48, 64)
    ok, data = cv2.imencode(extension, rgb[:, :, ::-1])
    compressed.publish(CompressedImage(header=header(7.0), format=extension[1:], data=data.tobytes()))
    (mask,) = peer.wait_for_messages("mask", 1)
    assert (mask.height, mask.width, stamp_seconds(mask.header)) == (48, 64, 7.0)
    if extension == ".png":  # lossless: the mask is exactly the bright red pixels of the sent frame
        expected = (rgb[:, :, 0] > 127).astype(np.uint8) * 255
        assert np.array_equal(np.frombuffer(mask.data, np.uint8).reshape(48, 64), expected)


def test_query_reset_parameters_and_diagnostics_answer_while_the_model_is_busy(in_process_node):
    tracker = BlockingTracker()
    peer = in_process_node(tracker)
    image, text = peer.publisher(Image, "image"), peer.publisher(String, "text_query")
    reset = peer.node.create_client(Trigger, "samwise/reset")
    set_parameters = peer.node.create_client(SetParameters, "samwise/set_parameters")
    peer.wait_for(lambda: image.get_subscription_count() and text.get_subscription_count()
                  and diagnostics(peer).get("query") == QUERY, 20, "the node")
    image.publish(bgr_image(0, 1.0))
    assert tracker.inside.wait(20)  # the worker is now inside a push that does not return
    try:
        assert peer.call(reset, Trigger.Request(), timeout=5).success
        change = [Parameter("mask_threshold", value=0.7).to_parameter_msg()]
        assert peer.call(set_parameters, SetParameters.Request(parameters=change), timeout=5).results[0].successful
        text.publish(String(data="the green square"))
        image.publish(bgr_image(1, 2.0))
        reports = len(peer.messages("/diagnostics"))
        peer.wait_for(lambda: len(peer.messages("/diagnostics")) > reports + 1
                      and diagnostics(peer)["frames received"] == "2", 5, "diagnostics during the inference")
        assert not tracker.release.is_set() and diagnostics(peer)["query"] == QUERY  # still busy
    finally:
        tracker.release.set()
    # the worker then applies the query and the reset, in order, and goes on with the newest frame
    peer.wait_for(lambda: diagnostics(peer).get("query") == "the green square", 10, "the new query")
    masks = peer.wait_for_messages("mask", 2)
    assert [stamp_seconds(m.header) for m in masks] == [1.0, 2.0] and tracker.mask_threshold == 0.7


def publish_depth_frames(peer, camera_info: CameraInfo, stamps: list[float]) -> list[float]:
    """A 320x240 red ball 1.5 m away at each stamp: camera_info and depth first (acknowledged by the node,
    so they are paired when its image comes), then the bgr8 image. Returns the stamps."""
    info, depth, image = (peer.publisher(CameraInfo, "camera_info"), peer.publisher(Image, "depth"),
                          peer.publisher(Image, "image"))
    peer.wait_for(lambda: all(p.get_subscription_count() for p in (info, depth, image)), 20, "the node")
    for seconds in stamps:
        camera_info.header = header(seconds)
        info.publish(camera_info)
        depth.publish(depth_32fc1(seconds, 240, 320, 1.5))
    assert info.wait_for_all_acked() and depth.wait_for_all_acked()
    for seconds in stamps:
        image.publish(array_to_image(red_ball_bgr(240, 320), "bgr8", header(seconds)))
    return stamps


def test_intrinsics_of_a_binned_camera_are_scaled_to_the_image_and_said_once(in_process_node):
    """camera_info of the full 640x480 sensor, images and depth binned 2x2 to 320x240: the ball at the
    centre is straight ahead, 1.5 m away (not at x -0.8 m, y -0.6 m with the unscaled intrinsics)."""
    peer = in_process_node(ThresholdTracker(), use_depth=True)
    peer.subscribe(PointStamped, "centroid")
    peer.wait_for(lambda: peer.node.count_publishers("centroid"), 20, "the node's centroid publisher")
    full_sensor = CameraInfo(width=640, height=480, k=[300.0, 0.0, 320.0, 0.0, 300.0, 240.0, 0.0, 0.0, 1.0])
    stamps = publish_depth_frames(peer, full_sensor, [1.0, 2.0, 3.0])
    centroids = peer.wait_for_messages("centroid", 3)
    assert [stamp_seconds(c.header) for c in centroids] == stamps
    for centroid in centroids:  # the disc is centred on pixel 159.5, the scaled principal point is 160
        assert [centroid.point.x, centroid.point.y, centroid.point.z] == pytest.approx([-0.005, -0.005, 1.5],
                                                                                      abs=1e-6)
    flush_log(peer)
    said = [line for line in node_log(peer, Log.INFO) if "scaled" in line]
    assert said == ["camera_info: intrinsics for 640x480 images scaled to the 320x240 image "
                    "(same aspect ratio: a binned or resized camera)"]


def test_intrinsics_of_another_aspect_ratio_give_no_3d_centroid_and_a_warning(in_process_node):
    peer = in_process_node(ThresholdTracker(), use_depth=True)
    peer.subscribe(PointStamped, "centroid")
    other_camera = CameraInfo(width=640, height=360, k=[300.0, 0.0, 320.0, 0.0, 300.0, 180.0, 0.0, 0.0, 1.0])
    publish_depth_frames(peer, other_camera, [1.0, 2.0, 3.0])
    peer.wait_for_messages("mask", 3)
    flush_log(peer)
    assert node_log(peer, Log.WARN) == ["camera_info: the intrinsics are for 640x360 images, the image is 320x240 "
                                        "(another aspect ratio): no 3-D centroid"]  # throttled: once
    assert peer.messages("centroid") == []


def raw_with_wrong_size(index: int) -> Image:
    msg = bgr_image(0, 1.0)
    msg.height += 1 + index  # each a different byte count, so a different text
    return msg


def raw_with_unknown_encoding(index: int) -> Image:
    msg = bgr_image(0, 1.0)
    msg.encoding = f"yuv{index}"
    return msg


def corrupt_jpeg(index: int) -> CompressedImage:
    return CompressedImage(header=header(1.0), format="jpeg", data=b"\xff\xd8" + bytes(10 + index))


PROBLEM_STREAMS = {  # kind: (image_transport, the index-th broken frame, what the one line says)
    "data size": ("raw", raw_with_wrong_size, "image: data has"),
    "unsupported encoding": ("raw", raw_with_unknown_encoding, "image: unsupported encoding 'yuv0'"),
    "undecodable": ("compressed", corrupt_jpeg, "image/compressed: cannot decode 12 bytes"),
}


@pytest.mark.parametrize("kind", PROBLEM_STREAMS)
def test_a_broken_camera_is_logged_once_per_kind_of_problem_not_per_message_text(in_process_node, kind):
    transport, broken_frame, line = PROBLEM_STREAMS[kind]
    peer = in_process_node(ThresholdTracker(), image_transport=transport, queue_depth=30)  # none is lost
    msg_type, topic = (Image, "image") if transport == "raw" else (CompressedImage, "image/compressed")
    camera = peer.publisher(msg_type, topic)
    wait_until_ready(peer, camera)
    for index in range(30):
        camera.publish(broken_frame(index))
    peer.wait_for(lambda: diagnostics(peer).get("frames received") == "30", 20, "the 30 frames received")
    flush_log(peer)
    errors = node_log(peer, Log.ERROR)
    assert len(errors) == 1 and errors[0].startswith(line), errors


def test_diagnostics_warn_with_the_reason_while_frames_are_rejected(in_process_node):
    peer = in_process_node(ThresholdTracker())
    image = peer.publisher(Image, "image")
    wait_until_ready(peer, image)
    yuv = bgr_image(0, 1.0)
    yuv.encoding = "yuv422"
    for _ in range(3):
        image.publish(yuv)
    status = first_status(peer, lambda status, values: values["frames rejected"] == "3", "3 rejected frames")
    assert status.level == DiagnosticStatus.WARN
    assert "rejected" in status.message and "unsupported encoding 'yuv422'" in status.message
    assert diagnostics(peer)["frames processed"] == "0"


def test_compressed_frames_larger_than_max_image_pixels_are_rejected(in_process_node):
    peer = in_process_node(ThresholdTracker(), image_transport="compressed", max_image_pixels=48 * 64 - 1)
    compressed = peer.publisher(CompressedImage, "image/compressed")
    wait_until_ready(peer, compressed)
    for seconds, (height, width) in ((1.0, (48, 64)), (2.0, (32, 32))):
        ok, data = cv2.imencode(".png", frame_pixels(0, height, width))
        compressed.publish(CompressedImage(header=header(seconds), format="png", data=data.tobytes()))
    (mask,) = peer.wait_for_messages("mask", 1)
    assert (mask.width, mask.height) == (32, 32)  # only the small frame went through
    peer.wait_for(lambda: diagnostics(peer).get("frames rejected") == "1", 10, "the rejection counted")
    flush_log(peer)
    assert node_log(peer, Log.ERROR) == ["image/compressed: 64x48 is 3072 pixels, more than max_image_pixels "
                                         "(3071): frame rejected"]


def test_an_unset_image_stamp_stays_out_of_the_stamp_latency(in_process_node):
    peer = in_process_node(ThresholdTracker())
    image = peer.publisher(Image, "image")
    wait_until_ready(peer, image)
    image.publish(bgr_image(0, 0.0))  # a driver that leaves the stamp at zero
    peer.wait_for_messages("mask", 1)
    status = first_status(peer, lambda status, values: values["results published"] == "1", "the result counted")
    values = {kv.key: kv.value for kv in status.values}
    assert values["latency receive to publish p50 (ms)"] != "n/a"  # the period of that result
    assert values["latency stamp to publish p50 (ms)"] == values["latency stamp to publish max (ms)"] == "n/a"


def test_diagnostics_say_whether_the_compiled_step_is_ready_and_runs():
    compiled = SimpleNamespace(compile=True, compile_seconds=71.6, token_lengths=(16, 32, 64, 128),
                               compiled_step_active=False)
    assert compiled_step_state(SimpleNamespace(compile=False)) == "off"
    assert compiled_step_state(compiled) == ("compiled at configure (72 s) for queries of up to 128 tokens: not "
                                             "active yet (a stream's first frames run eagerly)")
    compiled.compiled_step_active = True
    assert compiled_step_state(compiled).endswith("128 tokens: active")


def test_cleanup_frees_the_model_at_once_and_configure_loads_a_new_one(present_model_dir):
    """At once: with Python's cyclic collector off, the cleaned-up model must go by reference counting
    alone (a reference cycle through the model would keep it, on a GPU its memory, until a collection)."""
    models = []

    def factory(settings):
        loaded = load_tracker(settings)
        models.append(weakref.ref(loaded.tracker.model))
        return loaded

    context = rclpy.Context()
    rclpy.init(context=context, domain_id=unique_domain_id())
    node = create_node(factory, context=context, namespace=unique_namespace("samwise_cleanup"),
                       parameter_overrides=[Parameter("autostart", value=False), Parameter("device", value="cpu"),
                                            Parameter("checkpoint", value=str(present_model_dir))])
    gc.collect()
    gc.disable()
    try:
        assert models == []  # unconfigured: nothing loaded
        for _ in range(2):
            assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS and models[-1]() is not None
            assert node.trigger_cleanup() == TransitionCallbackReturn.SUCCESS
            assert models[-1]() is None, f"held by {[type(r).__name__ for r in gc.get_referrers(models[-1]())]}"
        assert len(models) == 2
    finally:
        gc.enable()
        node.destroy_node()
        context.try_shutdown()


def set_parameters(peer, **values) -> list:
    client = peer.node.create_client(SetParameters, "samwise/set_parameters")
    request = SetParameters.Request(parameters=[Parameter(name, value=value).to_parameter_msg()
                                                for name, value in values.items()])
    return peer.call(client, request).results


def depth_16uc1(seconds: float, height: int, width: int, units: int) -> Image:
    return Image(header=header(seconds), height=height, width=width, encoding="16UC1", is_bigendian=0,
                 step=width * 2, data=np.full((height, width), units, np.uint16).tobytes())


def test_run_time_parameters_apply_to_the_next_frames(in_process_node):
    """Every dynamic parameter, set through the parameter service while the node runs."""
    peer = in_process_node(ThresholdTracker(), use_depth=True, queue_depth=30)
    peer.subscribe(Segmentation, "result")
    peer.subscribe(Image, "overlay")
    info, depth = peer.publisher(CameraInfo, "camera_info"), peer.publisher(Image, "depth")
    image, text = peer.publisher(Image, "image"), peer.publisher(String, "text_query")
    wait_until_ready(peer, image)
    peer.wait_for(lambda: info.get_subscription_count() and depth.get_subscription_count(), 20, "the depth topics")
    camera = CameraInfo(width=320, height=240, k=[300.0, 0.0, 160.0, 0.0, 300.0, 120.0, 0.0, 0.0, 1.0])

    def centroid_z(seconds: float, depth_stamp: float) -> float | None:
        """Send depth (1500 units) stamped depth_stamp and an image stamped seconds: its centroid's z."""
        camera.header = header(depth_stamp)
        info.publish(camera)
        depth.publish(depth_16uc1(depth_stamp, 240, 320, 1500))
        assert info.wait_for_all_acked() and depth.wait_for_all_acked()
        image.publish(array_to_image(red_ball_bgr(240, 320), "bgr8", header(seconds)))
        (result,) = peer.wait_for_messages("result", 1, where=lambda m: stamp_seconds(m.header) == seconds)
        return result.centroid_3d.z if result.has_centroid_3d else None

    assert centroid_z(1.0, 1.0) == pytest.approx(1.5)  # depth_scale 0.001: millimetres
    assert all(result.successful for result in set_parameters(peer, depth_scale=0.002))
    assert centroid_z(2.0, 2.0) == pytest.approx(3.0)
    assert all(result.successful for result in set_parameters(peer, sync_slop=0.01))
    assert centroid_z(3.0, 2.95) is None  # depth 50 ms away: no longer paired
    assert peer.messages("overlay") == []

    assert all(result.successful for result in set_parameters(peer, publish_overlay=True, max_image_pixels=1000,
                                                              max_query_chars=8))
    image.publish(array_to_image(red_ball_bgr(240, 320), "bgr8", header(4.0)))  # 76800 pixels: rejected
    image.publish(array_to_image(red_ball_bgr(20, 40, radius=5), "bgr8", header(5.0)))
    (overlay,) = peer.wait_for_messages("overlay", 1)
    assert (stamp_seconds(overlay.header), overlay.width, overlay.encoding) == (5.0, 40, "bgr8")
    peer.wait_for(lambda: diagnostics(peer).get("frames rejected") == "1", 10, "the large frame rejected")
    text.publish(String(data="the green square"))  # 16 characters, more than max_query_chars
    peer.wait_for(lambda: any("more than max_query_chars (8)" in line for line in node_log(peer, Log.ERROR)), 10,
                  "the query rejected")
    assert diagnostics(peer)["query"] == QUERY


def test_diagnostics_keep_coming_with_sim_time_and_no_clock(in_process_node):
    """use_sim_time with no /clock publisher: ROS time stands still, the diagnostics' steady timer does not."""
    peer = in_process_node(ThresholdTracker(), use_sim_time=True)
    peer.wait_for(lambda: len(peer.messages("/diagnostics")) >= 3, 10, "three diagnostics messages")


def test_an_active_node_whose_camera_stopped_reports_an_error(in_process_node):
    """Not OK at 0 results/s: once no frame has been processed for 5 s, the level is ERROR with the reason."""
    peer = in_process_node(ThresholdTracker())
    image = peer.publisher(Image, "image")
    wait_until_ready(peer, image)
    image.publish(bgr_image(0, 1.0))
    peer.wait_for_messages("mask", 1)
    status = first_status(peer, lambda status, values: status.level == DiagnosticStatus.ERROR, "an error",
                          timeout=STALLED_S + 10)
    assert status.message.startswith("no frame processed for") and "no image received for" in status.message
