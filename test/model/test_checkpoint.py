"""Released-checkpoint loading, this package's own format, and every failure mode of both.

Full-size checkpoints take seconds and ~0.85 GB each: each is written once, from state dicts generated
once, and removed as soon as its tests are done (pytest keeps the temporary directories of its last
three runs)."""

import copy
import shutil

import pytest
import torch
from helpers.fixtures import (
    EXTRA_KEY,
    MISSING_KEYS,
    WRONG_SHAPE,
    WRONG_SHAPE_KEY,
    official_args,
    official_state_dict,
    write_corrupt_files,
    write_official_checkpoint,
)

from samwise_ros import Samwise
from samwise_ros.model.checkpoint import (
    SYNTHESISED_KEYS,
    CheckpointError,
    convert_official_state_dict,
    is_unused_official_key,
    official_to_package_name,
)


@pytest.fixture(scope="module")
def released_video(tmp_path_factory, official_video_state_dict):
    directory = tmp_path_factory.mktemp("release")
    path = write_official_checkpoint(directory / "final_model_mevis.pth", variant="video",
                                     state_dict=official_video_state_dict)
    yield path, official_video_state_dict
    shutil.rmtree(directory)


@pytest.fixture(scope="module")
def loaded_video(released_video, tokenizer_dir):
    path, _ = released_video
    return Samwise.from_official_checkpoint(path, tokenizer=tokenizer_dir, device="cpu", dtype="fp32")


def test_every_released_key_is_loaded_or_documented_unused(released_video, loaded_video):
    _, released = released_video
    model_state = loaded_video.state_dict()
    unused = sorted(name for name in released if is_unused_official_key(name))
    assert unused == sorted(
        ["text_encoder._float_tensor", "text_encoder.model.encoder.sentence_encoder.version"]
        + [name for name in released if name.startswith("text_encoder.model.encoder.lm_head.")]
    )
    for name, tensor in released.items():
        target = official_to_package_name(name)
        if target is not None:
            assert torch.equal(model_state[target], tensor), name
    # no model tensor is left unloaded: each comes from a released key or is a documented constant
    converted = convert_official_state_dict(released)
    assert set(converted) == set(model_state)
    loaded_names = {official_to_package_name(name) for name in released}
    assert {name for name in model_state if name not in loaded_names} == set(SYNTHESISED_KEYS)
    assert not model_state["text_encoder.model.embeddings.token_type_embeddings.weight"].any()


def test_loaded_tensors_land_in_the_right_modules(released_video, loaded_video):
    _, released = released_video
    model = loaded_video
    spot_checks = {
        "cmt_adapters.0.spatial_pos_embed": model.adapters[0].hsa.spatial_pos_embed,
        "cmt_adapters.1.norm_pre_HSA.weight": model.adapters[1].hsa.norm.weight,
        "cmt_adapters.2.ca_V2T.multihead_attn.in_proj_weight": model.adapters[2].vis_to_text.attn.in_proj_weight,
        "cmt_adapters.2.ca_T2V.multihead_attn.out_proj.bias": model.adapters[2].text_to_vis.attn.out_proj.bias,
        "cmt_adapters.0.proj_vis_up.0.weight": model.adapters[0].vis_up[0].weight,
        "cmt_adapters.1.proj_vis_down.1.running_var": model.adapters[1].vis_down[1].running_var,
        "cmt_adapters.2.proj_text_down.0.weight": model.adapters[2].text_down.weight,
        "cmt_adapters.0.hsa.linear.weight": model.adapters[0].hsa.out.weight,
        "conditional_memory_encoder.transformerBlock.norm2.weight": model.cme.block.norm2.weight,
        "conditional_memory_encoder.decision_class_head.bias": model.cme.decision_head.bias,
        "conditional_memory_encoder.decision_token.weight": model.cme.decision_token.weight,
        "sam.sam_prompt_encoder.project_text.layers.2.bias": model.text_prompt.layers[2].bias,
        "sam.image_encoder.trunk.blocks.5.attn.qkv.weight": model.sam.image_encoder.trunk.blocks[5].attn.qkv.weight,
        "sam.memory_attention.layers.3.cross_attn_image.k_proj.weight":
            model.sam.memory_attention.layers[3].cross_attn_image.k_proj.weight,
        "sam.sam_mask_decoder.obj_score_token.weight": model.sam.sam_mask_decoder.obj_score_token.weight,
        "sam.maskmem_tpos_enc": model.sam.maskmem_tpos_enc,
        "text_encoder.model.encoder.sentence_encoder.embed_tokens.weight":
            model.text_encoder.model.embeddings.word_embeddings.weight,
        "text_encoder.model.encoder.sentence_encoder.layers.11.fc2.weight":
            model.text_encoder.model.encoder.layer[11].output.dense.weight,
        "text_encoder.model.encoder.sentence_encoder.layers.3.self_attn_layer_norm.bias":
            model.text_encoder.model.encoder.layer[3].attention.output.LayerNorm.bias,
    }
    for name, tensor in spot_checks.items():
        assert torch.equal(tensor, released[name]), name


def test_text_encoder_weights_equal_the_released_ones(released_video, loaded_video):
    _, released = released_video
    text_state = loaded_video.text_encoder.state_dict()
    loaded = 0
    for name, tensor in released.items():
        target = official_to_package_name(name)
        if target is not None and target.startswith("text_encoder."):
            assert torch.equal(text_state[target[len("text_encoder."):]], tensor), name
            loaded += 1
    assert loaded == 4 + 12 * 16  # embeddings (words, positions, LayerNorm) and 12 layers of 16 tensors


