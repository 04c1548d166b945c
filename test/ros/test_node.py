"""samwise_node in a process of its own (frame mode, depth, overlay, a tiny model whose CME always
switches), driven over real DDS by a tester node in this process."""

import itertools
import os
import signal
import threading
from types import SimpleNamespace

import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PointStamped
from rcl_interfaces.srv import SetParameters
from rclpy.parameter import Parameter
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import String
from std_srvs.srv import Trigger
from visualization_msgs.msg import Marker, MarkerArray

from helpers.ros_harness import (QUERY, START_TIMEOUT_S, RosPeer, bgr_image, camera_info, header,
                         node_arguments, stamp_seconds, start_node, unique_domain_id,
                         unique_namespace)
from samwise_ros.msg import CmeSwitch, Segmentation

HEIGHT, WIDTH = 96, 128
FX, FY = 100.0, 110.0
CX, CY = (WIDTH - 1) / 2, (HEIGHT - 1) / 2
OUTPUTS = {"mask": Image, "result": Segmentation, "overlay": Image, "centroid": PointStamped, "markers": MarkerArray,
           "cme_switch": CmeSwitch}


def depth_metres() -> np.ndarray:
    """A tilted plane 1.5-2 m away, with a grid of holes."""
    rows, cols = np.mgrid[0:HEIGHT, 0:WIDTH]
    depth = 1.5 + 0.002 * cols + 0.003 * rows
    depth[(rows % 7 == 0) | (cols % 5 == 0)] = 0.0
    return depth


def depth_image(seconds: float, encoding: str) -> Image:
    metres = depth_metres()
    if encoding == "16UC1":  # millimetres, 0 = hole
        return _depth_msg(np.round(metres * 1000).astype(np.uint16), "16UC1", seconds)
    metres = metres.astype(np.float32)
    metres[metres == 0] = np.nan  # 32FC1 marks holes with NaN
    return _depth_msg(metres, "32FC1", seconds)


def _depth_msg(values: np.ndarray, encoding: str, seconds: float) -> Image:
    msg = Image(header=header(seconds), height=HEIGHT, width=WIDTH, encoding=encoding, is_bigendian=0,
                step=WIDTH * values.itemsize)
    msg.data = values.tobytes()
    return msg


def expected_centroid(mask: np.ndarray, depth: np.ndarray) -> np.ndarray:
    rows, cols = np.nonzero(mask & np.isfinite(depth) & (depth > 0))
    z = depth[rows, cols]
    return np.array([np.median((cols - CX) * z / FX), np.median((rows - CY) * z / FY), np.median(z)])


def mask_array(msg: Image) -> np.ndarray:
    return np.frombuffer(msg.data, np.uint8).reshape(msg.height, msg.step)[:, : msg.width]


@pytest.fixture(scope="module")
def model(switching_model_dir):
    return switching_model_dir


@pytest.fixture(scope="module")
def ros(model):
    domain, namespace = unique_domain_id(), unique_namespace("samwise_node_test")
    node = start_node(node_arguments(namespace, checkpoint=model, device="cpu", mode="frame", use_depth=True,
                                     publish_overlay=True, image_reliability="reliable", queue_depth=30), domain)
    tester = RosPeer(domain, namespace)
    try:
        for topic, msg_type in OUTPUTS.items():
            tester.subscribe(msg_type, topic)
        tester.subscribe(DiagnosticArray, "/diagnostics")
        session = SimpleNamespace(
            node=node, tester=tester, namespace=namespace, stamps=itertools.count(100),
            queries=itertools.count(), image=tester.publisher(Image, "image"),
            depth=tester.publisher(Image, "depth"), camera_info=tester.publisher(CameraInfo, "camera_info"),
            text_query=tester.publisher(String, "text_query"),
            reset=tester.node.create_client(Trigger, "samwise/reset"),
            set_parameters=tester.node.create_client(SetParameters, "samwise/set_parameters"))
        publishers = (session.image, session.depth, session.camera_info, session.text_query)
        tester.wait_for(lambda: all(p.get_subscription_count() for p in publishers)
                        and all(tester.node.count_publishers(topic) for topic in OUTPUTS),
                        START_TIMEOUT_S, f"the node to start and be discovered; output:\n{node.tail()}")
        yield session
    finally:
        tester.close()
        node.stop()


