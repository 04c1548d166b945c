"""samwise_node in its default clip mode: results arrive when a clip completes, each with its own
image's header; the CME switches of a model forced to switch are published on exactly those frames."""

import pytest
from diagnostic_msgs.msg import DiagnosticArray
from sensor_msgs.msg import Image

from helpers.ros_harness import (QUERY, START_TIMEOUT_S, RosPeer, bgr_image, node_arguments, stamp_seconds,
                         start_node, unique_domain_id, unique_namespace)
from samwise_ros.msg import CmeSwitch, Segmentation

CLIP = 8


@pytest.fixture(scope="module")
def ros(switching_model_dir):
    model = switching_model_dir
    domain, namespace = unique_domain_id(), unique_namespace("samwise_clip_test")
    # the parameters file's defaults (clip mode, T = 8), the query as a parameter, and no frame dropped
    node = start_node(node_arguments(namespace, checkpoint=model, device="cpu", query=QUERY,
                                     image_reliability="reliable", queue_depth=32), domain)
    peer = RosPeer(domain, namespace)
    try:
        for topic, msg_type in (("result", Segmentation), ("cme_switch", CmeSwitch), ("mask", Image)):
            peer.subscribe(msg_type, topic)
        peer.subscribe(DiagnosticArray, "/diagnostics")
        image = peer.publisher(Image, "image")
        peer.wait_for(lambda: image.get_subscription_count() and peer.node.count_publishers("result"),
                      START_TIMEOUT_S, f"the node to start; output:\n{node.tail()}")
        yield node, peer, image, namespace
    finally:
        peer.close()
        assert node.stop() == 0


def diagnostics(peer, namespace) -> dict:
    for array in reversed(peer.messages("/diagnostics")):
        for status in array.status:
            if status.name == f"{namespace}/samwise: segmentation":
                return {kv.key: kv.value for kv in status.values}
    return {}


def test_results_arrive_per_clip_with_their_own_headers_and_cme_switches(ros):
    node, peer, image, namespace = ros
    peer.wait_for(lambda: diagnostics(peer, namespace).get("query") == QUERY, 15, "the query parameter applied")
    stamps = [10.0 + 0.1 * i for i in range(3 * CLIP)]
    for i in range(CLIP - 1):
        image.publish(bgr_image(i, stamps[i]))
    peer.wait_for(lambda: diagnostics(peer, namespace).get("frames processed") == str(CLIP - 1), 30,
                  "7 frames in the tracker")
    assert peer.messages("result") == []  # an incomplete clip gives nothing yet

    for i in range(CLIP - 1, 3 * CLIP):
        image.publish(bgr_image(i, stamps[i]))
    results = peer.wait_for_messages("result", 3 * CLIP, timeout=60)
    assert [r.frame_index for r in results] == list(range(3 * CLIP))
    assert [stamp_seconds(r.header) for r in results] == stamps
    assert all(r.header.frame_id == "camera_color_optical_frame" and r.query == QUERY for r in results)
    masks = peer.wait_for_messages("mask", 3 * CLIP)
    assert [stamp_seconds(m.header) for m in masks] == stamps

    switched = [r.frame_index for r in results if r.cme_switched]
    assert switched == [5, 8, 11, 14, 17, 20, 23]
    switches = peer.wait_for_messages("cme_switch", len(switched))
    assert [stamp_seconds(s.header) for s in switches] == [stamps[i] for i in switched]
    assert [s.frame_index for s in switches] == switched