def test_config_comes_from_checkpoint_args(loaded_video):
    config = loaded_video.config
    assert config.pred_obj_scores and config.cme_trained and not config.motion_prompt
    assert config.hsa_patch_sizes == [8, 4, 2] and config.text_fusion_layers == [4, 8, 12]
    assert loaded_video.precision == "fp32" and not loaded_video.training
    assert loaded_video.tokenize("the red ball").input_ids[0, 0].item() == 0


def test_image_level_release_loads_without_object_score_parts(scratch_dir, tokenizer_dir):
    path = write_official_checkpoint(scratch_dir / "refcoco.pth", variant="image", with_training_state=False)
    model = Samwise.from_official_checkpoint(path, tokenizer=tokenizer_dir)
    assert not model.config.pred_obj_scores
    assert not hasattr(model.sam.sam_mask_decoder, "obj_score_token")
    assert "sam.no_obj_ptr" not in model.state_dict()


@pytest.fixture(scope="module")
def released_motion(tmp_path_factory):
    directory = tmp_path_factory.mktemp("motion")
    released = official_state_dict("motion")
    path = write_official_checkpoint(directory / "motion.pth", variant="motion", with_training_state=False,
                                     state_dict=released)
    yield path, released
    shutil.rmtree(directory)


def test_motion_prompt_release_loads_with_a_verb_tagger(released_motion, tokenizer_dir):
    path, released = released_motion
    model = Samwise.from_official_checkpoint(path, tokenizer=tokenizer_dir, verb_tagger=lambda text: [(4, 11)])
    assert model.config.motion_prompt
    name = "sam.sam_prompt_encoder.project_motion_prompts.layers.0.weight"
    assert torch.equal(model.motion_prompt.layers[0].weight, released[name])
    assert model.tokenize("the ball rolling").verb_tokens.any()


def test_a_motion_prompt_checkpoint_without_a_verb_tagger_fails_to_load(released_motion, tokenizer_dir):
    path, _ = released_motion
    with pytest.raises(CheckpointError, match="motion prompt.*verb tagger"):
        Samwise.from_official_checkpoint(path, tokenizer=tokenizer_dir)
    with pytest.raises(CheckpointError, match="motion prompt.*verb tagger"):
        Samwise.from_path(path, tokenizer=tokenizer_dir)


def test_args_that_contradict_the_weights_are_an_error(scratch_dir, tokenizer_dir, official_video_state_dict):
    path = write_official_checkpoint(scratch_dir / "bad_args.pth", variant="video", with_training_state=False,
                                     state_dict=official_video_state_dict,
                                     args_overrides={"disable_pred_obj_score": True})
    with pytest.raises(CheckpointError, match="disable_pred_obj_score"):
        Samwise.from_official_checkpoint(path, tokenizer=tokenizer_dir)


@pytest.fixture(scope="module")
def broken_files(tmp_path_factory, official_video_state_dict):
    directory = tmp_path_factory.mktemp("broken")
    kinds = ["random_bytes", "text", "truncated", "truncated_zip", "malicious", "malicious_legacy"]
    yield write_corrupt_files(directory, which=kinds, state_dict=official_video_state_dict)
    shutil.rmtree(directory)


@pytest.mark.parametrize(
    "kind, message",
    [
        ("random_bytes", "not a PyTorch checkpoint"),
        ("text", "not a PyTorch checkpoint"),
        ("truncated", "truncated"),
        ("truncated_zip", "truncated"),
        ("malicious", "refused.*posix.system"),
        ("malicious_legacy", "refused.*posix.system"),
    ],
)
def test_unusable_files_give_one_clear_error(broken_files, kind, message):
    with pytest.raises(CheckpointError, match=message) as error:
        Samwise.from_official_checkpoint(broken_files[kind])
    assert "\n" not in str(error.value) and str(broken_files[kind]) in str(error.value)
    assert not broken_files["malicious_marker"].exists()  # nothing pickled ever ran


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="file not found"):
        Samwise.from_official_checkpoint(tmp_path / "absent.pth")


@pytest.mark.parametrize(
    "mutation, message",
    [
        ("missing", r"missing 3 keys: adapters\.2\.hsa\.out\.bias, cme\.decision_token\.weight, "
                    r"text_prompt\.layers\.0\.weight"),
        ("wrong_shape", r"1 shapes differ: adapters\.0\.vis_down\.0\.weight \(128, 224, 1, 1\)"),
        ("extra", r"unexpected 1 keys: unexpected_head\.weight"),
    ],
)
def test_wrong_architecture_names_what_differs(scratch_dir, official_video_state_dict, mutation, message):
    state = copy.copy(official_video_state_dict)  # a new dict of the same tensors: the shared one stays whole
    if mutation == "missing":
        for name in MISSING_KEYS:
            del state[name]
    elif mutation == "wrong_shape":
        state[WRONG_SHAPE_KEY] = torch.zeros(WRONG_SHAPE)
    else:
        state[EXTRA_KEY] = torch.zeros(3)
    path = scratch_dir / f"{mutation}.pth"
    torch.save({"model": state, "args": official_args()}, path)
    with pytest.raises(CheckpointError, match=f"wrong architecture; {message}"):
        Samwise.from_official_checkpoint(path)


def test_checkpoint_without_model_entry(tmp_path):
    path = tmp_path / "optimizer_only.pth"
    torch.save({"optimizer": {}, "epoch": 3}, path)
    with pytest.raises(CheckpointError, match="no 'model' state dict"):
        Samwise.from_official_checkpoint(path)
