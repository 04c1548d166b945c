"""StreamTracker: clip/frame modes, bounded memory, CME events, resets and odd inputs."""

import gc
import warnings
import weakref

import numpy as np
import pytest
import torch
from PIL import Image

from helpers.fixtures import fixed_cme_decision
from samwise_ros.model.cme import RELEASE_DECISION_WINDOW, reweight_memory_logits
from samwise_ros.preprocess import IMAGENET_MEAN, IMAGENET_STD, preprocess_frame, resized_shape
from samwise_ros.tracker import StreamTracker

QUERY = "the red ball rolling to the left"


def video(count, height=96, width=128, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (height, width, 3), dtype=np.uint8) for _ in range(count)]


def run(tracker, frames, start_stamp=0.0):
    results = []
    for i, frame in enumerate(frames):
        results += tracker.push(frame, stamp=start_stamp + 0.1 * i)
    return results + tracker.flush()


@pytest.fixture
def always_switch(tiny_model):
    with fixed_cme_decision(tiny_model, switch=True):
        yield tiny_model


def test_clip_mode_equals_the_network_run_by_hand(tiny_model):
    frames = video(19)
    query = tiny_model.tokenize(QUERY)
    tracker = StreamTracker(tiny_model, clip_length=8)
    tracker.set_query(QUERY)
    results = run(tracker, frames)

    memory = tiny_model.new_stream_memory()
    expected_masks, expected_scores = [], []
    with torch.inference_mode():
        for start in range(0, 19, 8):  # clips of 8, 8 and a flushed 3, memory carried across
            batch = [preprocess_frame(f, 128, torch.device("cpu")) for f in frames[start : start + 8]]
            pixels = torch.stack([p for p, _ in batch])
            outputs = tiny_model.forward_clip(pixels, query, list(range(start, start + len(batch))), memory)
            for out, (_, resized) in zip(outputs, batch):
                logits = tiny_model.postprocess_logits(out.low_res_logits, resized, (96, 128))[0, 0]
                expected_masks.append((logits.sigmoid() > 0.5).numpy())
                expected_scores.append(out.object_score_logits.sigmoid().item())
    assert [r.frame_index for r in results] == list(range(19))
    for result, mask, score in zip(results, expected_masks, expected_scores):
        assert np.array_equal(result.mask, mask)
        assert result.object_score == pytest.approx(score, abs=1e-6)
        assert result.mask.shape == (96, 128) and result.mask.dtype == bool


@pytest.mark.parametrize("mode", ["clip", "frame"])
def test_memory_bank_stays_bounded_and_resets(tiny_model, mode):
    tracker = StreamTracker(tiny_model, clip_length=4, mode=mode)
    tracker.set_query(QUERY)
    frames = video(1, 40, 56)
    for i in range(200):
        tracker.push(frames[0], stamp=float(i))
    bank = tracker._memory.bank
    assert tracker.memory_size == 15 and bank.spatial_entry_count() == 6
    assert tracker._memory.fusion_context is None or len(tracker._memory.fusion_context) == 3

    tracker.push(frames[0], stamp=10.0)  # backwards: a new stream
    assert tracker.memory_size <= 1
    tracker.set_query("a small green square")
    assert tracker.memory_size == 0 and tracker.pending_frames == 0


def live_tensors() -> tuple[int, int]:
    """(count, bytes) of the distinct tensor storages Python holds, parameters excluded."""
    gc.collect()
    storages = {}
    with warnings.catch_warnings():  # isinstance on torch's deprecated module attributes warns
        warnings.simplefilter("ignore", FutureWarning)
        for obj in gc.get_objects():
            if isinstance(obj, torch.Tensor) and not isinstance(obj, torch.nn.Parameter):
                storage = obj.untyped_storage()
                storages[storage.data_ptr()] = storage.nbytes()
    return len(storages), sum(storages.values())


@pytest.mark.parametrize("mode", ["clip", "frame"])
def test_a_long_stream_holds_the_same_tensors_at_frame_80_and_160(tiny_model, mode):
    tracker = StreamTracker(tiny_model, clip_length=4, mode=mode)
    tracker.set_query(QUERY)
    frames = video(2, 40, 56)
    held = {}
    for i in range(160):
        tracker.push(frames[i % 2], stamp=float(i))
        if i + 1 in (80, 160):
            held[i + 1] = live_tensors()
    assert held[160] == held[80]


def test_frame_mode_returns_one_result_per_frame(tiny_model):
    tracker = StreamTracker(tiny_model, mode="frame", frame_window=3)
    tracker.set_query(QUERY)
    counts = [len(tracker.push(frame, stamp=0.1 * i)) for i, frame in enumerate(video(10))]
    assert counts == [1] * 10
    assert tracker.flush() == []


