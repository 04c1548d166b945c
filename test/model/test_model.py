"""The network on its own: sizes, HSA locality, the CME's early pointer, a tiny clip forward."""

import contextlib
import dataclasses
import re

import pytest
import torch

from helpers.fixtures import fixed_cme_decision
from samwise_ros import Samwise, SamwiseConfig
from samwise_ros.model.cme import cme_window_open
from samwise_ros.model.adapter import HierarchicalSelectiveAttention, sine_time_embedding
from samwise_ros.model.samwise import TextQuery

OFFICIAL_PARAMS_OUTSIDE_TEXT = 86_069_572
OFFICIAL_TRAINABLE = 5_235_906
OFFICIAL_TRAINABLE_WITHOUT_PROMPT_MLP = 4_907_458


@pytest.fixture(scope="module")
def official_model():
    torch.manual_seed(0)
    return Samwise(SamwiseConfig.official())


def query_of(ids):
    ids = torch.tensor([ids])
    return TextQuery("test", ids, torch.ones_like(ids))


def test_official_parameter_counts(official_model):
    params = dict(official_model.named_parameters())
    outside_text = sum(p.numel() for name, p in params.items() if not name.startswith("text_encoder."))
    trainable = official_model.trainable_parameter_names()
    assert outside_text == OFFICIAL_PARAMS_OUTSIDE_TEXT
    assert sum(params[name].numel() for name in trainable) == OFFICIAL_TRAINABLE
    without_prompt = [name for name in trainable if not name.startswith("text_prompt.")]
    assert sum(params[name].numel() for name in without_prompt) == OFFICIAL_TRAINABLE_WITHOUT_PROMPT_MLP


def test_official_fusion_geometry(official_model):
    trunk = official_model.sam.image_encoder.trunk
    assert trunk.stage_ends == [1, 4, 20, 23]
    assert official_model.config.text_layer_boundaries == [0, 1, 4, 8, 12]
    dims = [adapter.vis_down[0].in_channels for adapter in official_model.adapters]
    assert dims == [224, 448, 896]
    assert [adapter.hsa.patch_size for adapter in official_model.adapters] == [8, 4, 2]


def test_freeze_for_training_leaves_only_release_modules_trainable(official_model):
    official_model.freeze_for_training()
    trainable = {name for name, p in official_model.named_parameters() if p.requires_grad}
    assert trainable == set(official_model.trainable_parameter_names())
    assert all(name.split(".")[0] in {"adapters", "cme", "text_prompt"} for name in trainable)


def test_hsa_is_local_to_its_window():
    torch.manual_seed(0)
    patch, frames = 4, 3
    hsa = HierarchicalSelectiveAttention(dim=16, num_heads=2, patch_size=patch).eval()
    x = torch.randn(frames, 16, 8, 12)  # 2 x 3 windows of 4 x 4
    changed = x.clone()
    changed[1, :, 4:8, 4:8] += torch.randn(16, 4, 4)  # frame 1, window (row 1, col 1)
    with torch.no_grad():
        diff = (hsa(x, frames) - hsa(changed, frames)).abs().sum(dim=1)  # [T, H, W]
    inside = torch.zeros(8, 12, dtype=torch.bool)
    inside[4:8, 4:8] = True
    # every frame's tokens in that window change (temporal attention), nothing outside does
    assert (diff[:, inside] > 1e-6).all()
    assert diff[:, ~inside].max() == 0


def test_time_embedding_interleaves_sine_and_cosine():
    emb = sine_time_embedding(4, 8, torch.device("cpu"))
    assert emb.shape == (4, 8)
    first = torch.tensor(2 * torch.pi * 1 / (4 + 1e-6))  # frame 1 of 4, normalised to (0, 2 pi]
    expected = [first.sin(), first.cos(), (first / 10000 ** (2 / 8)).sin(), (first / 10000 ** (2 / 8)).cos()]
    torch.testing.assert_close(emb[0, :4], torch.stack(expected), atol=1e-6, rtol=0)


