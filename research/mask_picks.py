#!/usr/bin/env python3
"""Which shape a model's masks pick on held-out synthetic scenes: where its J&F goes.

Each held-out scene runs through the tracker as one stream. On every frame the mask is attributed to the
shape whose footprint it overlaps most (among the shapes already shown), and counted as the target, as a
look-alike (by the attributes in which it differs from the target: "size", "colour+size", ...), as empty,
or, on frames where the target is not visible, as empty (right) or a false positive. J is averaged over
the frames where the target is picked: mask quality apart from the choice of shape. On appears-later
and switch scenes the counts are split before and after the target's first frame.

    python -m research.mask_picks samwise_ros/weights/demo --kind appearance --scenes 30
"""

from __future__ import annotations

import argparse
from collections import Counter

import numpy as np

from samwise_ros.data.synthetic import HELD_OUT_SEED_OFFSET, KINDS, Scene, SyntheticReferringVideos
from samwise_ros.model import Samwise
from samwise_ros.training.evaluation import segment_clip

MIN_MASK_PIXELS = 20  # fewer: the mask counts as empty


def picked_shape(scene: Scene, frame: int, mask: np.ndarray) -> int | None:
    """Index of the shown shape the mask overlaps most, None for an (almost) empty mask."""
    if mask.sum() < MIN_MASK_PIXELS:
        return None
    overlaps = [(mask & scene.footprint(index, frame)).sum() if shape.first_frame <= frame else -1
                for index, shape in enumerate(scene.shapes)]
    return int(np.argmax(overlaps))


def attribute_difference(scene: Scene, picked: int, target: int) -> str:
    """The appearance attributes in which shape `picked` differs from the target, "+"-joined."""
    said, meant = scene.describe(picked), scene.describe(target)
    return "+".join(name for name in ("shape", "colour", "size") if getattr(said, name) != getattr(meant, name)) or "same look"


def frame_outcome(scene: Scene, frame: int, mask: np.ndarray, truth: np.ndarray) -> str:
    picked = picked_shape(scene, frame, mask)
    if not truth.any():
        return "absent: empty" if picked is None else "absent: false positive"
    if picked is None:
        return "empty"
    return "target" if picked == scene.target else f"look-alike ({attribute_difference(scene, picked, scene.target)})"


def tally(model: Samwise, kind: str, scenes: int, frames: int, use_cme: bool | None = None):
    """(Counter of outcomes by phase, J on the frames where the target is picked)."""
    dataset = SyntheticReferringVideos(length=scenes, frames=frames, kinds=(kind,), seed=HELD_OUT_SEED_OFFSET)
    outcomes, target_j = Counter(), []
    for index in range(scenes):
        scene, clip = dataset.scene(index), dataset[index]
        results = segment_clip(model, clip, use_cme=use_cme)
        first_frame = scene.shapes[scene.target].first_frame
        for frame, (result, truth) in enumerate(zip(results, clip.masks)):
            mask = result.mask.astype(bool)
            outcome = frame_outcome(scene, frame, mask, truth)
            phase = "" if not first_frame else ("before it appears: " if frame < first_frame else "after: ")
            outcomes[phase + outcome] += 1
            if outcome == "target":
                target_j.append((mask & truth).sum() / (mask | truth).sum())
    return outcomes, float(np.mean(target_j)) if target_j else float("nan")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", help="a model directory")
    parser.add_argument("--kind", choices=KINDS, default="appearance")
    parser.add_argument("--scenes", type=int, default=30)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--no-cme", action="store_true")
    args = parser.parse_args(argv)
    model = Samwise.load(args.model).eval()
    outcomes, target_j = tally(model, args.kind, args.scenes, args.frames, use_cme=False if args.no_cme else None)
    total = sum(outcomes.values())
    for outcome, count in sorted(outcomes.items()):
        print(f"{outcome:45s} {count:5d}  {count / total:6.1%}")
    print(f"J on the frames where the target is picked: {target_j:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