def set_query(ros, base: str = QUERY) -> str:
    """Send a query no earlier test used, and wait until the node reports it in its diagnostics (the
    worker has applied it: the frames sent next are tracked from a clean state)."""
    text = f"{base} {next(ros.queries)}"
    ros.text_query.publish(String(data=text))
    wait_for_diagnostics(ros, lambda values: values["query"] == text)
    return text


def wait_for_diagnostics(ros, condition, timeout=15.0) -> dict:
    def matching():
        for array in reversed(ros.tester.messages("/diagnostics")):
            for status in array.status:
                if status.name == f"{ros.namespace}/samwise: segmentation":
                    values = {kv.key: kv.value for kv in status.values}
                    return values if condition(values) else None
        return None

    return ros.tester.wait_for(matching, timeout, "matching diagnostics")


def send_frame(ros, index: int = 0, depth: str | None = "16UC1", seconds: float | None = None) -> float:
    """Publish depth + camera_info, then the colour image, all with one stamp; returns the stamp."""
    seconds = float(next(ros.stamps)) if seconds is None else seconds
    if depth:
        ros.camera_info.publish(camera_info(seconds, HEIGHT, WIDTH, FX, FY))
        ros.depth.publish(depth_image(seconds, depth))
    ros.image.publish(bgr_image(index, seconds, HEIGHT, WIDTH))
    return seconds


def outputs_for(ros, topic: str, stamps: list[float], timeout: float = 30.0) -> list:
    """The messages on `topic` for these image stamps, in the stamps' order."""
    def collect():
        by_stamp = {stamp_seconds(msg.header): msg for msg in ros.tester.messages(topic)}
        return [by_stamp[s] for s in stamps] if all(s in by_stamp for s in stamps) else None

    return ros.tester.wait_for(collect, timeout, f"{topic} for stamps {stamps}")


def set_parameter(ros, name: str, value):
    request = SetParameters.Request(parameters=[Parameter(name, value=value).to_parameter_msg()])
    return ros.tester.call(ros.set_parameters, request).results[0]


def markers_for(ros, stamps: list[float]) -> list[MarkerArray]:
    """The marker arrays for these image stamps (their markers carry the image's header)."""
    def collect():
        by_stamp = {stamp_seconds(array.markers[0].header): array for array in ros.tester.messages("markers")}
        return [by_stamp[s] for s in stamps] if all(s in by_stamp for s in stamps) else None

    return ros.tester.wait_for(collect, 30.0, f"markers for stamps {stamps}")


def test_each_frame_gets_mask_result_overlay_and_3d_centroid_with_its_header(ros):
    query = set_query(ros)
    stamps = [send_frame(ros, 0, "16UC1"), send_frame(ros, 1, "16UC1"), send_frame(ros, 2, "32FC1")]
    results = outputs_for(ros, "result", stamps)
    masks = outputs_for(ros, "mask", stamps)
    overlays = outputs_for(ros, "overlay", stamps)
    centroids = outputs_for(ros, "centroid", stamps)
    assert [r.frame_index for r in results] == [0, 1, 2]
    for stamp, result, mask, overlay, centroid in zip(stamps, results, masks, overlays, centroids):
        for msg in (result, mask, overlay, centroid):
            assert stamp_seconds(msg.header) == stamp and msg.header.frame_id == "camera_color_optical_frame"
        assert (mask.encoding, mask.height, mask.width) == ("mono8", HEIGHT, WIDTH)
        assert (overlay.encoding, overlay.height, overlay.width) == ("bgr8", HEIGHT, WIDTH)
        pixels = mask_array(mask)
        assert set(np.unique(pixels)) <= {0, 255}
        assert result.query == query and result.detected and result.area_px == (pixels == 255).sum() > 0
        rows, cols = np.nonzero(pixels)
        assert (result.bbox.x_offset, result.bbox.y_offset) == (cols.min(), rows.min())
        assert (result.bbox.width, result.bbox.height) == (cols.max() - cols.min() + 1, rows.max() - rows.min() + 1)
        assert (result.centroid_px.x, result.centroid_px.y) == pytest.approx((cols.mean(), rows.mean()))
        assert 0.0 < result.latency_ms < 60_000
        expected = expected_centroid(pixels == 255, depth_metres())
        point = np.array([centroid.point.x, centroid.point.y, centroid.point.z])
        assert np.abs(point - expected).max() < 1e-3  # within 1 mm
        assert result.has_centroid_3d
        point = np.array([result.centroid_3d.x, result.centroid_3d.y, result.centroid_3d.z])
        assert np.abs(point - expected).max() < 1e-3


