"""Shared fixtures: a tokenizer built here and a tiny random model (tests run on the CPU in seconds)."""

import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing may be downloaded
torch.set_num_threads(2)


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory):
    from helpers.fixtures import write_roberta_tokenizer

    return write_roberta_tokenizer(tmp_path_factory.mktemp("tokenizer"))


@pytest.fixture(scope="session")
def tokenizer(tokenizer_dir):
    from transformers import RobertaTokenizerFast

    return RobertaTokenizerFast.from_pretrained(str(tokenizer_dir))


@pytest.fixture(scope="module")
def tiny_model(tokenizer):
    from samwise_ros import Samwise, SamwiseConfig

    torch.manual_seed(0)
    return Samwise(SamwiseConfig.tiny(vocab_size=len(tokenizer)), tokenizer=tokenizer).eval()
