"""The real node class with stand-in trackers, run in this process (its own rclpy context and
executor, as main() runs it; real DDS to a peer): what needs a tracker that misbehaves on purpose
(out of memory, a long inference), and the compressed transport."""

import threading

import cv2
import numpy as np
import pytest
import rclpy
import torch
from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.srv import SetParameters
from rclpy.executors import SingleThreadedExecutor
from rclpy.parameter import Parameter
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import String
from std_srvs.srv import Trigger

from ros_harness import (QUERY, RosPeer, bgr_image, frame_pixels, header, stamp_seconds, unique_domain_id,
                         unique_namespace)
from samwise_ros.geometry import mask_stats
from samwise_ros.ros.node import LoadedTracker, create_node
from samwise_ros.tracker import TrackResult


class ThresholdTracker:
    """Stands in for StreamTracker: the mask is the frame's bright red pixels; `failing` frame indices
    raise CUDA out-of-memory instead."""

    def __init__(self, failing=()):
        self.mask_threshold, self.pending_frames, self.query = 0.5, 0, ""
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
                     dict(checkpoint="stand-in", mode="frame", query=QUERY, image_reliability="reliable",
                          queue_depth=10, **parameters).items()]
        node = create_node(lambda settings: LoadedTracker(tracker, "cuda:0", "bf16", "stand-in"),
                           context=context, namespace=namespace, parameter_overrides=overrides)
        executor = SingleThreadedExecutor(context=context)
        executor.add_node(node)
        thread = threading.Thread(target=executor.spin, daemon=True)
        thread.start()
        started.append((peer, node, executor, context, thread))
        peer.subscribe(Image, "mask")
        peer.subscribe(DiagnosticArray, "/diagnostics")
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


def test_out_of_memory_on_a_frame_skips_it_and_the_node_keeps_running(in_process_node):
    peer = in_process_node(ThresholdTracker(failing={1}))
    image = peer.publisher(Image, "image")
    peer.wait_for(lambda: image.get_subscription_count() and diagnostics(peer).get("query") == QUERY, 20, "the node")
    for i in range(3):
        image.publish(bgr_image(i, 1.0 + i))
    masks = peer.wait_for_messages("mask", 2)
    assert [stamp_seconds(m.header) for m in masks] == [1.0, 3.0]  # frame 2.0 failed and was skipped
    values = peer.wait_for(lambda: diagnostics(peer).get("errors") == "1" and diagnostics(peer), 10, "the error")
    assert values["frames processed"] == "3" and values["results published"] == "2"
    assert values["device"] == "cuda:0"


@pytest.mark.parametrize("extension", [".png", ".jpg"])
def test_compressed_transport_and_other_encodings(in_process_node, extension):
    peer = in_process_node(ThresholdTracker(), image_transport="compressed")
    compressed = peer.publisher(CompressedImage, "image/compressed")
    raw = peer.publisher(Image, "image")
    peer.wait_for(lambda: compressed.get_subscription_count() and diagnostics(peer).get("query") == QUERY, 20,
                  "the node")
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
