"""The parameter table through rclpy: descriptors and the checks of `ros2 param set` (the node's states:
test_lifecycle.py)."""

import math

from rclpy.parameter import Parameter

from samwise_ros.params import PARAMETERS, PARAMETERS_BY_NAME
from samwise_ros.ros.parameters import descriptor, validate_changes


def test_values_are_checked_against_their_constraints():
    assert validate_changes([Parameter("mask_threshold", value=0.7)], configurable=False).successful
    result = validate_changes([Parameter("mask_threshold", value=1.5)], configurable=True)
    assert not result.successful and "strictly between 0 and 1" in result.reason
    assert not validate_changes([Parameter("image_reliability", value="sometimes")], configurable=True).successful
    assert math.isfinite(PARAMETERS_BY_NAME["sync_slop"].default)


def test_structural_parameters_change_only_while_the_node_can_configure():
    assert {spec.name for spec in PARAMETERS if spec.dynamic} == {
        "mask_threshold", "max_query_chars", "max_image_pixels", "depth_scale", "sync_slop", "publish_overlay"}
    assert validate_changes([Parameter("mode", value="frame")], configurable=True).successful
    refused = validate_changes([Parameter("mode", value="frame")], configurable=False)
    assert not refused.successful and refused.reason == "mode applies at configure: deactivate and clean up first"
    assert not descriptor(PARAMETERS_BY_NAME["mode"]).read_only
    assert descriptor(PARAMETERS_BY_NAME["mode"]).additional_constraints.endswith("applies at configure (set it "
                                                                                  "while unconfigured)")
