"""Load: 1280x720 bgr8 frames at 30 Hz (BEST_EFFORT, through the shipped shared-memory DDS profile)
into a node whose model is made slow. The node must keep up with the newest frame, count the frames
it drops, and keep its output latency bounded (no queue that grows)."""

import sys
import time

import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image

from ros_harness import (QUERY, START_TIMEOUT_S, TEST_DIR, RosPeer, header, node_arguments, save_tiny_model,
                         stamp_seconds, start_node, unique_domain_id, unique_namespace, uses_shipped_profile)
from samwise_ros.msg import Segmentation
from samwise_ros.ros.conversions import array_to_image

RATE_HZ, DURATION_S, MIN_PERIOD_S = 30.0, 5.0, 0.1
HEIGHT, WIDTH = 720, 1280
BEST_EFFORT = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.BEST_EFFORT)
LATEST = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=5, reliability=ReliabilityPolicy.RELIABLE)


@pytest.fixture(scope="module")
def ros(tmp_path_factory, tokenizer):
    model = save_tiny_model(tmp_path_factory.mktemp("model"), tokenizer)
    domain, namespace = unique_domain_id(), unique_namespace("samwise_load_test")
    node = start_node(node_arguments(namespace, checkpoint=model, device="cpu", mode="frame", query=QUERY),
                      domain, command=[sys.executable, str(TEST_DIR / "ros_slow_node.py"), "--min-period",
                                       str(MIN_PERIOD_S)])
    peer = RosPeer(domain, namespace)
    try:
        peer.subscribe(Segmentation, "result")
        peer.subscribe(Image, "mask", LATEST)
        peer.subscribe(DiagnosticArray, "/diagnostics")
        image = peer.publisher(Image, "image", BEST_EFFORT)
        peer.wait_for(lambda: image.get_subscription_count() and peer.node.count_publishers("result"),
                      START_TIMEOUT_S, f"the node to start; output:\n{node.tail()}")
        yield node, peer, image, namespace
    finally:
        peer.close()
        node.stop()


def diagnostics(peer, namespace) -> dict | None:
    for array in reversed(peer.messages("/diagnostics")):
        for status in array.status:
            if status.name == f"{namespace}/samwise: segmentation":
                return {kv.key: kv.value for kv in status.values}
    return None


def test_a_slow_model_keeps_up_with_the_newest_frame_and_reports_drops(ros):
    node, peer, image, namespace = ros
    assert uses_shipped_profile(), "this process's DDS participant started without config/fastdds_shm.xml"
    peer.wait_for(lambda: (diagnostics(peer, namespace) or {}).get("query") == QUERY, 15, "the initial query")
    pictures = [np.random.default_rng(i).integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8) for i in range(4)]
    published = int(RATE_HZ * DURATION_S)
    start = time.monotonic()
    for i in range(published):
        time.sleep(max(0.0, start + i / RATE_HZ - time.monotonic()))  # pacing the camera, not waiting for the node
        image.publish(array_to_image(pictures[i % 4], "bgr8", header(time.time())))

    # every frame the node received was either processed or dropped; nothing is left waiting
    def settled():
        values = diagnostics(peer, namespace)
        counts = values and [int(values[k]) for k in ("frames received", "frames processed", "dropped frames")]
        return counts if counts and counts[0] > 0 and counts[0] == counts[1] + counts[2] and \
            float(values["rate (results/s)"]) == 0.0 else None

    received, processed, dropped = peer.wait_for(settled, 30, "the node to settle")
    results = [(arrival, msg) for arrival, msg in peer.received["result"]]
    assert dropped > 0 and processed >= 5, (received, processed, dropped)
    assert received > published / 2  # large BEST_EFFORT images do arrive (shared-memory profile)
    assert processed < received / 1.5  # slower than the camera ...
    assert len(results) == processed  # ... and one result per processed frame
    stamps = [stamp_seconds(msg.header) for _, msg in results]
    assert stamps == sorted(stamps)

    latencies = [arrival - stamp_seconds(msg.header) for arrival, msg in results]
    first, last = np.median(latencies[:5]), np.median(latencies[-5:])
    # a growing queue would have reached seconds by the end (30 Hz in, <= 10 Hz out, 5 s)
    assert last < 2.0 and last < first + 1.0, latencies
    assert max(msg.latency_ms for _, msg in results[-5:]) < 2000.0
    masks = peer.messages("mask")
    assert masks and (masks[-1].height, masks[-1].width) == (HEIGHT, WIDTH)
