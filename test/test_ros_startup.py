"""Start-up failures: the node exits non-zero with one clear line naming the problem (no traceback)."""

import pytest

from ros_harness import node_arguments, start_node, unique_domain_id, unique_namespace


@pytest.fixture(scope="module")
def broken_checkpoints(tmp_path_factory, tokenizer):
    from ros_harness import save_tiny_model

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