def test_the_early_pointer_is_the_full_decodings_first_block_state(tiny_model, tokenizer):
    """The CME's memory-less early pointer, computed by the decoder's first block alone, equals mask
    token 0's state after that block inside the whole memory-less decoding."""
    decoder = tiny_model.sam.sam_mask_decoder
    row = 2 if decoder.pred_obj_scores else 1  # [obj score, IoU, mask tokens..., prompts...]
    captured = []
    handle = decoder.transformer.layers[0].register_forward_hook(lambda m, i, out: captured.append(out[0][:, row]))
    torch.manual_seed(1)
    query = tiny_model.tokenize("the red ball on the left")
    try:
        with torch.inference_mode():
            features = tiny_model.encode_clip(torch.randn(2, 3, 128, 128), query)
            early = tiny_model.early_pointer_without_memory(features, 1)
            assert len(captured) == 1  # the first block only
            tiny_model.decode_without_memory(features, 1)
    finally:
        handle.remove()
    assert len(captured) == 2 and torch.equal(early, captured[1])

def test_tiny_clip_forward_shapes_finite_and_deterministic(tiny_model):
    torch.manual_seed(3)
    frames = torch.randn(8, 3, 128, 96)
    query = query_of([0, 11, 12, 13, 2])

    def run():
        memory = tiny_model.new_stream_memory()
        with torch.inference_mode():
            return tiny_model.forward_clip(frames, query, list(range(8)), memory), memory

    first, memory = run()
    second, _ = run()
    assert [out.frame_index for out in first] == list(range(8))
    for a, b in zip(first, second):
        assert a.low_res_logits.shape == (1, 1, 32, 32)
        assert a.object_score_logits.shape == (1, 1)
        assert torch.isfinite(a.low_res_logits).all()
        assert torch.equal(a.low_res_logits, b.low_res_logits)
    # the CME runs where the release's window rule allows, given the switches it made
    last_switch, expected = 0, []
    for out in first:
        expected.append(cme_window_open(out.frame_index, last_switch, 4))
        if out.cme_switched:
            last_switch = out.frame_index
    assert [bool(out.cme_ran) for out in first] == expected
    assert [out.cme_logits is not None for out in first] == [i > 4 for i in range(8)]
    assert expected[:5] == [False] * 5 and expected[5]
    assert len(memory.bank) == 8


def test_memory_conditioning_changes_later_frames(tiny_model):
    torch.manual_seed(4)
    frames = torch.randn(2, 3, 128, 128)
    query = query_of([0, 11, 2])
    with torch.inference_mode():
        with_memory = tiny_model.forward_clip(frames, query, [0, 1], tiny_model.new_stream_memory())
        alone = tiny_model.forward_clip(frames[1:], query, [0], tiny_model.new_stream_memory())
    assert not torch.equal(with_memory[1].low_res_logits, alone[0].low_res_logits)


def test_postprocess_crops_padding_then_resizes(tiny_model):
    low = torch.zeros(1, 1, 32, 32)
    low[..., :16, :] = 5.0  # top half positive in the padded 128 x 128 frame
    out = tiny_model.postprocess_logits(low, resized_hw=(64, 128), output_hw=(48, 96))
    assert out.shape == (1, 1, 48, 96)
    assert (out > 0).all()  # the crop keeps only the top 64 rows, all positive


def test_query_too_long_is_a_clear_error(tiny_model, tokenizer):
    tiny_model.tokenizer = tokenizer
    with pytest.raises(ValueError, match="tokens"):
        tiny_model.tokenize("red " * 500)


def test_roberta_run_layer_by_layer_equals_transformers_forward(tiny_model):
    encoder = tiny_model.text_encoder
    ids = torch.tensor([[0, 40, 41, 42, 2]])
    mask = torch.ones_like(ids)
    with torch.no_grad():
        hidden = encoder.run_layers(encoder.embed(ids, mask), 0, encoder.num_layers, mask)
        reference = encoder.model(input_ids=ids, attention_mask=mask).last_hidden_state
    torch.testing.assert_close(hidden, reference)


def test_roberta_embedding_zeroes_padded_positions_like_fairseq(tiny_model):
    ids = torch.tensor([[0, 40, 2, 1, 1]])
    mask = torch.tensor([[1, 1, 1, 0, 0]])
    with torch.no_grad():
        embedded = tiny_model.text_encoder.embed(ids, mask)
    assert embedded[0, 3:].abs().sum() == 0 and embedded[0, :3].abs().sum() > 0


