"""The node's parameters outside ROS: read `config/samwise.yaml` (a ROS 2 params file) into a dict, and
build the model and tracker from it exactly as the node does, so offline tools reproduce the node."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import yaml

from .model import Samwise
from .runtime import resolve_device, resolve_precision
from .tracker import StreamTracker

NODE_NAME = "samwise"

# Defaults of the ROS interface (README, "Parameters"): what the node uses for a name the file omits.
DEFAULT_PARAMETERS = {
    "checkpoint": "",
    "tokenizer": "",
    "device": "auto",
    "precision": "auto",
    "mode": "clip",
    "clip_length": 8,
    "frame_window": 0,
    "mask_threshold": 0.5,
    "use_cme": True,
    "cme_window": 4,
    "query": "",
    "max_query_chars": 256,
    "image_transport": "raw",
    "image_reliability": "best_effort",
    "queue_depth": 1,
    "use_depth": False,
    "depth_scale": 0.001,
    "sync_slop": 0.05,
    "publish_overlay": False,
}


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
    """The model the node would load: `checkpoint` (+ `tokenizer`) on `device` in `precision`."""
    if not parameters["checkpoint"]:
        raise ValueError("no checkpoint: set the `checkpoint` parameter (no demo weights are bundled yet)")
    device = resolve_device(parameters["device"])
    precision = resolve_precision(parameters["precision"], device)
    return Samwise.from_path(parameters["checkpoint"], parameters["tokenizer"] or None, device, precision)


def tracker_from_parameters(model: Samwise, parameters: dict) -> StreamTracker:
    """A StreamTracker with the node's settings (the CME window is a setting of the model's forward)."""
    model.config.cme_decision_window = parameters["cme_window"]
    return StreamTracker(model, clip_length=parameters["clip_length"], mode=parameters["mode"],
                         frame_window=parameters["frame_window"] or None,  # 0: clip_length
                         mask_threshold=parameters["mask_threshold"], use_cme=parameters["use_cme"])


def _applies_to_node(key: str) -> bool:
    return key == "/**" or key.rstrip("/").split("/")[-1] == NODE_NAME


def _checked(source, name: str, value):
    default = DEFAULT_PARAMETERS.get(name)
    if default is None:
        return value
    if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if type(value) is not type(default):
        raise ValueError(f"{source}: parameter {name!r} must be {type(default).__name__}, got {value!r}")
    return value