def test_a_3d_centroid_gets_a_sphere_and_the_query_as_markers_and_none_without_it(ros):
    query = set_query(ros)
    without_depth = send_frame(ros, 0, depth=None)
    with_depth = send_frame(ros, 1)
    (centroid,) = outputs_for(ros, "centroid", [with_depth])
    (markers,) = markers_for(ros, [with_depth])
    sphere, text = markers.markers
    assert (sphere.type, text.type) == (Marker.SPHERE, Marker.TEXT_VIEW_FACING) and sphere.id != text.id
    for marker in (sphere, text):
        assert marker.header == centroid.header  # the image's stamp and frame
        assert marker.action == Marker.ADD and marker.color.a > 0
        assert marker.lifetime.sec > 0 or marker.lifetime.nanosec > 0  # a lost target's markers vanish
    assert sphere.pose.position == centroid.point and min(sphere.scale.x, sphere.scale.y, sphere.scale.z) > 0
    assert text.text == query and text.scale.z > 0
    # the frame without depth came first on each topic: it has a result, but no centroid and no markers
    (result,) = outputs_for(ros, "result", [without_depth])
    assert result.detected and not result.has_centroid_3d
    assert without_depth not in [stamp_seconds(msg.header) for msg in ros.tester.messages("centroid")]
    assert without_depth not in [stamp_seconds(m.header) for a in ros.tester.messages("markers") for m in a.markers]


def test_diagnostics_report_rate_latency_drops_and_the_model(ros):
    set_query(ros)
    outputs_for(ros, "result", [send_frame(ros)])  # its result first: a frame in flight would join the next stream
    values = wait_for_diagnostics(ros, lambda values: int(values["results published"]) > 0)
    for key in ("rate (results/s)", "latency stamp to publish p50 (ms)", "latency receive to publish p50 (ms)",
                "dropped frames", "frames received", "device", "precision", "model", "mode", "query"):
        assert key in values
    assert (values["device"], values["precision"], values["mode"]) == ("cpu", "fp32", "frame")
    assert values["compiled step"] == "off"
    assert values["dropped frames"] == "0"  # queue_depth 30 holds every frame of these tests


def test_a_forced_cme_switch_is_published_on_exactly_the_switched_frames(ros):
    set_query(ros)
    stamps = [send_frame(ros, i) for i in range(15)]
    results = outputs_for(ros, "result", stamps)
    assert [r.frame_index for r in results] == list(range(15))
    switched = [r.frame_index for r in results if r.cme_switched]
    assert switched == [5, 8, 11, 14]
    switches = ros.tester.wait_for_messages("cme_switch", 4, where=lambda m: stamp_seconds(m.header) in stamps)
    assert [stamp_seconds(m.header) for m in switches] == [stamps[i] for i in switched]
    for switch in switches:
        before, after = results[switch.frame_index - 1], results[switch.frame_index]
        assert switch.frame_index == after.frame_index and switch.cme_probability > 0.99
        assert switch.centroid_px_before == before.centroid_px and switch.centroid_px_after == after.centroid_px
    assert all(np.isnan(r.cme_probability) for r in results if not r.cme_switched)


def test_a_new_query_resets_the_stream(ros):
    set_query(ros)
    first = outputs_for(ros, "result", [send_frame(ros, 0), send_frame(ros, 1)])
    assert [r.frame_index for r in first] == [0, 1]
    query = set_query(ros, "the green square")
    (result,) = outputs_for(ros, "result", [send_frame(ros, 2)])
    assert (result.frame_index, result.query) == (0, query)