def test_motion_prompt_adds_the_first_verb_token(tokenizer):
    config = SamwiseConfig.tiny(vocab_size=len(tokenizer), motion_prompt=True)

    def verbs(text):
        return [(m.start(), m.end()) for m in re.finditer(r"\w+ing\b", text)]

    model = Samwise(config, tokenizer=tokenizer, verb_tagger=verbs).eval()
    query = model.tokenize("the red ball rolling to the left")
    assert query.verb_tokens.sum() >= 1
    sparse_lengths = []
    # registered after the model's own hook, so it sees the prompt with the appended tokens
    handle = model.sam.sam_prompt_encoder.register_forward_hook(
        lambda module, args, out: sparse_lengths.append(out[0].shape[1]))
    with torch.inference_mode():
        model.forward_clip(torch.randn(1, 3, 128, 128), query, [0], model.new_stream_memory())
    handle.remove()
    assert sparse_lengths == [4]  # sam2's empty point and padding point, the text token, the verb token


def test_image_level_variant_decodes_without_object_scores(tokenizer):
    model = Samwise(SamwiseConfig.tiny(vocab_size=len(tokenizer), pred_obj_scores=False), tokenizer=tokenizer).eval()
    with torch.inference_mode():
        outputs = model.forward_clip(torch.randn(6, 3, 128, 128), model.tokenize("the red ball"), list(range(6)),
                                     model.new_stream_memory())
    assert all(torch.isfinite(out.low_res_logits).all() for out in outputs)


def test_sparse_prompt_is_two_empty_points_then_the_projected_sentence_state(tiny_model):
    query = tiny_model.tokenize("the red ball")
    prompts = []
    handle = tiny_model.sam.sam_prompt_encoder.register_forward_hook(lambda m, a, out: prompts.append(out[0]))
    frames = torch.randn(1, 3, 128, 128)
    with torch.inference_mode():
        tiny_model.forward_clip(frames, query, [0], tiny_model.new_stream_memory())
        state = tiny_model.encode_clip(frames, query).text_state  # token 0's final state
        expected_text = tiny_model.text_prompt(state[0, 0])  # row 0, frame 0
    handle.remove()
    (sparse,) = prompts
    not_a_point = tiny_model.sam.sam_prompt_encoder.not_a_point_embed.weight[0]
    assert sparse.shape == (1, 3, 256)
    torch.testing.assert_close(sparse[0, 0], not_a_point)
    torch.testing.assert_close(sparse[0, 1], not_a_point)
    torch.testing.assert_close(sparse[0, 2], expected_text)


def test_training_forward_trains_only_the_release_modules_on_ungated_masks(tokenizer):
    torch.manual_seed(0)
    model = Samwise(SamwiseConfig.tiny(vocab_size=len(tokenizer)), tokenizer=tokenizer)
    with torch.no_grad():  # the object is never "present": inference gates every mask to -1024
        model.sam.sam_mask_decoder.pred_obj_score_head.layers[-1].bias.fill_(-100.0)
    model.freeze_for_training()
    model.train()
    outputs = model.forward_train(torch.randn(8, 3, 128, 96), model.tokenize("the red ball"))
    assert [out.cme_label is not None for out in outputs] == [i > 4 for i in range(8)]
    assert all(out.mask_logits.shape == (1, 1, 128, 96) for out in outputs)
    assert all(out.mask_logits.std() > 0 for out in outputs)  # ungated, unlike inference
    loss = sum(out.mask_logits.sigmoid().mean() for out in outputs)
    loss = loss + sum(out.cme_logits.logsumexp(-1).sum() for out in outputs if out.cme_logits is not None)
    loss.backward()
    with_grad = {name for name, p in model.named_parameters() if p.grad is not None}
    assert with_grad == set(model.trainable_parameter_names()) - {"cme.block.norm2.weight", "cme.block.norm2.bias"}


