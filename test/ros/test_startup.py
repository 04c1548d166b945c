"""Start-up: --help; a failure exits non-zero with one clear line naming the problem (no traceback); a
signal while the model loads or compiles ends the node cleanly."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from helpers.ros_harness import (HELPERS_DIR, QUERY, START_TIMEOUT_S, node_arguments, ros_environment, start_node,
                                 unique_domain_id, unique_namespace)
from helpers.slow_node import LOADING
from samwise_ros.tools.processes import ros_arguments

EXECUTABLES = Path(sys.executable).parent
COMPILING_CPU_S = 15.0  # loading the tiny model and its eager warm-up take a few seconds, compiling a minute


@pytest.fixture(scope="module")
def broken_checkpoints(tmp_path_factory, tokenizer):
    from helpers.fixtures import save_tiny_model

    root = tmp_path_factory.mktemp("broken")
    corrupt_directory = save_tiny_model(root / "corrupt_model", tokenizer)
    (corrupt_directory / "model.safetensors").write_bytes(b"\x00garbage" * 10)
    released = root / "final_model_mevis.pth"
    released.write_bytes(b"a released checkpoint")  # refused before it is read
    return {
        "missing": (dict(checkpoint=str(root / "missing_model")), rf"checkpoint {root}/missing_model: file not found"),
        "corrupt directory": (dict(checkpoint=str(corrupt_directory)),
                              rf"model directory {corrupt_directory}: model.safetensors is corrupt"),
        "released .pth without a tokenizer": (
            dict(checkpoint=str(released)),
            rf"checkpoint {released}: a released \.pth carries no tokenizer: set the tokenizer parameter"),
    }


BAD_PARAMETERS = {  # name: (parameters, the one line)
    "a value outside its choices": (dict(mode="batch"), r"parameter mode must be one of clip, frame, got 'batch'"),
    "a value outside its range": (dict(clip_length=0), r"parameter clip_length must be at least 1, got 0"),
    "an over-long initial query": (dict(query="x" * 300), r"parameter query: the query has 300 characters, more "
                                                          r"than max_query_chars \(256\)"),
}
if not torch.cuda.is_available():
    BAD_PARAMETERS["a CUDA device without CUDA"] = (dict(device="cuda"),
                                                    r"device 'cuda' requested but CUDA is not available")


def assert_one_fatal_line(process, line: str) -> None:
    assert process.popen.wait(120) == 1, process.tail()
    process.wait_for_line(r"\[FATAL\].*\[samwise\]: cannot start: " + line, timeout=5)
    errors = [text for text in process.lines if "cannot start" in text or "Traceback" in text or "ERROR" in text]
    assert len(errors) == 1, process.tail()


def test_a_missing_corrupt_or_tokenizer_less_checkpoint_stops_the_node_with_one_clear_line(broken_checkpoints):
    domain = unique_domain_id()
    cases = {name: (start_node(node_arguments(unique_namespace("startup"), device="cpu", **parameters), domain),
                    line) for name, (parameters, line) in broken_checkpoints.items()}
    for name, (process, line) in cases.items():
        assert_one_fatal_line(process, line)


def test_a_bad_parameter_stops_the_node_with_one_clear_line():
    domain = unique_domain_id()
    cases = [(start_node(node_arguments(unique_namespace("startup"), **parameters), domain), line)
             for parameters, line in BAD_PARAMETERS.values()]
    for process, line in cases:
        assert_one_fatal_line(process, line)


@pytest.mark.parametrize("content, problem", [(None, "No such file or directory"),
                                              ("/**:\n  ros__parameters: [\n", "not a YAML file")])
def test_a_missing_or_malformed_parameters_file_is_one_line(tmp_path, content, problem):
    params_file = tmp_path / "robot.yaml"
    if content is not None:
        params_file.write_text(content)
    process = start_node(ros_arguments(unique_namespace("params_file"), params_file), unique_domain_id())
    assert_one_fatal_line(process, rf"--params-file {params_file}: {problem}")
    assert len([line for line in process.lines if line.strip()]) == 1, process.tail()


@pytest.mark.parametrize("executable, mentions", [
    ("samwise_node", ("usage: samwise_node", "mask_threshold (default 0.5, at once)", "text_query:", "~/reset")),
    ("samwise_player", ("usage: samwise_player", "rate (default 10.0)", "wait_for_subscribers")),
])
def test_help_prints_the_usage_and_starts_nothing(executable, mentions):
    """--help must not load a model or publish frames into a real pipeline."""
    done = subprocess.run([str(EXECUTABLES / executable), "--help"], env=ros_environment(unique_domain_id()),
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stderr == "", done.stderr
    for text in mentions:
        assert text in done.stdout, done.stdout
    assert "playing" not in done.stdout and "ready" not in done.stdout


@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_while_the_model_loads_stops_the_node_cleanly(stop_signal):
    """The model would take 10 minutes to load: Ctrl-C or SIGTERM ends the node without waiting for it,
    cleanly (NodeProcess.stop_cleanly)."""
    command = [sys.executable, str(HELPERS_DIR / "slow_node.py"), "--load-delay", "600"]
    node = start_node(node_arguments(unique_namespace("loading"), device="cpu"), unique_domain_id(), command)
    try:
        node.wait_for_line(LOADING, timeout=START_TIMEOUT_S)
        node.stop_cleanly(stop_signal)
    finally:
        node.stop()


def cpu_seconds(pid: int) -> float:
    """CPU time a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@pytest.mark.parametrize("phase, cpu_s", [("loading", 0.0), ("compiling", COMPILING_CPU_S)])
def test_a_signal_while_the_node_loads_or_compiles_stops_it_cleanly(present_model_dir, phase, cpu_s):
    """Configure loads the model (native code: safetensors, torch), then compiles the steady step for minutes
    on a CPU: Ctrl-C at either moment ends the node at once with exit 0, no error and nothing left in
    /dev/shm (not a failed start, nor "terminate called" and a core dump). The compilation is under way
    once the node has used far more CPU time than loading and the eager warm-up take."""
    node = start_node(node_arguments(unique_namespace("compiling"), checkpoint=present_model_dir, device="cpu",
                                     mode="frame", compile=True, query=QUERY), unique_domain_id())
    try:
        node.wait_for_line(r"compiling the steady step", timeout=START_TIMEOUT_S)
        deadline = time.monotonic() + START_TIMEOUT_S
        while cpu_seconds(node.pid) < cpu_s:
            assert time.monotonic() < deadline and node.running(), node.tail()
            time.sleep(0.2)
        assert not node.said("ready:"), f"compiled before the signal: {phase} was not interrupted"
        node.stop_cleanly(signal.SIGINT)
    finally:
        node.stop()
