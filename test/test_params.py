"""The node's parameters file read outside ROS (what samwise-replay and the node share)."""

import subprocess
import sys
from pathlib import Path

import pytest

import yaml

from samwise_ros.params import (DEFAULT_PARAMETERS, PARAMETERS, default_parameters_file, load_node_parameters,
                                markdown_table, override_parameters, parameters_file_text)
from samwise_ros.runtime import tracker_from_parameters

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "config" / "samwise.yaml"


def test_shipped_file_holds_the_interface_defaults():
    assert default_parameters_file() == CONFIG
    assert load_node_parameters(CONFIG) == DEFAULT_PARAMETERS
    assert load_node_parameters(None) == DEFAULT_PARAMETERS


def test_the_parameters_file_and_the_docs_table_are_written_from_the_table():
    """One source of every description: the shipped file and the docs' table are the table's own text."""
    assert CONFIG.read_text() == parameters_file_text()
    docs = (REPO / "docs" / "ros-interface.md").read_text()
    assert markdown_table() in docs
    values = yaml.safe_load(CONFIG.read_text())["/**/samwise"]["ros__parameters"]
    assert list(values) == [spec.name for spec in PARAMETERS]
    for spec in PARAMETERS:
        assert values[spec.name] == spec.default and type(values[spec.name]) is type(spec.default), spec.name
        assert spec.description and spec.problem(spec.default) is None


def test_the_table_loads_without_torch():
    """Launch files read it: a launch must not import torch and sam2 to describe the node's arguments."""
    check = "import sys, samwise_ros.params; print(sorted({'torch', 'sam2', 'rclpy'} & set(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == "[]", done.stdout + done.stderr


def test_an_unknown_name_on_the_command_line_names_the_closest_parameter():
    with pytest.raises(ValueError, match=r"unknown parameter 'mask_treshold' \(did you mean 'mask_threshold'\?\)"):
        override_parameters(DEFAULT_PARAMETERS, ["mask_treshold=0.9"])
    with pytest.raises(ValueError, match=r"unknown parameter 'nonsense'$"):
        override_parameters(DEFAULT_PARAMETERS, ["nonsense=1"])


def test_wildcard_then_node_sections(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("/**:\n  ros__parameters:\n    clip_length: 4\n    device: cpu\n"
                    "/robot/samwise:\n  ros__parameters:\n    clip_length: 2\n    depth_scale: 1\n"
                    "other_node:\n  ros__parameters:\n    mode: frame\n")
    parameters = load_node_parameters(path)
    assert parameters["clip_length"] == 2 and parameters["device"] == "cpu" and parameters["mode"] == "clip"
    assert parameters["depth_scale"] == 1.0 and isinstance(parameters["depth_scale"], float)


def test_wrong_types_are_errors(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("samwise:\n  ros__parameters:\n    use_cme: 'yes'\n")
    with pytest.raises(ValueError, match="use_cme"):
        load_node_parameters(path)
    with pytest.raises(ValueError, match="clip_length"):
        override_parameters(DEFAULT_PARAMETERS, ["clip_length=2.5"])
    with pytest.raises(ValueError, match="NAME=VALUE"):
        override_parameters(DEFAULT_PARAMETERS, ["clip_length"])


def test_values_outside_the_node_constraints_are_errors(tmp_path):
    """The node's own checks (one table): the replay refuses what the node would refuse."""
    with pytest.raises(ValueError, match="mask_threshold must be strictly between 0 and 1, got 1.5"):
        override_parameters(DEFAULT_PARAMETERS, ["mask_threshold=1.5"])
    with pytest.raises(ValueError, match="mode must be one of clip, frame, got 'batch'"):
        override_parameters(DEFAULT_PARAMETERS, ["mode=batch"])
    path = tmp_path / "p.yaml"
    path.write_text("samwise:\n  ros__parameters:\n    clip_length: 0\n")
    with pytest.raises(ValueError, match="clip_length must be at least 1"):
        load_node_parameters(path)


def test_tracker_gets_the_node_settings(tiny_model):
    parameters = override_parameters(DEFAULT_PARAMETERS, ["mode=frame", "clip_length=3", "use_cme=false",
                                                          "mask_threshold=0.6", "cme_window=5"])
    config = tiny_model.config.to_dict()
    tracker = tracker_from_parameters(tiny_model, parameters)
    assert (tracker.mode, tracker.clip_length, tracker.use_cme, tracker.mask_threshold) == ("frame", 3, False, 0.6)
    assert tracker.cme_window == 5 and not tracker.compile
    assert tiny_model.config.to_dict() == config  # running choices never reach what save() writes
