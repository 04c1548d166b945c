#!/usr/bin/env python3
"""This package against the official SAMWISE code on one GPU: frames/s on the same frames and weights.

    .venv/bin/python benchmarks/versus_official.py --official PATH_TO_SAMWISE_CHECKOUT   # on CUDA
    .venv/bin/python benchmarks/versus_official.py --official PATH --device cpu --config tiny --frames 40 --warm-up 16

The official repository (ClaudiaCuttano/SAMWISE) is loaded as research/compare_with_official.py loads it
(its text encoder shimmed onto this package's RoBERTa layers) and runs fp32, as released, in clips of
`--clip-length` frames. This package runs the same official-size model (Hiera-B+, RoBERTa-base shapes,
1024 px, random weights: speed does not depend on them) through StreamTracker: clip mode in fp32 and bf16,
eager and compiled, and frame mode in bf16, eager and compiled. Each run's frames/s counts the frames
after the first `--warm-up` (compilation and CUDA graph capture happen there); the ratios are to the
official code's frames/s measured in the same process.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "test")]

from research.compare_with_official import build_official, randomise  # noqa: E402
from samwise_ros.data.synthetic import demo_scene  # noqa: E402
from samwise_ros.model import Samwise, SamwiseConfig  # noqa: E402
from samwise_ros.preprocess import preprocess_frame  # noqa: E402
from samwise_ros.tracker import StreamTracker  # noqa: E402

OURS = (("clip", "fp32", False), ("clip", "fp32", True), ("clip", "bf16", False), ("clip", "bf16", True),
        ("frame", "bf16", False), ("frame", "bf16", True))


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def official_fps(model, pixels: torch.Tensor, caption: str, clip_length: int, warm_up: int) -> float:
    """Frames/s of the official forward over clips of `clip_length`, timed after `warm_up` frames."""
    started = None
    for start in range(0, len(pixels) - clip_length + 1, clip_length):
        if start >= warm_up and started is None:
            synchronize(pixels.device)
            started, first = time.perf_counter(), start
        clip = pixels[start : start + clip_length]
        with torch.no_grad():
            model([clip], [caption], [{"frame_ids": list(range(start, start + clip_length))}])
    synchronize(pixels.device)
    return (start + clip_length - first) / (time.perf_counter() - started)


def our_fps(model: Samwise, mode: str, compile: bool, frames: list[np.ndarray], caption: str, clip_length: int,
            warm_up: int) -> tuple[float, bool]:
    tracker = StreamTracker(model, clip_length=clip_length, mode=mode, compile=compile)
    tracker.set_query(caption)
    started, first = None, 0
    for index, frame in enumerate(frames):
        if index == warm_up:
            synchronize(model.device)
            started, first = time.perf_counter(), index
        tracker.push(frame, stamp=index / 30.0)
    synchronize(model.device)
    return (len(frames) - first) / (time.perf_counter() - started), tracker.compiled_step_active


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--official", type=Path, required=True, help="a checkout of ClaudiaCuttano/SAMWISE")
    parser.add_argument("--frames", type=int, default=400)
    parser.add_argument("--warm-up", type=int, default=96)
    parser.add_argument("--clip-length", type=int, default=8)
    parser.add_argument("--size", type=int, nargs=2, default=(480, 640), metavar=("H", "W"))
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--config", choices=("official", "tiny"), default="official",
                        help="tiny: a small Hiera at 1024 px (the official code's fixed size), to try the script on a CPU")
    args = parser.parse_args()
    device = torch.device(args.device)

    from helpers.fixtures import write_roberta_tokenizer
    from transformers import RobertaTokenizerFast

    import cv2

    tokenizer = RobertaTokenizerFast.from_pretrained(str(write_roberta_tokenizer(Path(tempfile.mkdtemp()))))
    torch.manual_seed(0)
    if args.config == "tiny":
        config = SamwiseConfig.tiny(vocab_size=len(tokenizer), image_size=1024)
    else:
        config = SamwiseConfig.official(text_encoder=dict(SamwiseConfig.official().text_encoder, vocab_size=len(tokenizer)))
    ours = Samwise(config, tokenizer=tokenizer).eval()
    randomise(ours, 0)
    official = build_official(args.official, config, ours, tokenizer, redirect_cuda=device.type == "cpu").to(device)
    ours = ours.prepare(device)

    scene = demo_scene()
    frames = [cv2.resize(scene.render(i % 16)[0], (args.size[1], args.size[0])) for i in range(args.frames)]
    pixels = torch.stack([preprocess_frame(frame, ours.image_size, ours.device)[0] for frame in frames])
    caption = scene.expression
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"{name}, {args.config} model, frames {args.size[0]}x{args.size[1]}, "
          f"{args.frames} frames per run, timed after {args.warm_up}")
    reference = official_fps(official, pixels, caption, args.clip_length, args.warm_up)
    print(f"official code   clip  fp32  eager     {reference:7.1f} frames/s   1.00x")
    for mode, precision, compile in OURS:
        ours.prepare(device, precision)
        fps, active = our_fps(ours, mode, compile, frames, caption, args.clip_length, args.warm_up)
        note = "" if active or not compile else "   (compiled step NOT active)"
        print(f"samwise_ros     {mode:5s} {precision}  {'compiled' if compile else 'eager':8s}  {fps:7.1f} frames/s"
              f"   {fps / reference:.2f}x{note}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
