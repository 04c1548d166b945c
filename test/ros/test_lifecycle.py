"""The managed node across processes: its lifecycle services configure, activate, deactivate, clean
up and configure it again; only an active node publishes its outputs."""

import pytest
from diagnostic_msgs.msg import DiagnosticArray
from lifecycle_msgs.msg import State, Transition
from lifecycle_msgs.srv import ChangeState, GetState
from sensor_msgs.msg import Image

from helpers.ros_harness import (QUERY, RosPeer, bgr_image, node_arguments, stamp_seconds, start_node,
                         unique_domain_id, unique_namespace)


@pytest.fixture(scope="module")
def model(present_model_dir):
    return present_model_dir


@pytest.fixture
def managed(model):
    """A node started with autostart false, and a peer with its lifecycle clients."""
    domain, namespace = unique_domain_id(), unique_namespace("samwise_lifecycle")
    node = start_node(node_arguments(namespace, checkpoint=model, device="cpu", mode="frame", query=QUERY,
                                     image_reliability="reliable", queue_depth=30, autostart=False), domain)
    peer = RosPeer(domain, namespace)
    peer.subscribe(Image, "mask")
    peer.subscribe(DiagnosticArray, "/diagnostics")
    peer.image = peer.publisher(Image, "image")
    peer.get_state = peer.node.create_client(GetState, "samwise/get_state")
    peer.change_state = peer.node.create_client(ChangeState, "samwise/change_state")
    try:
        yield peer
        node.stop_cleanly()
    finally:
        peer.close()
        node.stop()


def state(peer) -> int:
    return peer.call(peer.get_state, GetState.Request()).current_state.id


def transition(peer, transition_id: int) -> None:
    request = ChangeState.Request(transition=Transition(id=transition_id))
    assert peer.call(peer.change_state, request, timeout=60.0).success


def diagnostics(peer) -> dict:
    arrays = peer.messages("/diagnostics")
    return {kv.key: kv.value for kv in arrays[-1].status[0].values} if arrays else {}


def send_ignored_frames(peer, stamps: list[float]) -> None:
    """Frames for an inactive node: sent, and seen ignored in its diagnostics."""
    before = int(diagnostics(peer).get("frames ignored (inactive)", 0))
    for index, seconds in enumerate(stamps):
        peer.image.publish(bgr_image(index, seconds))
    peer.wait_for(lambda: int(diagnostics(peer).get("frames ignored (inactive)", 0)) >= before + len(stamps), 20,
                  "the inactive node counting the frames it ignores")


def masks_for(peer, stamps: list[float]) -> list[float]:
    """Send frames to an active node and return the stamps of every mask received so far."""
    for index, seconds in enumerate(stamps):
        peer.image.publish(bgr_image(index, seconds))
    peer.wait_for_messages("mask", 1, where=lambda msg: stamp_seconds(msg.header) == stamps[-1])
    return sorted(stamp_seconds(msg.header) for msg in peer.messages("mask"))


def test_only_an_active_node_publishes_and_cleanup_unloads_it(managed):
    assert state(managed) == State.PRIMARY_STATE_UNCONFIGURED
    assert managed.node.count_publishers("mask") == 0  # nothing is opened before configure

    transition(managed, Transition.TRANSITION_CONFIGURE)
    assert state(managed) == State.PRIMARY_STATE_INACTIVE
    send_ignored_frames(managed, [1.0, 1.1])

    transition(managed, Transition.TRANSITION_ACTIVATE)
    assert masks_for(managed, [2.0, 2.1]) == [2.0, 2.1]

    transition(managed, Transition.TRANSITION_DEACTIVATE)
    send_ignored_frames(managed, [3.0])
    transition(managed, Transition.TRANSITION_ACTIVATE)
    assert masks_for(managed, [4.0]) == [2.0, 2.1, 4.0]  # nothing of the frames sent while inactive

    transition(managed, Transition.TRANSITION_DEACTIVATE)
    transition(managed, Transition.TRANSITION_CLEANUP)
    assert state(managed) == State.PRIMARY_STATE_UNCONFIGURED
    managed.wait_for(lambda: managed.node.count_publishers("mask") == 0, 20, "the mask publisher to go")

    transition(managed, Transition.TRANSITION_CONFIGURE)  # the model loads again
    transition(managed, Transition.TRANSITION_ACTIVATE)
    assert masks_for(managed, [5.0])[-1] == 5.0