def test_clip_mode_returns_every_frame_exactly_once(tiny_model):
    tracker = StreamTracker(tiny_model, clip_length=4)
    tracker.set_query(QUERY)
    counts = [len(tracker.push(frame, stamp=0.1 * i)) for i, frame in enumerate(video(10))]
    assert counts == [0, 0, 0, 4, 0, 0, 0, 4, 0, 0]
    assert [r.frame_index for r in tracker.flush()] == [8, 9]


def test_forced_cme_switch_marks_exactly_the_window_frames(always_switch):
    tracker = StreamTracker(always_switch, clip_length=8)
    tracker.set_query(QUERY)
    results = run(tracker, video(20))
    switched = [r.frame_index for r in results if r.cme_switched]
    assert switched == [5, 8, 11, 14, 17]  # past frame 4, then every window-1 = 3 frames
    decided = [r.frame_index for r in results if r.cme_probability is not None]
    assert decided == switched and all(r.cme_probability > 0.99 for r in results if r.cme_switched)


def test_forced_switch_writes_the_reweighted_mask_into_memory(always_switch):
    model = always_switch
    query = model.tokenize(QUERY)
    frames = torch.stack([preprocess_frame(f, 128, torch.device("cpu"))[0] for f in video(8)])
    with torch.inference_mode():
        switching = model.forward_clip(frames, query, list(range(8)), model.new_stream_memory())
        plain = model.forward_clip(frames, query, list(range(8)), model.new_stream_memory(), use_cme=False)
        features = model.encode_clip(frames, query)
        memoryless = model.decode_without_memory(features, 5).high_res_logits
    for i in range(5):
        assert torch.equal(switching[i].memory_logits, plain[i].memory_logits)
    expected = reweight_memory_logits(plain[5].memory_logits, memoryless, "reweight")
    assert bool(switching[5].cme_switched) and torch.equal(switching[5].memory_logits, expected)
    assert not torch.equal(expected, plain[5].memory_logits)
    assert not bool(switching[6].cme_ran) and not bool(switching[7].cme_ran)


@pytest.mark.parametrize("switch", [True, False])
@pytest.mark.parametrize("mode", ["clip", "frame"])
def test_the_memoryless_mask_is_decoded_only_on_a_switch(tiny_model, mode, switch):
    """Every frame past the CME's first window runs the decoder's first block on the memory-less feature
    (the window rule then applies on the device); the whole memory-less decoding runs only on a switch."""
    decoder = tiny_model.sam.sam_mask_decoder
    decodings, first_blocks = [], []
    handles = [decoder.register_forward_hook(lambda *_: decodings.append(1)),
               decoder.transformer.layers[0].register_forward_hook(lambda *_: first_blocks.append(1))]
    try:
        with fixed_cme_decision(tiny_model, switch):
            tracker = StreamTracker(tiny_model, clip_length=4, mode=mode)
            tracker.set_query(QUERY)
            results = run(tracker, video(16))
    finally:
        for handle in handles:
            handle.remove()
    decided = sum(r.cme_probability is not None for r in results)
    switches = sum(r.cme_switched for r in results)
    assert (decided, switches) == ((4, 4) if switch else (11, 0))
    assert len(decodings) == len(results) + switches
    past_first_window = sum(r.frame_index > RELEASE_DECISION_WINDOW for r in results)
    assert len(first_blocks) == len(decodings) + past_first_window


def test_disabled_cme_never_decides(tiny_model):
    tracker = StreamTracker(tiny_model, clip_length=8, use_cme=False)
    tracker.set_query(QUERY)
    assert all(r.cme_probability is None and not r.cme_switched for r in run(tracker, video(12)))


def test_backwards_stamp_finishes_the_old_stream_and_starts_a_new_one(tiny_model):
    tracker = StreamTracker(tiny_model, clip_length=4)
    tracker.set_query(QUERY)
    frames = video(6)
    for i in range(6):
        tracker.push(frames[i], stamp=10.0 + i)  # 4 processed, 2 pending
    results = tracker.push(frames[0], stamp=1.0)
    assert [r.frame_index for r in results] == [4, 5] and not any(r.stream_reset for r in results)
    results = tracker.flush()
    assert [(r.frame_index, r.stream_reset, r.stamp) for r in results] == [(0, True, 1.0)]


def test_empty_query_yields_nothing_and_reset_keeps_the_query(tiny_model):
    tracker = StreamTracker(tiny_model, mode="frame")
    assert tracker.push(video(1)[0], stamp=0.0) == []
    tracker.set_query("   ")
    assert tracker.push(video(1)[0], stamp=0.0) == []
    tracker.set_query(QUERY)
    assert len(tracker.push(video(1)[0], stamp=0.0)) == 1
    tracker.reset()
    assert tracker.query == QUERY
    assert tracker.push(video(1)[0], stamp=0.0)[0].frame_index == 0


