"""samwise-demo: segment a synthetic video end to end and write what the model saw and said.

Until this package ships trained demo weights, the default model is a tiny SAMWISE with random
weights (seeded): the run shows the whole pipeline working (video -> tracker -> masks, CME events,
overlay video), not a good segmentation. Pass --checkpoint to use real weights.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from ..data.synthetic import demo_scene, scene_corpus
from ..model import Samwise, SamwiseConfig
from ..model.tokenizer import train_roberta_tokenizer
from ..overlay import draw_overlay
from ..runtime import resolve_device, resolve_precision
from ..tracker import StreamTracker


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="samwise-demo", description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, help="a model directory saved by this package, or a released .pth")
    parser.add_argument("--tokenizer", type=Path, help="tokenizer directory for a released .pth")
    parser.add_argument("--query", help="referring expression (default: the scene's own)")
    parser.add_argument("--frames", type=int, default=48, help="number of frames to generate")
    parser.add_argument("--mode", choices=("clip", "frame"), default="clip")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--output", type=Path, default=Path("output/demo"))
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def build_model(args: argparse.Namespace, device: torch.device, precision: str) -> tuple[Samwise, str]:
    if args.checkpoint is not None:
        return Samwise.from_path(args.checkpoint, args.tokenizer, device, precision), str(args.checkpoint)
    tokenizer = train_roberta_tokenizer(scene_corpus(), Path(tempfile.mkdtemp(prefix="samwise-tokenizer-")), 512)
    torch.manual_seed(args.seed)
    model = Samwise(SamwiseConfig.tiny(vocab_size=len(tokenizer)), tokenizer=tokenizer)
    return model.prepare(device, precision), "tiny SAMWISE with random weights (no trained demo weights yet)"


def main(argv=None) -> int:
    args = parse_args(argv)
    device = resolve_device(args.device)
    precision = resolve_precision(args.precision, device)
    model, description = build_model(args, device, precision)
    scene = demo_scene(args.seed)
    query = args.query or scene.expression
    tracker = StreamTracker(model, mode=args.mode)
    tracker.set_query(query)

    args.output.mkdir(parents=True, exist_ok=True)
    video = cv2.VideoWriter(str(args.output / "overlay.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), 10.0,
                            (scene.width, scene.height))
    frames, truths, pictures, ious = {}, {}, [], []
    started = time.perf_counter()
    with open(args.output / "results.jsonl", "w") as log:
        for index, (image, truth) in enumerate(scene.frames(args.frames)):
            frames[index], truths[index] = image, truth
            results = tracker.push(image, stamp=index / 10.0)
            if index == args.frames - 1:
                results += tracker.flush()
            for result in results:
                image = frames.pop(result.frame_index)
                truth = truths.pop(result.frame_index)
                ious.append(iou(result.mask, truth))
                picture = draw_overlay(image, result.mask, query, result.centroid, result.bbox,
                                       result.cme_switched, result.object_score)
                video.write(picture)
                pictures.append(picture)
                log.write(json.dumps(result_record(result)) + "\n")
    video.release()
    elapsed = time.perf_counter() - started
    strip = np.concatenate(pictures[:: max(1, len(pictures) // 6)][:6], axis=1)
    cv2.imwrite(str(args.output / "strip.png"), strip)

    print(f"model:   {description} on {device} ({precision}), mode {args.mode}")
    print(f"query:   {query!r}")
    print(f"frames:  {len(pictures)} in {elapsed:.1f} s ({len(pictures) / elapsed:.1f} frames/s)")
    print(f"mean IoU with the true mask: {np.mean(ious):.3f}")
    print(f"output:  {args.output / 'overlay.mp4'}, {args.output / 'strip.png'}, {args.output / 'results.jsonl'}")
    return 0


def iou(mask: np.ndarray, truth: np.ndarray) -> float:
    union = np.logical_or(mask, truth).sum()
    return float(np.logical_and(mask, truth).sum() / union) if union else 1.0


def result_record(result) -> dict:
    return {
        "frame_index": result.frame_index, "stamp": result.stamp, "detected": result.detected,
        "object_score": round(result.object_score, 4), "area": result.area, "bbox": result.bbox,
        "centroid": result.centroid, "cme_probability": result.cme_probability, "cme_switched": result.cme_switched,
    }


if __name__ == "__main__":
    raise SystemExit(main())