def test_the_same_query_sent_again_keeps_the_stream(ros):
    """Behaviour trees and voice pipelines re-publish their current command: it must not wipe the memory."""
    query = set_query(ros)
    assert [r.frame_index for r in outputs_for(ros, "result", [send_frame(ros, 0), send_frame(ros, 1)])] == [0, 1]
    stamps = []
    for index in range(2, 8):
        ros.text_query.publish(String(data=query))
        stamps.append(send_frame(ros, index))
    results = outputs_for(ros, "result", stamps)
    assert [r.frame_index for r in results] == list(range(2, 8))
    assert all(r.query == query for r in results)


def test_reset_service_clears_the_state_and_keeps_the_query(ros):
    query = set_query(ros)
    assert [r.frame_index for r in outputs_for(ros, "result", [send_frame(ros, 0), send_frame(ros, 1)])] == [0, 1]
    response = ros.tester.call(ros.reset, Trigger.Request())
    assert response.success
    (result,) = outputs_for(ros, "result", [send_frame(ros, 2)])
    assert (result.frame_index, result.query) == (0, query)


def test_mask_threshold_changes_at_run_time(ros):
    set_query(ros)
    areas = {}
    try:
        for threshold in (0.05, 0.95):
            assert set_parameter(ros, "mask_threshold", threshold).successful
            ros.tester.call(ros.reset, Trigger.Request())  # the same first frame, only the threshold differs
            (result,) = outputs_for(ros, "result", [send_frame(ros, 0)])
            areas[threshold] = result.area_px
    finally:
        assert set_parameter(ros, "mask_threshold", 0.5).successful
    assert areas[0.05] > areas[0.95]
    refused = set_parameter(ros, "mask_threshold", 1.5)
    assert not refused.successful and "strictly between 0 and 1" in refused.reason
    refused = set_parameter(ros, "mode", "clip")  # structural: only while unconfigured (test_lifecycle.py)
    assert not refused.successful and refused.reason == "mode applies at configure: deactivate and clean up first"


def _bad_image(**fields) -> Image:
    msg = bgr_image(0, 1.0, HEIGHT, WIDTH)
    for name, value in fields.items():
        setattr(msg, name, value)
    return msg


BAD_INPUTS = {  # name: (what to send, the log line that must answer it)
    "unsupported encoding": (lambda ros: ros.image.publish(_bad_image(encoding="16UC1")),
                             r"ERROR.*unsupported encoding '16UC1'"),
    "data size": (lambda ros: ros.image.publish(_bad_image(height=HEIGHT + 1)),
                  r"ERROR.*data has \d+ bytes, but step x height"),
    "short step": (lambda ros: ros.image.publish(_bad_image(step=WIDTH * 3 - 1)),
                   r"ERROR.*step \d+ is shorter than a row"),
    "empty image": (lambda ros: ros.image.publish(Image(encoding="bgr8")), r"ERROR.*empty image"),
    # a header claiming 8000x6000 over a few bytes: refused from its size, before anything reads the data
    "too large": (lambda ros: ros.image.publish(_bad_image(width=8000, height=6000, step=24000)),
                  r"ERROR.*image: 8000x6000 is 48000000 pixels, more than max_image_pixels \(16777216\)"),
    "empty query": (lambda ros: ros.text_query.publish(String(data="  ")), r"WARN.*empty query: output paused"),
    "over-long query": (lambda ros: ros.text_query.publish(String(data="x" * 300)),
                        r"ERROR.*text_query: rejected 'x{60}\.\.\.': the query has 300 characters, more than "
                        r"max_query_chars \(256\)"),
    "depth encoding": (lambda ros: ros.depth.publish(_bad_image(encoding="rgb8")),
                       r"ERROR.*depth: unsupported encoding 'rgb8'"),
    "NaN depth": (lambda ros: (ros.depth.publish(_depth_msg(np.full((HEIGHT, WIDTH), np.nan, np.float32), "32FC1",
                                                            5000.0)),
                               ros.camera_info.publish(camera_info(5000.0, HEIGHT, WIDTH)),
                               ros.image.publish(bgr_image(0, 5000.0, HEIGHT, WIDTH))),
                  r"WARN.*no valid depth under the mask"),
    "zero focal length": (lambda ros: ros.camera_info.publish(camera_info(1.0, HEIGHT, WIDTH, fx=0.0, fy=0.0)),
                          r"ERROR.*camera_info: .*zero or non-finite focal length"),
    "stamps going backwards": (lambda ros: (send_frame(ros, 0, seconds=9000.0), send_frame(ros, 1, seconds=10.0)),
                               r"WARN.*stamp went backwards .* stream state reset"),
}


