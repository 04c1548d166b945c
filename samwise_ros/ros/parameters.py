"""The parameters of the samwise node: one table, declared once, validated in one place.

Read-only parameters shape the tracker and the subscriptions and are fixed at start-up (set them with
`--ros-args -p name:=value` or a parameters file); dynamic ones can change at run time
(`ros2 param set /samwise mask_threshold 0.7`).
"""

from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any, Callable

from rcl_interfaces.msg import ParameterDescriptor, SetParametersResult
from rclpy.node import Node
from rclpy.parameter import Parameter


@dataclass(frozen=True)
class ParameterSpec:
    name: str
    default: bool | int | float | str  # its type is the parameter's type
    description: str
    dynamic: bool = False  # may change while the node runs
    choices: tuple[str, ...] = ()
    check: Callable[[Any], bool] | None = None  # a value test, explained by `constraint`
    constraint: str = ""

    def problem(self, value: Any) -> str | None:
        """Why `value` is not acceptable, or None."""
        if self.choices and value not in self.choices:
            return f"{self.name} must be one of {', '.join(self.choices)}, got {value!r}"
        if self.check is not None and not self.check(value):
            return f"{self.name} must be {self.constraint}, got {value!r}"
        return None

    def descriptor(self) -> ParameterDescriptor:
        constraints = f"one of: {', '.join(self.choices)}" if self.choices else self.constraint
        return ParameterDescriptor(description=self.description, additional_constraints=constraints,
                                   read_only=not self.dynamic)


PARAMETERS = (
    ParameterSpec("checkpoint", "", "model: a directory saved by samwise_ros, or a released SAMWISE .pth "
                  "(empty = the bundled demo weights)"),
    ParameterSpec("tokenizer", "", "tokenizer directory for a released .pth (a saved directory carries its own)"),
    ParameterSpec("device", "auto", "auto (CUDA when present), cuda:N or cpu"),
    ParameterSpec("precision", "auto", "compute precision; auto is bf16 on CUDA and fp32 on the CPU",
                  choices=("auto", "fp32", "bf16", "fp16")),
    ParameterSpec("mode", "clip", "clip: T-frame batches, as the release (results when a clip completes); "
                  "frame: a result for every frame as it arrives", choices=("clip", "frame")),
    ParameterSpec("clip_length", 8, "T, frames per clip", check=lambda v: v >= 1, constraint="at least 1"),
    ParameterSpec("frame_window", 0, "frame mode: frames the adapters' attention sees (0 = clip_length)",
                  check=lambda v: v >= 0, constraint="0 or more"),
    ParameterSpec("mask_threshold", 0.5, "threshold on the mask probability", dynamic=True,
                  check=lambda v: 0.0 < v < 1.0, constraint="strictly between 0 and 1"),
    ParameterSpec("use_cme", True, "run the Conditional Memory Encoder"),
    ParameterSpec("cme_window", 4, "CME decision window (frames)", check=lambda v: v >= 1, constraint="at least 1"),
    ParameterSpec("query", "", "initial referring expression (then the text_query topic)"),
    ParameterSpec("max_query_chars", 256, "longest accepted query; longer texts are rejected", dynamic=True,
                  check=lambda v: v >= 1, constraint="at least 1"),
    ParameterSpec("image_transport", "raw", "raw: subscribe to image; compressed: to image/compressed",
                  choices=("raw", "compressed")),
    ParameterSpec("image_reliability", "best_effort", "QoS reliability of the image, depth and camera_info "
                  "subscriptions", choices=("best_effort", "reliable", "system_default")),
    ParameterSpec("queue_depth", 1, "frames waiting for the model; 1 keeps only the newest",
                  check=lambda v: v >= 1, constraint="at least 1"),
    ParameterSpec("use_depth", False, "pair depth + camera_info with the colour image for a 3-D centroid"),
    ParameterSpec("depth_scale", 0.001, "metres per 16UC1 depth unit", dynamic=True,
                  check=lambda v: v > 0.0, constraint="positive"),
    ParameterSpec("sync_slop", 0.05, "seconds: the largest stamp difference between a colour image and its depth",
                  dynamic=True, check=lambda v: v >= 0.0, constraint="0 or more"),
    ParameterSpec("publish_overlay", False, "publish the debug overlay image", dynamic=True),
)
PARAMETERS_BY_NAME = {spec.name: spec for spec in PARAMETERS}


def declare_parameters(node: Node) -> SimpleNamespace:
    """Declare every parameter (overrides from the command line or a file apply here), check the
    values, and return them as attributes. Raises ValueError naming the first bad value."""
    settings = SimpleNamespace()
    for spec in PARAMETERS:
        value = node.declare_parameter(spec.name, spec.default, spec.descriptor()).value
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