@pytest.mark.parametrize("shape", [(50, 1, 3), (1, 70, 3), (2160, 3840, 3)])
def test_odd_frame_sizes(tiny_model, shape):
    tracker = StreamTracker(tiny_model, mode="frame")
    tracker.set_query(QUERY)
    frame = np.full(shape, 128, dtype=np.uint8)
    (result,) = tracker.push(frame, stamp=0.0)
    assert result.mask.shape == shape[:2]


def test_grayscale_as_rgb_and_non_contiguous_frames(tiny_model):
    tracker = StreamTracker(tiny_model, mode="frame")
    tracker.set_query(QUERY)
    gray = np.repeat(video(1)[0][..., :1], 3, axis=2)
    assert tracker.push(gray, stamp=0.0)[0].mask.shape == (96, 128)
    bgr = video(1)[0]
    view = bgr[::2, ::-1, ::-1]  # strided, reversed, channel-swapped view
    assert not view.flags.c_contiguous
    assert tracker.push(view, stamp=0.1)[0].mask.shape == (48, 128)


@pytest.mark.parametrize("frame, message", [
    (np.zeros((10, 10, 3), dtype=np.float32), "uint8"),
    (np.zeros((10, 10), dtype=np.uint8), "HxWx3"),
    (np.zeros((10, 10, 4), dtype=np.uint8), "HxWx3"),
    (np.zeros((0, 10, 3), dtype=np.uint8), "empty"),
    ([[0, 0, 0]], "numpy array"),
])
def test_wrong_frames_are_value_errors(tiny_model, frame, message):
    tracker = StreamTracker(tiny_model)
    tracker.set_query(QUERY)
    with pytest.raises(ValueError, match=message):
        tracker.push(frame, stamp=0.0)


# precision: (largest mean |mask probability - fp32's| of a frame, smallest share of a frame's pixels whose
# thresholded mask equals fp32's, largest |object score or CME probability - fp32's|). Measured on this
# stream (CPU, torch 2.13): bf16 2.1e-4, 99.56%, 6.3e-4; fp16 2.5e-5, 99.95%, 1.6e-4. The bounds leave
# ~5-10x margin (4x on the disagreeing pixels: the tiny random model's probabilities all lie in
# 0.41-0.56, so any rounding flips some pixels at the 0.5 threshold).
REDUCED_PRECISION_BOUNDS = {"bf16": (2e-3, 0.98, 3e-3), "fp16": (2.5e-4, 0.997, 1e-3)}


@pytest.mark.parametrize("mode", ["clip", "frame"])
def test_reduced_precision_tracks_like_fp32(tiny_model, mode):
    """bf16 and fp16 autocast against fp32 on 6 frames: a second clip reads the memory, the CME decides
    on frame 5."""
    frames = video(6)

    def track(precision):
        tracker = StreamTracker(tiny_model, clip_length=4, mode=mode, precision=precision, keep_probability=True)
        tracker.set_query(QUERY)
        return run(tracker, frames)

    reference = track("fp32")
    stream_errors = {}
    for precision, (max_probability_error, min_agreement, max_score_error) in REDUCED_PRECISION_BOUNDS.items():
        results = track(precision)
        assert [r.frame_index for r in results] == list(range(6))
        errors = [np.abs(r.probability - f.probability).mean() for r, f in zip(results, reference)]
        assert max(errors) < max_probability_error, precision
        assert min((r.mask == f.mask).mean() for r, f in zip(results, reference)) >= min_agreement, precision
        for r, f in zip(results, reference):
            assert r.object_score == pytest.approx(f.object_score, abs=max_score_error), precision
            assert (r.cme_probability is None) == (f.cme_probability is None) == (r.frame_index != 5)
            if f.cme_probability is not None:
                assert r.cme_probability == pytest.approx(f.cme_probability, abs=max_score_error), precision
        stream_errors[precision] = np.mean(errors)
    # each precision really ran (fp32 itself repeats bit for bit), in its own dtype: bf16 keeps 8 mantissa
    # bits to fp16's 11, measured 7.6-8.5x the error
    assert stream_errors["bf16"] > 3 * stream_errors["fp16"] > 0


@pytest.mark.parametrize("size, expected", [
    ((1080, 1920), (576, 1024)),
    ((1024, 1024), (1020, 1020)),  # near-square frames end at 1020, as in the release
    ((480, 640), (768, 1024)),
    ((1920, 1080), (1024, 576)),
    ((1, 4000), (1, 1024)),
])
def test_resized_shape_follows_torchvision_resize(size, expected):
    assert resized_shape(*size, image_size=1024) == expected


