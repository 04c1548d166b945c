"""research/cme_ceiling.py: the CME replaced by decision rules, on a tiny model with random weights."""

import pytest
import torch

from research import cme_ceiling as ceiling
from samwise_ros import Samwise, SamwiseConfig
from samwise_ros.data.synthetic import HELD_OUT_SEED_OFFSET, SyntheticReferringVideos
from samwise_ros.training.evaluation import clip_scores, summarize


def fresh_model(tokenizer) -> Samwise:
    torch.manual_seed(0)
    return Samwise(SamwiseConfig.tiny(vocab_size=len(tokenizer)), tokenizer=tokenizer).eval()


def test_rules_replace_the_cme_and_truth_memory_rewrites_the_memory(tokenizer):
    results = {rule: ceiling.ceiling(fresh_model(tokenizer), rule, "switch", scenes=1, frames=8)
               for rule in ceiling.RULES}
    # one 8-frame clip: the CME's window opens on frames 5, 6 and 7 (while nothing switches)
    assert results["never"]["switched"] == 0 and results["never"]["decided"] == 3
    assert all(0 <= result["switched"] <= result["decided"] for result in results.values())
    # "never" is the tracker with the CME off, exactly
    clips = SyntheticReferringVideos(length=1, frames=8, kinds=("switch",), seed=HELD_OUT_SEED_OFFSET)
    off = summarize(clip_scores(fresh_model(tokenizer), [clips[0]], use_cme=False), prefix="")
    assert results["never"]["JF"] == pytest.approx(off["JF"], abs=1e-9)
    # a random model reads whatever mask the memory holds: the true one changes its masks
    assert results["truth-memory"]["JF"] != pytest.approx(results["never"]["JF"], abs=1e-6)


def test_the_mask_in_a_random_models_memory_moves_the_next_frames_logits(tokenizer):
    clip = SyntheticReferringVideos(length=1, frames=4, kinds=("appearance",), seed=HELD_OUT_SEED_OFFSET)[0]
    change, spread = ceiling.memory_mask_effect(fresh_model(tokenizer), clip)
    assert spread > 0 and change > 0.01 * spread
