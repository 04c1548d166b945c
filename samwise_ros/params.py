"""The node's parameters, declared once, without ROS or torch: the table (names, defaults, descriptions,
constraints) that the node declares through rclpy and the launch files read, and reading
`config/samwise.yaml` (a ROS 2 params file) into a dict as the node would, so that offline tools
reproduce the node (samwise_ros/runtime.py builds the model and tracker from it).

The table is the one source of the parameters' descriptions: `config/samwise.yaml` and the table in
docs/ros-interface.md are written from it (`python -m samwise_ros.params yaml|markdown`), and a test
fails when they drift."""

from __future__ import annotations

import difflib
import os
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import yaml

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


# The node's parameters (docs/ros-interface.md, "Parameters"): structural ones shape the tracker and the
# subscriptions and apply at configure (they may change while the node is unconfigured); dynamic ones apply
# at once (`ros2 param set`).
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
                  "torch.compile, with CUDA graphs on CUDA; compiled at configure for every query length, so a "
                  "stream never waits for it (configure takes minutes on a CPU)"),
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
    """Apply NAME=VALUE strings (values in YAML syntax, as `--ros-args -p` takes them); a NAME that is not
    a parameter of the node is an error that names the closest one."""
    result = dict(parameters)
    for assignment in assignments:
        name, sep, text = assignment.partition("=")
        if not sep or not name:
            raise ValueError(f"expected NAME=VALUE, got {assignment!r}")
        problem = unknown_name_problem(name)
        if problem:
            raise ValueError(f"the command line: {problem}")
        result[name] = _checked("the command line", name, yaml.safe_load(text) if text else "")
    return result


def closest_name(name: str) -> str | None:
    """The parameter whose name is nearest `name` (a typo's likely meaning), or None."""
    matches = difflib.get_close_matches(name, PARAMETERS_BY_NAME, n=1, cutoff=0.6)
    return matches[0] if matches else None


def unknown_name_problem(name: str) -> str | None:
    """Why `name` is not a parameter of the node (naming the closest one), or None when it is one."""
    if name in PARAMETERS_BY_NAME:
        return None
    closest = closest_name(name)
    return f"unknown parameter {name!r}" + (f" (did you mean {closest!r}?)" if closest else "")


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


# ---- the files written from the table ---------------------------------------------------------------

PARAMETERS_FILE_HEADER = """\
# Parameters of the samwise node, written from samwise_ros/params.py (python -m samwise_ros.params yaml):
# edit the table there. Structural parameters apply at configure; the ones marked "at once" while it runs.
# ros2 run samwise_ros samwise_node --ros-args --params-file config/samwise.yaml
# "/**/samwise" applies to a node named samwise in any namespace (a plain "samwise" only to /samwise).
/**/samwise:
  ros__parameters:
"""


def _yaml_value(value) -> str:
    return yaml.safe_dump(value, default_style='"' if value == "" else None).strip().removesuffix("\n...").strip()


def _applies(spec: ParameterSpec) -> str:
    return "at once" if spec.dynamic else "at configure"


def parameters_file_text() -> str:
    """config/samwise.yaml: every parameter with its default, its description above it."""
    lines = [PARAMETERS_FILE_HEADER.rstrip("\n")]
    for spec in PARAMETERS:
        constraint = f"; {spec.constraint_text}" if spec.constraint_text else ""
        comment = f"{spec.description} ({_applies(spec)}{constraint})"
        lines += textwrap.wrap(comment, 104, initial_indent="    # ", subsequent_indent="    #   ")
        lines.append(f"    {spec.name}: {_yaml_value(spec.default)}")
    return "\n".join(lines) + "\n"


def markdown_table() -> str:
    """The parameter table of docs/ros-interface.md."""
    rows = ["| name | default | applies | meaning |", "|---|---|---|---|"]
    for spec in PARAMETERS:
        default = "`\"\"`" if spec.default == "" else f"`{_yaml_value(spec.default)}`"
        constraint = f" ({spec.constraint_text})" if spec.constraint_text else ""
        rows.append(f"| `{spec.name}` | {default} | {_applies(spec)} | {spec.description}{constraint} |")
    return "\n".join(rows) + "\n"


if __name__ == "__main__":
    outputs = {"yaml": parameters_file_text, "markdown": markdown_table}
    if len(sys.argv) != 2 or sys.argv[1] not in outputs:
        sys.exit(f"usage: python -m samwise_ros.params {{{','.join(outputs)}}}")
    sys.stdout.write(outputs[sys.argv[1]]())
