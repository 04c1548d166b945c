"""The node's parameters through rclpy: the table of samwise_ros/params.py declared with descriptors,
and its constraints enforced on `ros2 param set`.

Read-only parameters are fixed at start-up (set them with `--ros-args -p name:=value` or a parameters
file); dynamic ones can change at run time (`ros2 param set /samwise mask_threshold 0.7`).
"""

from __future__ import annotations

from types import SimpleNamespace

from rcl_interfaces.msg import ParameterDescriptor, SetParametersResult
from rclpy.node import Node
from rclpy.parameter import Parameter

from ..params import PARAMETERS, PARAMETERS_BY_NAME, ParameterSpec


def descriptor(spec: ParameterSpec) -> ParameterDescriptor:
    return ParameterDescriptor(description=spec.description, additional_constraints=spec.constraint_text,
                               read_only=not spec.dynamic)


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


def validate_changes(parameters: list[Parameter]) -> SetParametersResult:
    """An on-set-parameters callback: refuses values outside a parameter's constraint (rclpy itself
    refuses read-only parameters and type changes)."""
    for parameter in parameters:
        spec = PARAMETERS_BY_NAME.get(parameter.name)
        problem = spec.problem(parameter.value) if spec is not None else None
        if problem:
            return SetParametersResult(successful=False, reason=problem)
    return SetParametersResult(successful=True)
