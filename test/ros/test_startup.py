"""Start-up: a failure exits non-zero with one clear line naming the problem (no traceback); a signal
while the model loads ends the node cleanly."""

import signal
import sys

import pytest

from helpers.ros_harness import START_TIMEOUT_S, HELPERS_DIR, node_arguments, start_node, unique_domain_id, unique_namespace
from helpers.slow_node import LOADING


@pytest.fixture(scope="module")
def broken_checkpoints(tmp_path_factory, tokenizer):
    from helpers.fixtures import save_tiny_model

    root = tmp_path_factory.mktemp("broken")
    corrupt_directory = save_tiny_model(root / "corrupt_model", tokenizer)
    (corrupt_directory / "model.safetensors").write_bytes(b"\x00garbage" * 10)
    return {
        "missing": (str(root / "missing_model"), rf"checkpoint {root}/missing_model: file not found"),
        "corrupt directory": (str(corrupt_directory),
                              rf"model directory {corrupt_directory}: model.safetensors is corrupt"),
    }


def test_a_missing_or_corrupt_checkpoint_stops_the_node_with_one_clear_line(broken_checkpoints):
    domain = unique_domain_id()
    cases = {name: (start_node(node_arguments(unique_namespace("startup"), checkpoint=path, device="cpu"), domain),
                    line) for name, (path, line) in broken_checkpoints.items()}
    for name, (process, line) in cases.items():
        assert process.process.wait(120) != 0, name
        process.wait_for_line(r"\[FATAL\].*\[samwise\]: cannot start: " + line, timeout=5)
        errors = [text for text in process.lines if "cannot start" in text or "Traceback" in text]
        assert len(errors) == 1, (name, process.tail())


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