def test_training_forward_continues_a_stream_as_inference_does(tokenizer):
    """forward_train on frames 4-7 after forward_clip filled the memory with frames 0-3 segments what
    the inference forward segments there (object forced present: no gating, CME off)."""
    torch.manual_seed(0)
    model = Samwise(SamwiseConfig.tiny(vocab_size=len(tokenizer)), tokenizer=tokenizer).eval()
    with torch.no_grad():
        model.sam.sam_mask_decoder.pred_obj_score_head.layers[-1].bias.fill_(100.0)
    frames, query = torch.randn(8, 3, 128, 96), model.tokenize("the red ball")
    with torch.no_grad():
        history, inference_memory = model.new_stream_memory(), model.new_stream_memory()
        model.forward_clip(frames[:4], query, range(4), history, use_cme=False)
        model.forward_clip(frames[:4], query, range(4), inference_memory, use_cme=False)
        trained = model.forward_train(frames[4:], query, memory=history, first_index=4)
        inferred = model.forward_clip(frames[4:], query, range(4, 8), inference_memory, use_cme=False)
        fresh = model.forward_train(frames[4:], query)
    for train_out, infer_out in zip(trained, inferred):
        expected = model.postprocess_logits(infer_out.low_res_logits, (128, 96), (128, 96))
        torch.testing.assert_close(train_out.mask_logits, expected, rtol=1e-4, atol=1e-4)
    assert not torch.allclose(trained[0].mask_logits, fresh[0].mask_logits)  # the history was read


def full_window_fuse(model, window):
    """Frame mode's fusion written plainly: every new frame reruns each adapter over its window (the
    adapter inputs of the window - 1 frames before it and its own) and keeps the newest frame's
    visual residual."""
    inputs = {}

    def fuse(segment, vis, text, num_frames, text_padding, context):
        adapter = model.adapters[model.config.fusion_stages.index(segment)]
        past = inputs.setdefault(segment, [])
        past.append(vis.permute(0, 3, 1, 2))
        del past[: max(0, len(past) - window)]
        vis_residual, text_residual = adapter(torch.cat(past), text, len(past), text_padding)
        return vis + vis_residual[-1:].permute(0, 2, 3, 1), text + text_residual

    return fuse


def test_incremental_frame_mode_equals_the_full_window_computation(tiny_model):
    torch.manual_seed(5)
    frames = torch.randn(20, 3, 128, 112)
    query = query_of([0, 11, 12, 13, 2])

    def stream():
        memory = tiny_model.new_stream_memory(frame_window=4)
        with torch.inference_mode():
            return [tiny_model.forward_clip(frames[i : i + 1], query, [i], memory)[0] for i in range(20)]

    incremental = stream()
    tiny_model._fuse = full_window_fuse(tiny_model, window=4)
    try:
        full = stream()
    finally:
        del tiny_model._fuse
    for a, b in zip(incremental, full):
        torch.testing.assert_close(a.low_res_logits, b.low_res_logits, rtol=0, atol=1e-4)
        torch.testing.assert_close(a.object_score_logits, b.object_score_logits, rtol=0, atol=1e-4)
        assert (a.cme_logits is None) == (b.cme_logits is None)
        if a.cme_logits is not None:
            torch.testing.assert_close(a.cme_logits, b.cme_logits, rtol=0, atol=1e-4)
        assert (bool(a.cme_ran), bool(a.cme_switched)) == (bool(b.cme_ran), bool(b.cme_switched))
    assert sum(bool(out.cme_ran) for out in full) > 0


def test_a_query_encoded_once_gives_the_same_clip_features(tiny_model):
    torch.manual_seed(6)
    frames = torch.randn(3, 3, 128, 128)
    query = query_of([0, 11, 12, 13, 2])
    with torch.inference_mode():
        plain = tiny_model.encode_clip(frames, query)
        encoded = tiny_model.encode_clip(frames, tiny_model.encode_query(query))
    assert torch.equal(plain.text_state, encoded.text_state)
    for a, b in zip(plain.vision_feats, encoded.vision_feats):
        assert torch.equal(a, b)


