"""A node with the compiled steady step across processes: it compiles at configure, then publishes without a
gap through new queries of other token lengths (nothing compiles while it is active)."""

import itertools
import threading
import time

from diagnostic_msgs.msg import DiagnosticArray
from sensor_msgs.msg import Image
from std_msgs.msg import String

from helpers.ros_harness import (QUERY, RosPeer, bgr_image, node_arguments, start_node, unique_domain_id,
                                 unique_namespace)
from samwise_ros.msg import Segmentation

COMPILE_TIMEOUT_S = 400.0  # loading and compiling the tiny model on a loaded 2-core machine
CAMERA_HZ = 10.0
LARGEST_GAP_S = 2.0
# 4 and 29 tokens: the shortest token bucket (16), as QUERY (9), and the next (32)
NEXT_QUERIES = ("the ball", "the big red ball in the middle of the picture on the left side")
SECONDS_PER_QUERY = 4.0


def publish_camera(stop: threading.Event, image) -> None:
    for index in itertools.count():
        if stop.wait(1.0 / CAMERA_HZ):
            return
        image.publish(bgr_image(index % 4, 1000.0 + index / CAMERA_HZ, 48, 64))


def test_a_compiled_node_publishes_without_a_gap_through_queries_of_other_lengths(present_model_dir):
    domain, namespace = unique_domain_id(), unique_namespace("samwise_compiled")
    node = start_node(node_arguments(namespace, checkpoint=present_model_dir, device="cpu", mode="frame", compile=True,
                                     query=QUERY, image_reliability="reliable"), domain)
    peer = RosPeer(domain, namespace)
    image, text = peer.publisher(Image, "image"), peer.publisher(String, "text_query")
    stop_camera = threading.Event()
    camera = threading.Thread(target=publish_camera, args=(stop_camera, image))
    try:
        peer.subscribe(Segmentation, "result")
        peer.subscribe(DiagnosticArray, "/diagnostics")
        node.wait_for_line(r"ready: .*compiled step compiled at configure \(\d+ s\) for queries of up to 128 tokens",
                           timeout=COMPILE_TIMEOUT_S)
        peer.wait_for(lambda: image.get_subscription_count() and text.get_subscription_count(), 20, "the node")
        camera.start()
        peer.wait_for_messages("result", 1)
        for query in NEXT_QUERIES:
            time.sleep(SECONDS_PER_QUERY)  # the stream runs on, through its warm-up into the compiled step
            text.publish(String(data=query))
        time.sleep(SECONDS_PER_QUERY)
        received = peer.received["result"]
        arrivals = [arrival for arrival, _ in received]
        gaps = [later - earlier for earlier, later in zip(arrivals, arrivals[1:])]
        assert max(gaps) <= LARGEST_GAP_S, f"a {max(gaps):.1f} s gap between results"
        tracked = [msg.query for _, msg in received]
        assert set(tracked) == {QUERY, *NEXT_QUERIES}
        for query in (QUERY, *NEXT_QUERIES):  # each query reached the compiled step, past its eager warm-up
            assert max(msg.frame_index for _, msg in received if msg.query == query) >= 20, query
        states = {kv.value for array in peer.messages("/diagnostics") for kv in array.status[0].values
                  if kv.key == "compiled step"}
        assert any(state.endswith(": active") for state in states), states
        stop_camera.set()
        camera.join()
        node.stop_cleanly()
    finally:
        stop_camera.set()
        if camera.is_alive():
            camera.join()
        peer.close()
        node.stop()