@pytest.mark.parametrize("name", BAD_INPUTS)
def test_bad_input_is_logged_and_the_node_keeps_running(ros, name):
    send, line = BAD_INPUTS[name]
    query = set_query(ros)
    mark = ros.node.mark()
    send(ros)
    ros.node.wait_for_line(line, after=mark)
    if name == "empty query":
        query = set_query(ros)
    (result,) = outputs_for(ros, "result", [send_frame(ros, 0, seconds=10_000.0 + next(ros.stamps))])
    assert result.query == query


def test_a_query_over_the_token_limit_is_rejected_with_its_text_cut(ros):
    query = set_query(ros)
    mark = ros.node.mark()
    too_many_tokens = "q" * 250  # 250 characters (within max_query_chars), 252 tokens (this encoder takes 128)
    ros.text_query.publish(String(data=too_many_tokens))
    line = ros.node.wait_for_line(r"ERROR.*text_query: rejected .*: the query has 252 tokens", after=mark)
    assert f"rejected '{'q' * 60}...': the query has 252 tokens" in line  # cut to its first 60 characters
    (result,) = outputs_for(ros, "result", [send_frame(ros, 0, seconds=30_000.0 + next(ros.stamps))])
    assert result.query == query


def test_stamps_going_backwards_start_a_new_stream(ros):
    set_query(ros)
    results = outputs_for(ros, "result", [send_frame(ros, 0, seconds=20_000.0), send_frame(ros, 1, seconds=20_000.1),
                                          send_frame(ros, 2, seconds=500.0)])
    assert [r.frame_index for r in results] == [0, 1, 0]


def test_the_node_shuts_down_cleanly_on_sigint(ros):
    segments = ros.node.shm_segments()
    assert segments, "the node should use Fast DDS shared memory (config/fastdds_shm.xml)"
    assert ros.node.stop() == 0
    assert not any("Traceback" in line for line in ros.node.lines), ros.node.tail()
    assert not [s for s in segments if os.path.exists(s)], "shared-memory segments left in /dev/shm"


def publish_frames_until(stop: threading.Event, image) -> None:
    for index in itertools.count():
        if stop.wait(0.03):
            return
        image.publish(bgr_image(index % 4, 50_000.0 + 0.03 * index, HEIGHT, WIDTH))


@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_while_frames_flow_stops_the_node_cleanly(model, stop_signal):
    """Exit status 0, no error logged (nothing is published once the shutdown began), nothing left in
    /dev/shm."""
    domain, namespace = unique_domain_id(), unique_namespace("samwise_signal")
    node = start_node(node_arguments(namespace, checkpoint=model, device="cpu", mode="frame", query=QUERY,
                                     image_reliability="reliable"), domain)
    tester = RosPeer(domain, namespace)
    image = tester.publisher(Image, "image")
    stop_camera = threading.Event()
    camera = threading.Thread(target=publish_frames_until, args=(stop_camera, image))
    try:
        tester.subscribe(Segmentation, "result")
        tester.wait_for(lambda: image.get_subscription_count() and tester.node.count_publishers("result"),
                        START_TIMEOUT_S, f"the node to start; output:\n{node.tail()}")
        camera.start()
        tester.wait_for_messages("result", 3)
        node.stop_cleanly(stop_signal)
    finally:
        stop_camera.set()
        if camera.is_alive():
            camera.join()
        tester.close()
        node.stop()
