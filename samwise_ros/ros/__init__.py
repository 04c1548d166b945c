"""The ROS 2 layer of samwise_ros: the `samwise_node` node and its player, on top of StreamTracker.

Everything here is about ROS (messages, parameters, QoS, threads); the segmentation itself lives in
samwise_ros.tracker and below, which never import rclpy.
"""
