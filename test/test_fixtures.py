"""Checks of the test fixtures themselves (test/helpers/fixtures.py)."""

import argparse
import collections
import os
import pickle

import pytest
import torch

from helpers import fixtures as F


# ---------------------------------------------------------------------------------- tokenizer


def test_tokenizer_ids_and_specials(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    from transformers import AutoTokenizer, RobertaTokenizerFast

    d = F.write_roberta_tokenizer(tmp_path / "tok")
    tok = RobertaTokenizerFast.from_pretrained(d)
    assert len(tok) < 600  # a tiny model's embedding table, not roberta-base's 50k rows
    assert (tok.bos_token_id, tok.pad_token_id, tok.eos_token_id, tok.unk_token_id) == (0, 1, 2, 3)
    assert tok.cls_token_id == 0 and tok.sep_token_id == 2

    enc = tok(["the red ball", "the person picking up the mug on the left"], padding=True,
              return_offsets_mapping=True)
    short, long = enc["input_ids"]
    assert short[0] == 0 and short[4] == 2 and short[5:] == [1] * (len(short) - 5)
    assert long[0] == 0 and long[-1] == 2
    assert tok.convert_ids_to_tokens(short[:5]) == ["<s>", "the", "Ġred", "Ġball", "</s>"]
    assert enc["offset_mapping"][0][:5] == [(0, 0), (0, 3), (4, 7), (8, 12), (0, 0)]
    assert enc["attention_mask"][0] == [1] * 5 + [0] * (len(short) - 5)
    # merges make common words single tokens; anything else still encodes (byte level)
    assert len(long) == 11
    assert tok.decode(tok("Über 猫")["input_ids"], skip_special_tokens=True) == "Über 猫"

    auto = AutoTokenizer.from_pretrained(d)
    assert auto("the red ball")["input_ids"] == tok("the red ball")["input_ids"]


def test_tokenizer_files_deterministic(tmp_path):
    a = F.write_roberta_tokenizer(tmp_path / "a")
    b = F.write_roberta_tokenizer(tmp_path / "b")
    names = sorted(p.name for p in a.iterdir())
    assert {"vocab.json", "merges.txt", "tokenizer.json", "tokenizer_config.json"} <= set(names)
    assert names == sorted(p.name for p in b.iterdir())
    for n in names:
        assert (a / n).read_bytes() == (b / n).read_bytes()


# ---------------------------------------------------------------------------------- args


def test_official_args():
    args = F.official_args()
    assert isinstance(args, argparse.Namespace)
    assert args.HSA and args.use_cme_head and not args.motion_prompt and not args.disable_pred_obj_score
    assert args.HSA_patch_size == [8, 4, 2] and args.fusion_stages_txt == [4, 8, 12]
    assert args.lr_drop == [60000] and args.results_path is None
    assert F.official_args(num_frames=1, foo=3).num_frames == 1


# ---------------------------------------------------------------------------------- state dicts


def _check_against_schema(sd, variant):
    entries = F.schema_entries(variant)
    assert list(sd) == [e["name"] for e in entries]
    for e in entries:
        t = sd[e["name"]]
        assert list(t.shape) == e["shape"], e["name"]
        assert str(t.dtype) == "torch." + e["dtype"], e["name"]
        for other in e.get("tied_with", ()):
            assert sd[other] is t


def test_video_state_dict_matches_schema(official_video_state_dict):
    sd = official_video_state_dict
    _check_against_schema(sd, "video")
    assert len(sd) == 932
    emb = "text_encoder.model.encoder.sentence_encoder.embed_tokens.weight"
    assert sd[emb] is sd["text_encoder.model.encoder.lm_head.weight"]
    unique = {id(t): t for t in sd.values()}
    n_buffers = sum(t.numel() for k, t in sd.items() if "running_" in k or "num_batches" in k
                    or k in ("text_encoder._float_tensor", "text_encoder.model.encoder.sentence_encoder.version",
                             "sam.sam_prompt_encoder.pe_layer.positional_encoding_gaussian_matrix"))
    assert sum(t.numel() for t in unique.values()) - n_buffers == 210_766_237
    for k, t in sd.items():
        if k.endswith("num_batches_tracked"):
            assert t.dtype == torch.int64 and t.dim() == 0
        elif k.endswith("running_var"):
            assert t.min() > 0
        elif k.endswith("running_mean"):
            assert t.abs().max() < 0.1
        elif k.endswith("norm_pre_HSA.weight") or k.endswith("norm1.weight"):
            assert (t - 1).abs().max() < 0.2
    std = sd["sam.memory_attention.layers.0.linear1.weight"].std().item()
    assert 0.018 < std < 0.022


def test_image_and_motion_variants(official_video_state_dict):
    key = "cmt_adapters.1.hsa.linear.weight"
    image = F.official_state_dict("image")
    _check_against_schema(image, "image")
    assert len(image) == 932 - 8
    assert set(official_video_state_dict) - set(image) == set(F.OBJ_SCORE_KEYS)
    assert not any("obj_score" in k for k in image) and "sam.no_obj_ptr" not in image
    assert torch.equal(image[key], official_video_state_dict[key])  # deterministic per (seed, name)
    del image
    motion = F.official_state_dict("motion", seed=1)
    _check_against_schema(motion, "motion")
    assert len(motion) == 938
    assert sum(k.startswith("sam.sam_prompt_encoder.project_motion_prompts.") for k in motion) == 6
    assert not torch.equal(motion[key], official_video_state_dict[key])


# ---------------------------------------------------------------------------------- files


def test_checkpoint_needs_namespace_global(scratch_dir, official_video_state_dict):
    p = F.write_official_checkpoint(scratch_dir / "ck.pth", state_dict=official_video_state_dict)
    with pytest.raises(pickle.UnpicklingError, match="argparse.Namespace"):
        torch.load(p, map_location="cpu", weights_only=True)
    with torch.serialization.safe_globals(list(F.CHECKPOINT_SAFE_GLOBALS)):
        ck = torch.load(p, map_location="cpu", weights_only=True)
    assert sorted(ck) == ["args", "epoch", "lr_scheduler", "model", "optimizer"]
    assert ck["args"].sam2_version == "base" and ck["epoch"] == 5
    assert isinstance(ck["lr_scheduler"]["milestones"], collections.Counter)
    assert set(ck["optimizer"]) == {"state", "param_groups"}
    assert list(ck["model"]) == list(official_video_state_dict)
    k = "cmt_adapters.2.proj_vis_up.1.running_var"
    assert torch.equal(ck["model"][k], official_video_state_dict[k])


def test_malicious_pickle_refused_without_side_effect(tmp_path):
    files = F.write_corrupt_files(tmp_path, which=["malicious", "malicious_legacy", "random_bytes", "text"])
    marker = files["malicious_marker"]
    for kind in ("malicious", "malicious_legacy"):
        with torch.serialization.safe_globals(list(F.CHECKPOINT_SAFE_GLOBALS)):
            with pytest.raises(pickle.UnpicklingError, match="system"):
                torch.load(files[kind], map_location="cpu", weights_only=True)
    for kind in ("random_bytes", "text"):
        with pytest.raises(Exception):
            torch.load(files[kind], map_location="cpu", weights_only=True)
    assert not marker.exists()
    assert not os.path.exists(marker)
