"""spin_until_shutdown, which main() of samwise_node spins with: a Ctrl-C that lands while a callback
publishes ends the process cleanly; a real failure in a callback still surfaces. spin_until_signal,
which samwise_player spins with: SIGINT and SIGTERM end it cleanly, every time."""

import os
import signal
import sys
import time

import pytest
import rclpy
from rclpy.executors import SingleThreadedExecutor
from std_msgs.msg import String

from ros_harness import start_node, unique_domain_id, unique_namespace
from samwise_ros.ros.demo_pipeline import ros_arguments
from samwise_ros.ros.player import END_OF_VIDEO
from samwise_ros.ros.spinning import spin_until_shutdown


def executor_with_timer(callback_body):
    """An executor over one node whose timer runs callback_body(context, publisher) every 10 ms."""
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=unique_domain_id())
    node = rclpy.create_node("spinning_test", context=context, namespace=unique_namespace("spinning"))
    publisher = node.create_publisher(String, "chatter", 1)
    node.create_timer(0.01, lambda: callback_body(context, publisher))
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    return executor, node, context


def close(executor, node, context):
    executor.shutdown()
    node.destroy_node()
    rclpy.try_shutdown(context=context)


def shut_down_then_publish(context, publisher):
    context.shutdown()  # what rclpy's SIGINT handler does to a callback in the middle of its work
    publisher.publish(String(data="one frame too late"))


def test_a_publish_racing_the_shutdown_ends_the_spin_quietly():
    executor, node, context = executor_with_timer(shut_down_then_publish)
    with pytest.raises(Exception, match="context is invalid|destruction was requested"):  # the race, spun plainly
        executor.spin()
    close(executor, node, context)

    executor, node, context = executor_with_timer(shut_down_then_publish)
    spin_until_shutdown(executor)
    assert not context.ok()
    close(executor, node, context)


def test_a_failing_callback_on_a_live_context_is_raised():
    def fail(context, publisher):
        raise ValueError("a real bug")

    executor, node, context = executor_with_timer(fail)
    with pytest.raises(ValueError, match="a real bug"):
        spin_until_shutdown(executor)
    close(executor, node, context)


@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGTERM])
def test_the_player_stops_cleanly_on_a_signal(stop_signal):
    """Exit status 0 and no shared memory left behind. (With rclpy's own signal handling, destroying the
    node after a Ctrl-C crashed the player with SIGSEGV in about one run in four when it was started from
    a plain script, leaving its Fast DDS segments in /dev/shm; under pytest that crash did not show.)"""
    arguments = ros_arguments(unique_namespace("player"), loop=False, scene_frames=8, rate=20.0)
    player = start_node(arguments, unique_domain_id(), command=[sys.executable, "-m", "samwise_ros.ros.player"])
    try:
        player.wait_for_line(END_OF_VIDEO)
        segments = player.shm_segments()
        assert segments, "the player should use Fast DDS shared memory (config/fastdds_shm.xml)"
        time.sleep(0.2)  # idle: the timer is cancelled, the executor waits
    finally:
        assert player.stop(stop_signal=stop_signal) == 0, player.tail()
    assert not [s for s in segments if os.path.exists(s)], "shared-memory segments left in /dev/shm"
