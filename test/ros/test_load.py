"""Load: 1280x720 bgr8 frames (BEST_EFFORT, through the shipped shared-memory DDS profile) into a node
whose model is busy for as long as the test holds it. While it is busy, newer frames replace the one
waiting (the queue keeps only the newest) and the replaced ones are counted; once free, the model gets the
newest frame. Asserted on counts and stamps, not on timings: those are the benchmark's
(benchmarks/node.py)."""

import sys
import time

import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image

from helpers.ros_harness import (QUERY, START_TIMEOUT_S, HELPERS_DIR, RosPeer, header, node_arguments,
                         start_node, unique_domain_id, unique_namespace, uses_shipped_profile)
from samwise_ros.msg import Segmentation
from samwise_ros.ros.conversions import array_to_image

HEIGHT, WIDTH = 720, 1280
FRAMES = 7  # the first keeps the model busy; of the six sent meanwhile, only the newest is not stale
DIAGNOSTICS_TIMEOUT_S = 15.0  # the node reports about once a second
BEST_EFFORT = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.BEST_EFFORT)
LATEST = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=5, reliability=ReliabilityPolicy.RELIABLE)
COUNTS = ("frames received", "frames rejected", "frames processed", "dropped frames", "results published")


@pytest.fixture(scope="module")
def ros(tmp_path_factory, present_model_dir):
    model = present_model_dir
    hold = tmp_path_factory.mktemp("hold") / "model_busy"
    domain, namespace = unique_domain_id(), unique_namespace("samwise_load_test")
    node = start_node(node_arguments(namespace, checkpoint=model, device="cpu", mode="frame", query=QUERY),
                      domain, command=[sys.executable, str(HELPERS_DIR / "slow_node.py"), "--hold-file", str(hold)])
    peer = RosPeer(domain, namespace)
    try:
        peer.subscribe(Segmentation, "result")
        peer.subscribe(Image, "mask", LATEST)
        peer.subscribe(DiagnosticArray, "/diagnostics")
        image = peer.publisher(Image, "image", BEST_EFFORT)
        peer.wait_for(lambda: image.get_subscription_count() and peer.node.count_publishers("result"),
                      START_TIMEOUT_S, f"the node to start; output:\n{node.tail()}")
        yield node, peer, image, namespace, hold
    finally:
        hold.unlink(missing_ok=True)  # a held model would keep the node from stopping
        peer.close()
        node.stop()


def diagnostics(peer, namespace) -> dict | None:
    for array in reversed(peer.messages("/diagnostics")):
        for status in array.status:
            if status.name == f"{namespace}/samwise: segmentation":
                return {kv.key: kv.value for kv in status.values}
    return None


def wait_for_counts(peer, namespace, wanted: dict[str, int]) -> dict[str, int]:
    """The node's frame counts, once a diagnostics report shows `wanted` among them."""
    def counts():
        values = diagnostics(peer, namespace)
        found = values and {key: int(values[key]) for key in COUNTS}
        return found if found and wanted.items() <= found.items() else None

    try:
        return peer.wait_for(counts, DIAGNOSTICS_TIMEOUT_S, f"diagnostics showing {wanted}")
    except AssertionError as timeout:
        raise AssertionError(f"{timeout}; the last report: {diagnostics(peer, namespace)}") from None


def stamps(headers) -> list[tuple[int, int]]:
    return [(h.stamp.sec, h.stamp.nanosec) for h in headers]


def test_a_busy_model_gets_the_newest_frame_and_the_stale_ones_are_counted(ros):
    node, peer, image, namespace, hold = ros
    assert uses_shipped_profile(), "this process's DDS participant started without config/fastdds_shm.xml"
    peer.wait_for(lambda: (diagnostics(peer, namespace) or {}).get("query") == QUERY, 15, "the initial query")
    pictures = [np.random.default_rng(i).integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8) for i in range(FRAMES)]
    first = time.time()
    headers = [header(first + i / 30.0) for i in range(FRAMES)]  # a 30 Hz camera's stamps
    first_and_newest = stamps([headers[0], headers[-1]])

    hold.touch()
    image.publish(array_to_image(pictures[0], "bgr8", headers[0]))
    wait_for_counts(peer, namespace, {"frames received": 1, "frames processed": 1})  # the model has it
    for sent in range(2, FRAMES + 1):  # each received before the next: every drop is the node's
        image.publish(array_to_image(pictures[sent - 1], "bgr8", headers[sent - 1]))
        busy = wait_for_counts(peer, namespace, {"frames received": sent, "dropped frames": sent - 2})
        assert busy["frames processed"] == 1 and busy["results published"] == 0, busy  # one frame waits, no more

    hold.unlink()
    done = wait_for_counts(peer, namespace, {"frames processed": 2, "results published": 2})
    # every frame is accounted for: the one in the model, the newest, and the stale ones between
    assert done == {"frames received": FRAMES, "frames rejected": 0, "frames processed": 2,
                    "dropped frames": FRAMES - 2, "results published": 2}
    peer.wait_for_messages("result", 2)
    peer.wait_for_messages("mask", 2)
    results, masks = peer.messages("result"), peer.messages("mask")
    assert stamps(r.header for r in results) == first_and_newest == stamps(m.header for m in masks)  # in order
    assert [r.frame_index for r in results] == [0, 1]  # one stream: the stale frames never reached the model
    assert [(m.height, m.width) for m in masks] == [(HEIGHT, WIDTH)] * 2
    node.stop_cleanly()  # exit 0, no error, none of its shared-memory segments left behind
