"""J&F of whole sequences and expressions, and the summaries the benchmarks report.

- DAVIS 2017 (Ref-DAVIS17 as SAMWISE evaluates it: the davis2017-evaluation "unsupervised" task): the
  prediction of a sequence is one indexed PNG per frame; its objects are matched one to one with the
  ground-truth objects (Hungarian, on the mean of J and F over the frames), unmatched ground truth
  scores against an empty mask, more than 20 predicted objects is an error; void (255) is ignored.
  Each ground-truth object gives mean/recall/decay of J and F; the benchmark averages the objects.
- Per expression (MeViS, Ref-YouTube-VOS layouts): J and F averaged over the frames of an expression;
  the benchmark averages the expressions. J&F = (J + F) / 2 in both.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.optimize import linear_sum_assignment

from .datasets import read_labels, read_mask
from .metrics import contour_accuracy, davis_statistics, region_similarity

VOID = 255
MAX_PROPOSALS = 20  # DAVIS's limit on predicted objects per sequence


@dataclass
class ObjectScore:
    """One ground-truth object of a DAVIS sequence."""

    sequence: str
    object_id: int
    j: tuple[float, float, float]  # mean, recall, decay over the frames
    f: tuple[float, float, float]


@dataclass
class ExpressionScore:
    video: str
    exp_id: str
    text: str
    j: float  # mean over the frames
    f: float


def score_davis_sequence(sequence: str, gt_dir: Path, pred_dir: Path) -> list[ObjectScore]:
    """The DAVIS 2017 unsupervised-task scores of one sequence, one per ground-truth object."""
    names = sorted(p.stem for p in Path(gt_dir).glob("*.png"))
    if not names:
        raise FileNotFoundError(f"no ground-truth PNGs in {gt_dir}")
    missing = [name for name in names if not (Path(pred_dir) / f"{name}.png").is_file()]
    if missing:
        raise FileNotFoundError(f"{sequence}: no prediction for frames {', '.join(missing[:5])} in {pred_dir}")
    truth = np.stack([read_labels(Path(gt_dir) / f"{name}.png") for name in names]).astype(np.int64)
    prediction = np.stack([read_labels(Path(pred_dir) / f"{name}.png") for name in names]).astype(np.int64)
    if prediction.shape != truth.shape:
        raise ValueError(f"{sequence}: predicted masks are {prediction.shape[1:]}, ground truth {truth.shape[1:]}")
    void = truth == VOID
    truth[void] = 0
    gt_objects = int(truth[0].max())  # DAVIS counts the objects of the first annotated frame
    pred_objects = int(prediction.max())
    if pred_objects > MAX_PROPOSALS:
        raise ValueError(f"{sequence}: {pred_objects} predicted objects, more than the {MAX_PROPOSALS} DAVIS allows")
    candidates = max(pred_objects, gt_objects)  # missing predictions are empty masks
    j = np.zeros((candidates, gt_objects, len(names)))
    f = np.zeros_like(j)
    for p in range(candidates):
        for g in range(gt_objects):
            for t in range(len(names)):
                pred_mask, gt_mask = prediction[t] == p + 1, truth[t] == g + 1
                j[p, g, t] = region_similarity(gt_mask, pred_mask, void[t])
                f[p, g, t] = contour_accuracy(gt_mask, pred_mask, void[t])
    rows, cols = linear_sum_assignment(-(j.mean(axis=2) + f.mean(axis=2)) / 2)
    # keyed by the ground-truth object (the DAVIS code lists the pairs in prediction order instead;
    # the benchmark's averages are the same)
    return [ObjectScore(sequence, int(g) + 1, davis_statistics(j[p, g]), davis_statistics(f[p, g]))
            for p, g in sorted(zip(rows, cols), key=lambda pair: pair[1])]


def summarize_davis(objects: list[ObjectScore]) -> dict:
    """The DAVIS global table: J&F-Mean, then mean/recall/decay of J and of F over all objects."""
    j = np.array([o.j for o in objects]).reshape(-1, 3).mean(axis=0)
    f = np.array([o.f for o in objects]).reshape(-1, 3).mean(axis=0)
    return {"J&F-Mean": (j[0] + f[0]) / 2, "J-Mean": j[0], "J-Recall": j[1], "J-Decay": j[2],
            "F-Mean": f[0], "F-Recall": f[1], "F-Decay": f[2], "objects": len(objects)}


def score_expression(video: str, exp_id: str, text: str, truth: list[np.ndarray],
                     prediction: list[np.ndarray]) -> ExpressionScore:
    """Mean J and F over the frames of one expression (boolean HxW masks, frame by frame)."""
    if len(truth) != len(prediction):
        raise ValueError(f"{video}/{exp_id}: {len(prediction)} predicted frames for {len(truth)} annotated")
    j = [region_similarity(gt, pred) for gt, pred in zip(truth, prediction)]
    f = [contour_accuracy(gt, pred) for gt, pred in zip(truth, prediction)]
    return ExpressionScore(video, exp_id, text, float(np.mean(j)), float(np.mean(f)))


def summarize_expressions(scores: list[ExpressionScore]) -> dict:
    j = float(np.mean([s.j for s in scores])) if scores else float("nan")
    f = float(np.mean([s.f for s in scores])) if scores else float("nan")
    return {"J&F": (j + f) / 2, "J": j, "F": f, "expressions": len(scores)}


def score_expression_folders(pred_root: Path, gt_root: Path) -> list[ExpressionScore]:
    """PRED/<video>/<exp_id>/<frame>.png against GT/<video>/<exp_id>/<frame>.png (binary masks), over the
    ground truth's frames and expressions."""
    scores = []
    for exp_dir in sorted(p for p in Path(gt_root).glob("*/*") if p.is_dir()):
        video, exp_id = exp_dir.parent.name, exp_dir.name
        names = sorted(p.stem for p in exp_dir.glob("*.png"))
        pred_dir = Path(pred_root) / video / exp_id
        missing = [name for name in names if not (pred_dir / f"{name}.png").is_file()]
        if missing:
            raise FileNotFoundError(f"{video}/{exp_id}: no prediction for frames {', '.join(missing[:5])}")
        scores.append(score_expression(video, exp_id, "", [read_mask(exp_dir / f"{n}.png") for n in names],
                                       [read_mask(pred_dir / f"{n}.png") for n in names]))
    return scores


def score_mevis_folder(pred_root: Path, dataset) -> list[ExpressionScore]:
    """PRED/<video>/<exp_id>/<frame>.png (binary masks) against a MeViS split's mask_dict.json."""
    scores = []
    for video in dataset.videos:
        for expression in video.expressions:
            paths = [Path(pred_root) / video.name / expression.exp_id / f"{name}.png" for name in video.frame_names]
            missing = [p.name for p in paths if not p.is_file()]
            if missing:
                raise FileNotFoundError(f"{video.name}/{expression.exp_id}: no prediction for {', '.join(missing[:5])}")
            prediction = [read_mask(p) for p in paths]
            truth = dataset.ground_truth(video, expression, prediction[0].shape)
            scores.append(score_expression(video.name, expression.exp_id, expression.text, list(truth), prediction))
    return scores
