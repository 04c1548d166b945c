"""Held-out scores during training: the tracker over each clip, J and F as DAVIS defines them."""

from __future__ import annotations

from typing import Iterable

import numpy as np

from ..eval import contour_accuracy, region_similarity
from ..model import Samwise
from ..tracker import StreamTracker


def score_clips(model: Samwise, clips: Iterable, mode: str = "clip", use_cme: bool | None = None) -> dict[str, float]:
    """Mean over clips of each clip's mean J, F and J&F (the per-expression protocol)."""
    j_means, f_means = [], []
    for clip in clips:
        tracker = StreamTracker(model, clip_length=len(clip.frames), mode=mode, use_cme=use_cme)
        tracker.set_query(clip.expression)
        results = []
        for index, frame in enumerate(clip.frames):
            results += tracker.push(frame, stamp=float(index))
        results += tracker.flush()
        j_means.append(np.mean([region_similarity(clip.masks[r.frame_index], r.mask) for r in results]))
        f_means.append(np.mean([contour_accuracy(clip.masks[r.frame_index], r.mask) for r in results]))
    j, f = float(np.mean(j_means)), float(np.mean(f_means))
    return {"eval_J": j, "eval_F": f, "eval_JF": (j + f) / 2}
