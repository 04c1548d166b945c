"""spin_until_shutdown, which main() of samwise_node and samwise_player spin with: a Ctrl-C that lands
while a callback publishes ends the process cleanly; a real failure in a callback still surfaces."""

import pytest
import rclpy
from rclpy.executors import SingleThreadedExecutor
from std_msgs.msg import String

from ros_harness import unique_domain_id, unique_namespace
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
