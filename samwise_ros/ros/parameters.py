"""The node's parameters through rclpy: the table of samwise_ros/params.py declared with descriptors,
and its constraints enforced on `ros2 param set`.

Dynamic parameters change at any time (`ros2 param set /samwise mask_threshold 0.7`). Structural ones
shape the model, the tracker and the subscriptions: they change only while the node is unconfigured
and apply at the next configure (as with yolo_ros and Isaac ROS, a managed node's way to change them
without a restart).
"""

from __future__ import annotations

from types import SimpleNamespace

from rcl_interfaces.msg import ParameterDescriptor, SetParametersResult
from rclpy.node import Node
from rclpy.parameter import Parameter

from ..params import PARAMETERS, PARAMETERS_BY_NAME, ParameterSpec


def descriptor(spec: ParameterSpec) -> ParameterDescriptor:
    applies = "applies at once" if spec.dynamic else "applies at configure (set it while unconfigured)"
    constraints = f"{spec.constraint_text}; {applies}" if spec.constraint_text else applies
    return ParameterDescriptor(description=spec.description, additional_constraints=constraints)


def declare_parameters(node: Node) -> SimpleNamespace:
    """Declare every parameter (overrides from the command line or a file apply here), check the
    values, and return them as attributes. Raises ValueError naming the first bad value."""
    settings = SimpleNamespace()
    for spec in PARAMETERS:
        value = node.declare_parameter(spec.name, spec.default, descriptor(spec)).value
        problem = spec.problem(value)
        if problem:
            raise ValueError(f"parameter {problem}")
        setattr(settings, spec.name, value)
    return settings


def validate_changes(parameters: list[Parameter], configurable: bool) -> SetParametersResult:
    """What an on-set-parameters callback answers: values outside a parameter's constraint are refused, and
    structural ones unless `configurable` (the node is unconfigured); rclpy itself refuses type changes."""
    for parameter in parameters:
        spec = PARAMETERS_BY_NAME.get(parameter.name)
        if spec is None:
            continue
        problem = spec.problem(parameter.value)
        if problem is None and not (spec.dynamic or configurable):
            problem = f"{spec.name} applies at configure: deactivate and clean up first"
        if problem:
            return SetParametersResult(successful=False, reason=problem)
    return SetParametersResult(successful=True)