@pytest.mark.parametrize("mode", ["clip", "frame"])
def test_a_query_padded_to_a_fixed_length_gives_the_unpadded_results(tiny_model, mode):
    """A compiled step's queries are padded to a few token lengths: attention keeps the padding out, so
    every output equals the unpadded query's (to round-off), the CME's included."""
    torch.manual_seed(7)
    frames = torch.randn(10, 3, 128, 112)
    unpadded = tiny_model.tokenize("the red ball rolling to the left")
    padded = tiny_model.tokenize("the red ball rolling to the left", pad_to=32)
    assert padded.input_ids.shape[1] == 32 > unpadded.input_ids.shape[1] and padded.padding_mask.any()
    assert unpadded.padding_mask is None

    def stream(query):
        window = 4 if mode == "frame" else None
        memory = tiny_model.new_stream_memory(window)
        with torch.inference_mode():
            query = tiny_model.encode_query(query)
            if mode == "clip":
                return [out for start in (0, 5) for out in
                        tiny_model.forward_clip(frames[start : start + 5], query, range(start, start + 5), memory)]
            return [tiny_model.forward_clip(frames[i : i + 1], query, [i], memory)[0] for i in range(10)]

    for a, b in zip(stream(padded), stream(unpadded)):
        torch.testing.assert_close(a.low_res_logits, b.low_res_logits, rtol=0, atol=1e-5)
        torch.testing.assert_close(a.object_score_logits, b.object_score_logits, rtol=0, atol=1e-5)
        assert (a.cme_logits is None) == (b.cme_logits is None)
        if a.cme_logits is not None:
            torch.testing.assert_close(a.cme_logits, b.cme_logits, rtol=0, atol=1e-5)
    # without the padding mask the visual tokens attend to the padding: the results move
    with torch.inference_mode():
        leaky = tiny_model.encode_clip(frames[:2], dataclasses.replace(padded, padded=False))
        exact = tiny_model.encode_clip(frames[:2], padded)
    assert not torch.allclose(leaky.vision_feats[-1], exact.vision_feats[-1], atol=1e-4)


ROW_QUERIES = ("the red ball rolling to the left", "the ball", "a small green square on the table")


@pytest.mark.parametrize("mode, switching", [("clip", False), ("frame", False), ("frame", True)])
def test_rows_in_one_forward_equal_each_row_alone(tiny_model, mode, switching):
    """Queries of three lengths as the rows of one batch (padded to the longest), each with its own memory
    and CME: every output equals that row's query run alone. With a CME that always switches, the switched
    rows' memory takes the memory-less mask; without, the random CME decides per row."""
    torch.manual_seed(8)
    frames = torch.randn(12, 3, 128, 112)
    window = 4 if mode == "frame" else None

    def stream(query):
        memory = tiny_model.new_stream_memory(window, rows=query.rows)
        with torch.inference_mode():
            query = tiny_model.encode_query(query)
            if mode == "clip":
                return [out for start in (0, 4, 8) for out in
                        tiny_model.forward_clip(frames[start : start + 4], query, range(start, start + 4), memory)]
            return [tiny_model.forward_clip(frames[i : i + 1], query, [i], memory)[0] for i in range(12)]

    model = tiny_model
    with fixed_cme_decision(model, switch=True) if switching else contextlib.nullcontext():
        singles = [stream(model.tokenize(text)) for text in ROW_QUERIES]
        batched = stream(model.stack_queries([model.tokenize(text) for text in ROW_QUERIES]))
    decided = 0
    for row, single in enumerate(singles):
        for together, alone in zip(batched, single):
            torch.testing.assert_close(together.low_res_logits[row : row + 1], alone.low_res_logits, rtol=0, atol=1e-5)
            torch.testing.assert_close(together.object_score_logits[row : row + 1], alone.object_score_logits,
                                       rtol=0, atol=1e-5)
            assert (bool(together.cme_ran[row]), bool(together.cme_switched[row])) == (bool(alone.cme_ran[0]),
                                                                                       bool(alone.cme_switched[0]))
            if alone.cme_logits is not None:
                torch.testing.assert_close(together.cme_logits[row : row + 1], alone.cme_logits, rtol=0, atol=1e-5)
                decided += 1
    assert decided > 0
    if switching:  # wherever the window rule lets it decide, every row switches
        assert all(torch.equal(out.cme_switched, out.cme_ran) for out in batched)
        assert sum(int(out.cme_switched.sum()) for out in batched) >= 3 * len(ROW_QUERIES)
