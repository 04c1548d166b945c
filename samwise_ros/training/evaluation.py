"""Held-out scores during training: the tracker over each clip, J and F as DAVIS defines them, each
clip scored as one expression (the per-expression protocol of MeViS and Ref-YouTube-VOS)."""

from __future__ import annotations

from typing import Iterable

import torch

from ..eval.scoring import ExpressionScore, score_expression, summarize_expressions
from ..model import Samwise
from ..tracker import StreamTracker, TrackResult
from .batches import clip_tensors


def segment_clip(model: Samwise, clip, mode: str = "clip", use_cme: bool | None = None,
                 clip_length: int | None = None) -> list[TrackResult]:
    """The tracker's results over one clip segmented from a clean state (in clips of `clip_length`
    frames, by default one of the clip's length): a result per frame, in order."""
    tracker = StreamTracker(model, clip_length=clip_length or len(clip.frames), mode=mode, use_cme=use_cme)
    tracker.set_query(clip.expression)
    results = []
    for index, frame in enumerate(clip.frames):
        results += tracker.push(frame, stamp=float(index))
    return results + tracker.flush()


def clip_scores(model: Samwise, clips: Iterable, mode: str = "clip", use_cme: bool | None = None,
                clip_length: int | None = None) -> list[ExpressionScore]:
    """Mean J and F over the frames of each clip, a clip segmented from a clean state."""
    return [score_expression(clip.source, "0", clip.expression, list(clip.masks),
                             [result.mask for result in segment_clip(model, clip, mode, use_cme, clip_length)])
            for clip in clips]


def summarize(scores: list[ExpressionScore], prefix: str = "eval_") -> dict[str, float]:
    """Mean over clips of each clip's J, F and J&F."""
    summary = summarize_expressions(scores)
    return {f"{prefix}J": summary["J"], f"{prefix}F": summary["F"], f"{prefix}JF": summary["J&F"]}


def score_clips(model: Samwise, clips: Iterable, mode: str = "clip", use_cme: bool | None = None) -> dict[str, float]:
    return summarize(clip_scores(model, clips, mode, use_cme))


def decoder_input_scales(model: Samwise, clip) -> dict[str, float]:
    """Standard deviations of what the mask decoder attends to on one clip: the top-level image features
    and the text prompt token. Trained from scratch they grow with the learning rate (the adapters'
    residuals) until the decoder's attention is one-hot; a fresh demo-size model has about 0.7 and 0.1."""
    tensors = clip_tensors(clip.frames, clip.masks, clip.expression, model.image_size, model.device)
    with torch.no_grad():
        features = model.encode_clip(tensors.frames, model.tokenize(clip.expression))
        prompt = model.text_prompt(features.text_state)
    return {"image_embedding_std": features.vision_feats[-1].std().item(), "text_prompt_std": prompt.std().item()}
