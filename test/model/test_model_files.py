"""This package's own model directories, and fresh models from SAM2 and a text encoder."""

import pytest
import torch
from safetensors.torch import save_file
from transformers import CLIPTextConfig, RobertaConfig, RobertaModel

from samwise_ros import Samwise, SamwiseConfig
from samwise_ros.model.checkpoint import CheckpointError, read_directory
from samwise_ros.model.samwise import TextQuery
from samwise_ros.weights import demo_weights


def test_save_and_load_round_trip_is_self_contained(tmp_path, tiny_model):
    directory = tiny_model.save(tmp_path / "model")
    loaded = Samwise.load(directory)
    original = tiny_model.state_dict()
    assert all(torch.equal(original[name], tensor) for name, tensor in loaded.state_dict().items())
    assert loaded.config == tiny_model.config
    text = "the small green square"
    assert torch.equal(loaded.tokenize(text).input_ids, tiny_model.tokenize(text).input_ids)


def test_loaded_model_gives_the_same_outputs(tmp_path, tiny_model):
    loaded = Samwise.load(tiny_model.save(tmp_path / "model"))
    frames = torch.randn(3, 3, 128, 128, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        a = tiny_model.forward_clip(frames, tiny_model.tokenize("the red ball"), [0, 1, 2], tiny_model.new_stream_memory())
        b = loaded.forward_clip(frames, loaded.tokenize("the red ball"), [0, 1, 2], loaded.new_stream_memory())
    assert all(torch.equal(x.low_res_logits, y.low_res_logits) for x, y in zip(a, b))


def test_float16_storage_halves_the_file_and_loads_as_float32(tmp_path, tiny_model):
    full = tiny_model.save(tmp_path / "fp32") / "model.safetensors"
    half = tiny_model.save(tmp_path / "fp16", storage_dtype=torch.float16) / "model.safetensors"
    assert half.stat().st_size < 0.51 * full.stat().st_size
    loaded = Samwise.load(tmp_path / "fp16")
    original = tiny_model.state_dict()
    for name, tensor in loaded.state_dict().items():
        assert tensor.dtype == original[name].dtype
        assert torch.equal(tensor, original[name].half().to(tensor.dtype) if tensor.is_floating_point() else original[name])


def test_demo_preset_fits_the_package_weight_budget_and_describes_the_bundled_weights():
    """The bundled demo model: at most 20 MB in float16 (2 bytes per parameter), built by the preset."""
    model = Samwise(SamwiseConfig.demo(vocab_size=300))
    parameters = sum(p.numel() for p in model.parameters())
    assert len(model.sam.memory_attention.layers) == 1 and len(model.sam.memory_encoder.fuser.layers) == 1
    assert 2 * parameters < 20e6
    bundled, _, _ = read_directory(demo_weights())
    assert bundled == SamwiseConfig.demo(vocab_size=bundled.text_encoder["vocab_size"])


@pytest.mark.parametrize("damage, message", [
    ("no_directory", "not found"),
    ("no_weights", "model.safetensors is missing"),
    ("corrupt_weights", "model.safetensors is corrupt"),
    ("bad_config", "invalid samwise_config.json"),
    ("wrong_shapes", "wrong architecture; 1 shapes differ: cme.decision_head.weight"),
])
def test_damaged_model_directory_errors(tmp_path, tiny_model, damage, message):
    directory = tiny_model.save(tmp_path / "model")
    if damage == "no_directory":
        directory = tmp_path / "absent"
    elif damage == "no_weights":
        (directory / "model.safetensors").unlink()
    elif damage == "corrupt_weights":
        data = (directory / "model.safetensors").read_bytes()
        (directory / "model.safetensors").write_bytes(data[: len(data) // 2])
    elif damage == "bad_config":
        (directory / "samwise_config.json").write_text('{"image_size": 128, "hiera_size": "xl"}')
    else:
        state = {k: v.contiguous() for k, v in tiny_model.state_dict().items()}
        state["cme.decision_head.weight"] = torch.zeros(3, 256)
        save_file(state, str(directory / "model.safetensors"))
    with pytest.raises(CheckpointError, match=message):
        Samwise.load(directory)


def test_from_pretrained_loads_sam2_and_text_encoder_and_freezes_them(tmp_path, tiny_model, tokenizer):
    sam2_path = tmp_path / "sam2_tiny.pt"
    torch.save({"model": tiny_model.sam.state_dict()}, sam2_path)
    text_dir = tmp_path / "roberta"
    text_config = RobertaConfig(**tiny_model.config.text_encoder)
    torch.manual_seed(5)
    RobertaModel(text_config, add_pooling_layer=False).save_pretrained(str(text_dir))
    tokenizer.save_pretrained(str(text_dir))
    reference = RobertaModel.from_pretrained(str(text_dir), add_pooling_layer=False).state_dict()

    model = Samwise.from_pretrained(sam2_checkpoint=sam2_path, text_encoder=text_dir,
                                    config=SamwiseConfig.tiny(vocab_size=len(tokenizer)))
    assert all(torch.equal(model.sam.state_dict()[k], v) for k, v in tiny_model.sam.state_dict().items())
    assert all(torch.equal(model.text_encoder.model.state_dict()[k], v) for k, v in reference.items())
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable == set(model.trainable_parameter_names()) and trainable
    assert model.tokenize("the red ball").input_ids.shape[1] > 2


def test_from_pretrained_rejects_a_sam2_of_another_size(tmp_path, tiny_model, tokenizer):
    state = dict(tiny_model.sam.state_dict())
    state["no_mem_embed"] = torch.zeros(1, 1, 64)
    torch.save({"model": state}, tmp_path / "other.pt")
    text_dir = tmp_path / "roberta"
    RobertaModel(RobertaConfig(**tiny_model.config.text_encoder), add_pooling_layer=False).save_pretrained(str(text_dir))
    with pytest.raises(CheckpointError, match="SAM2 checkpoint .* shapes differ: no_mem_embed"):
        Samwise.from_pretrained(sam2_checkpoint=tmp_path / "other.pt", text_encoder=text_dir,
                                config=SamwiseConfig.tiny(vocab_size=len(tokenizer)))


def test_clip_text_encoder_variant_runs():
    clip = CLIPTextConfig(vocab_size=300, hidden_size=32, intermediate_size=64, num_hidden_layers=4,
                          num_attention_heads=2, max_position_embeddings=40, bos_token_id=298, eos_token_id=299,
                          pad_token_id=0).to_diff_dict()
    torch.manual_seed(0)
    model = Samwise(SamwiseConfig.tiny(text_encoder_type="clip", text_encoder=clip)).eval()
    ids = torch.tensor([[298, 17, 18, 299, 0]])
    query = TextQuery("a red ball", ids, torch.tensor([[1, 1, 1, 1, 0]]))
    with torch.inference_mode():
        outputs = model.forward_clip(torch.randn(2, 3, 128, 128), query, [0, 1], model.new_stream_memory())
        hidden = model.text_encoder.embed(ids, query.attention_mask)
        state = model.text_encoder.sentence_state(model.text_encoder.run_layers(hidden, 0, 4, query.attention_mask), ids)
        reference = model.text_encoder.model(input_ids=ids, attention_mask=query.attention_mask).pooler_output
    assert len(outputs) == 2 and torch.isfinite(outputs[1].low_res_logits).all()
    torch.testing.assert_close(state, reference)  # layer-by-layer run equals transformers' own forward