def test_resize_is_within_one_grey_level_of_pil():
    frame = video(1, 301, 457, seed=3)[0]
    pixels, (h, w) = preprocess_frame(frame, 1024, torch.device("cpu"))
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    ours = ((pixels * std + mean) * 255).permute(1, 2, 0).numpy()
    reference = np.asarray(Image.fromarray(frame).resize((w, h), Image.BILINEAR), dtype=np.float32)
    assert np.abs(ours - reference).max() <= 1.0


@pytest.mark.parametrize("mode", ["clip", "frame"])
def test_the_text_layers_before_the_first_fusion_run_once_per_query(tiny_model, mode):
    calls = []
    first_layer = tiny_model.text_encoder.model.encoder.layer[0]
    handle = first_layer.register_forward_hook(lambda *_: calls.append(1))
    try:
        tracker = StreamTracker(tiny_model, clip_length=2, mode=mode)
        tracker.set_query(QUERY)
        run(tracker, video(6, 40, 56))
        tracker.set_query("a small green square")
        run(tracker, video(4, 40, 56))
    finally:
        handle.remove()
    assert len(calls) == 2


# queries of 9, 4 and 29 tokens: two fall into the shortest token bucket (16), one into the next (32)
COMPILED_STREAM_QUERIES = (QUERY, "the ball", "the big red ball in the middle of the picture on the left side")


def stream_with_a_reset_and_new_queries(tracker, frames, queries):
    """Results of a stream: the first query, a reset, then each further query for an equal share."""
    share = len(frames) // (len(queries) + 1)
    tracker.set_query(queries[0])
    results = run(tracker, frames[:share])
    tracker.reset()
    results += run(tracker, frames[share : 2 * share])
    for index, query in enumerate(queries[1:], 2):
        tracker.set_query(query)
        results += run(tracker, frames[index * share : (index + 1) * share])
    return results


def compiled_graphs() -> int:
    from torch._dynamo.utils import counters

    return counters["stats"]["unique_graphs"]


@pytest.mark.parametrize("mode, clip_length, model", [("frame", 4, "always_switch"), ("clip", 2, "tiny_model")])
def test_the_compiled_steady_step_is_compiled_at_construction_for_every_query_length(request, tokenizer, mode,
                                                                                    clip_length, model):
    """One compilation, at construction, serves the stream through a reset and new queries of other token
    lengths (padded to their bucket, which changes no result); frame mode with a CME that switches
    wherever its window allows, so that the compiled step branches on the device to decode the
    memory-less mask. Results equal the eager, unpadded step's."""
    import torch._dynamo

    tiny_model = request.getfixturevalue(model)
    lengths = [len(tokenizer(query)["input_ids"]) for query in COMPILED_STREAM_QUERIES]
    assert lengths[1] < lengths[0] <= 16 < lengths[2] <= 32
    per_query = clip_length * ((tiny_model.warm_up_frames(clip_length) + 6) // clip_length + 1)  # whole clips
    frames = video(4 * per_query, 48, 64)
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    tracker = StreamTracker(tiny_model, clip_length=clip_length, mode=mode, keep_probability=True, compile=True)
    assert compiled_graphs() == 1 and tracker.token_lengths == (16, 32, 64, 128) and tracker.compile_seconds > 0
    assert tracker.query == "" and not tracker.compiled_step_active  # the blank stream left nothing behind
    compiled = stream_with_a_reset_and_new_queries(tracker, frames, COMPILED_STREAM_QUERIES)
    assert compiled_graphs() == 1 and tracker.compiled_step_active  # nothing compiled while streaming
    eager = stream_with_a_reset_and_new_queries(
        StreamTracker(tiny_model, clip_length=clip_length, mode=mode, keep_probability=True), frames,
        COMPILED_STREAM_QUERIES)

    assert [r.frame_index for r in compiled] == [r.frame_index for r in eager]
    assert max(r.frame_index for r in eager) >= tiny_model.warm_up_frames(clip_length) + 2
    assert {r.query for r in compiled} == set(COMPILED_STREAM_QUERIES)
    if model == "always_switch":
        assert sum(r.cme_switched for r in compiled if r.frame_index >= tiny_model.warm_up_frames(clip_length)) >= 3
    for c, e in zip(compiled, eager):
        np.testing.assert_allclose(c.probability, e.probability, rtol=0, atol=1e-3)
        assert c.object_score == pytest.approx(e.object_score, abs=1e-3)
        assert c.cme_switched == e.cme_switched and (c.cme_probability is None) == (e.cme_probability is None)
        if e.cme_probability is not None:
            assert c.cme_probability == pytest.approx(e.cme_probability, abs=1e-3)

    released = weakref.ref(tracker)
    gc.disable()
    try:
        del tracker
        assert released() is None  # by reference counting alone: the compiler's garbage was collected
    finally:
        gc.enable()
