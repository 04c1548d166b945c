"""Shared fixtures: a tokenizer built here and a tiny random model (tests run on the CPU in seconds)."""

import os
import shutil

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing may be downloaded
# the machine's 2 cores: shared by the pytest-xdist workers when there are several
torch.set_num_threads(max(1, 2 // int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))))


def pytest_collection_modifyitems(config, items):
    """Tests marked `gpu` are skipped where CUDA is absent."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory):
    from helpers.fixtures import write_roberta_tokenizer

    return write_roberta_tokenizer(tmp_path_factory.mktemp("tokenizer"))


@pytest.fixture(scope="session")
def tokenizer(tokenizer_dir):
    from transformers import RobertaTokenizerFast

    return RobertaTokenizerFast.from_pretrained(str(tokenizer_dir))


@pytest.fixture(scope="session")
def official_video_state_dict():
    """Random tensors under the released video model's names and shapes (~0.85 GB, generated once).
    Shared by every test that asks for it: copy it (`copy.copy`) before adding or removing entries."""
    from helpers.fixtures import official_state_dict

    return official_state_dict("video")


@pytest.fixture
def scratch_dir(tmp_path):
    """tmp_path, emptied after the test: for full-size checkpoints (~0.85 GB each), which pytest would
    otherwise keep with the temporary directories of its last three runs."""
    yield tmp_path
    shutil.rmtree(tmp_path)


@pytest.fixture(scope="module")
def tiny_model(tokenizer):
    from samwise_ros import Samwise, SamwiseConfig

    torch.manual_seed(0)
    return Samwise(SamwiseConfig.tiny(vocab_size=len(tokenizer)), tokenizer=tokenizer).eval()


@pytest.fixture(scope="session")
def present_model_dir(tmp_path_factory, tokenizer):
    """A tiny random model, saved, that always reports the object present (masks to take centroids of)."""
    from helpers.fixtures import save_tiny_model

    return save_tiny_model(tmp_path_factory.mktemp("present_model"), tokenizer)


@pytest.fixture(scope="session")
def switching_model_dir(tmp_path_factory, tokenizer):
    """`present_model_dir`'s model with a CME that switches wherever its window lets it."""
    from helpers.fixtures import save_tiny_model

    return save_tiny_model(tmp_path_factory.mktemp("switching_model"), tokenizer, force_cme_switch=True)
