"""The node's parameters, declared once and without ROS: the table (names, defaults, descriptions,
constraints) that the node declares through rclpy, reading `config/samwise.yaml` (a ROS 2 params file)
into a dict, and building the model and tracker from it as the node does, so offline tools reproduce
the node."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import yaml

from .model import Samwise
from .runtime import resolve_device, resolve_precision
from .tracker import StreamTracker
from .weights import demo_weights

NODE_NAME = "samwise"


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

    @property
    def constraint_text(self) -> str:
        return f"one of: {', '.join(self.choices)}" if self.choices else self.constraint


# The node's parameters (docs/ros-interface.md, "Parameters"): read-only ones shape the tracker and the subscriptions
# and are fixed at start-up; dynamic ones can change at run time (`ros2 param set`).
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
    ParameterSpec("compile", False, "run the steady-state step (past the stream's first frames) through "
                  "torch.compile, with CUDA graphs on CUDA; the first steady frame waits for the compilation"),
    ParameterSpec("query", "", "initial referring expression (then the text_query topic)"),
    ParameterSpec("max_query_chars", 256, "longest accepted query; longer texts are rejected", dynamic=True,
                  check=lambda v: v >= 1, constraint="at least 1"),
    ParameterSpec("image_transport", "raw", "raw: subscribe to image; compressed: to image/compressed",
                  choices=("raw", "compressed")),
    ParameterSpec("image_reliability", "best_effort", "QoS reliability of the image, depth and camera_info "
                  "subscriptions", choices=("best_effort", "reliable", "system_default")),
    ParameterSpec("max_image_pixels", 4096 * 4096, "largest accepted image, width x height in pixels; larger "
                  "frames are rejected before they are processed", dynamic=True,
                  check=lambda v: v >= 1, constraint="at least 1"),
    ParameterSpec("queue_depth", 1, "frames waiting for the model; 1 keeps only the newest",
                  check=lambda v: v >= 1, constraint="at least 1"),
    ParameterSpec("use_depth", False, "pair depth + camera_info with the colour image for a 3-D centroid"),
    ParameterSpec("depth_scale", 0.001, "metres per 16UC1 depth unit", dynamic=True,
                  check=lambda v: v > 0.0, constraint="positive"),
    ParameterSpec("sync_slop", 0.05, "seconds: the largest stamp difference between a colour image and its depth",
                  dynamic=True, check=lambda v: v >= 0.0, constraint="0 or more"),
    ParameterSpec("publish_overlay", False, "publish the debug overlay image", dynamic=True),
    ParameterSpec("autostart", True, "walk the managed node to active at start-up (false: it waits, unconfigured, "
                  "for the lifecycle services)"),
)
PARAMETERS_BY_NAME = {spec.name: spec for spec in PARAMETERS}
DEFAULT_PARAMETERS = {spec.name: spec.default for spec in PARAMETERS}


def default_parameters_file() -> Path | None:
    """config/samwise.yaml of this source tree, else of an installed share/samwise_ros."""
    candidates = [Path(__file__).resolve().parent.parent / "config"]
    prefixes = [p for p in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep) if p] + [sys.prefix]
    candidates += [Path(prefix) / "share" / "samwise_ros" / "config" for prefix in prefixes]
    return next((c / "samwise.yaml" for c in candidates if (c / "samwise.yaml").is_file()), None)


def load_node_parameters(path=None) -> dict:
    """DEFAULT_PARAMETERS overridden by the `ros__parameters` of a ROS 2 params file.

    Entries for all nodes (`/**`) apply first, then those for the node (`samwise` or `/samwise`,
    any namespace). A value must have its default's type (an int is accepted for a float).
    Names the interface does not define are kept as they are (the node may declare more)."""
    parameters = dict(DEFAULT_PARAMETERS)
    if path is None:
        return parameters
    with open(path, encoding="utf-8") as stream:
        document = yaml.safe_load(stream) or {}
    if not isinstance(document, dict):
        raise ValueError(f"{path}: a ROS 2 parameters file maps node names to ros__parameters")
    sections = sorted((key for key in document if _applies_to_node(str(key))), key=lambda k: str(k) != "/**")
    for key in sections:
        values = (document[key] or {}).get("ros__parameters", {})
        for name, value in values.items():
            parameters[name] = _checked(path, name, value)
    return parameters


def override_parameters(parameters: dict, assignments: list[str]) -> dict:
    """Apply NAME=VALUE strings (values in YAML syntax, as `--ros-args -p` takes them)."""
    result = dict(parameters)
    for assignment in assignments:
        name, sep, text = assignment.partition("=")
        if not sep or not name:
            raise ValueError(f"expected NAME=VALUE, got {assignment!r}")
        result[name] = _checked("the command line", name, yaml.safe_load(text) if text else "")
    return result


def model_from_parameters(parameters: dict) -> Samwise:
    """The model the node loads: `checkpoint` (empty: the bundled demo weights) with `tokenizer`, on
    `device` in `precision`."""
    checkpoint = parameters["checkpoint"] or demo_weights()
    device = resolve_device(parameters["device"])
    precision = resolve_precision(parameters["precision"], device)
    model = Samwise.from_path(checkpoint, parameters["tokenizer"] or None, device, precision)
    if model.tokenizer is None:
        raise ValueError(f"checkpoint {checkpoint}: no tokenizer in it: set the tokenizer parameter to a directory "
                         "with the tokenizer files")
    return model


def tracker_from_parameters(model: Samwise, parameters: dict) -> StreamTracker:
    """A StreamTracker with the node's settings."""
    return StreamTracker(model, clip_length=parameters["clip_length"], mode=parameters["mode"],
                         frame_window=parameters["frame_window"] or None,  # 0: clip_length
                         mask_threshold=parameters["mask_threshold"], use_cme=parameters["use_cme"],
                         cme_window=parameters["cme_window"],
                         precision=model.precision, compile=parameters["compile"])


def _applies_to_node(key: str) -> bool:
    return key == "/**" or key.rstrip("/").split("/")[-1] == NODE_NAME


def _checked(source, name: str, value):
    """`value` with its parameter's type and within its constraint (names not in the table pass)."""
    spec = PARAMETERS_BY_NAME.get(name)
    if spec is None:
        return value
    if isinstance(spec.default, float) and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if type(value) is not type(spec.default):
        raise ValueError(f"{source}: parameter {name!r} must be {type(spec.default).__name__}, got {value!r}")
    problem = spec.problem(value)
    if problem:
        raise ValueError(f"{source}: parameter {problem}")
    return value
