"""The node's parameters file read outside ROS (what samwise-replay and the node share)."""

from pathlib import Path

import pytest

from samwise_ros.params import (DEFAULT_PARAMETERS, default_parameters_file, load_node_parameters,
                                override_parameters, tracker_from_parameters)

CONFIG = Path(__file__).resolve().parents[1] / "config" / "samwise.yaml"


def test_shipped_file_holds_the_interface_defaults():
    assert default_parameters_file() == CONFIG
    assert load_node_parameters(CONFIG) == DEFAULT_PARAMETERS
    assert load_node_parameters(None) == DEFAULT_PARAMETERS


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
                                                          "mask_threshold=0.6", "cme_window=5", "compile=true"])
    config = tiny_model.config.to_dict()
    tracker = tracker_from_parameters(tiny_model, parameters)
    assert (tracker.mode, tracker.clip_length, tracker.use_cme, tracker.mask_threshold) == ("frame", 3, False, 0.6)
    assert tracker.cme_window == 5 and tracker.compile and not tracker.compiled_step_active
    assert tiny_model.config.to_dict() == config  # running choices never reach what save() writes
