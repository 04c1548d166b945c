#!/usr/bin/env python3
"""Stream benchmark: per-frame latency, throughput, and whether memory and time stay flat.

    .venv/bin/python benchmarks/stream.py                          # tiny config, CPU, 5,000 frames per run
    .venv/bin/python benchmarks/stream.py --config demo --frames 400 --compile both
    .venv/bin/python benchmarks/stream.py --config official --device cuda --precision bf16 --frames 3000 --compile both

Each run is a mode (clip, frame) and a step (eager, compiled: StreamTracker(compile=True), whose
construction compiles it for every query length: its time is printed as the compile time); the summary
gives each run's time per frame (p50/p95 over the frames past the first `--warm-up`, a clip's time divided by its
length in clip mode), the frame/clip and eager/compiled ratios measured in this one process, and the
allocated memory (GPU; resident memory on the CPU) at frame 100 and at the end.
Latency is from a frame's push to the moment its result is returned (in clip mode a frame waits for
its clip, so that includes the wait). Flatness compares the 400 frames from frame 100 with the last 400
(median over clips of the time per frame, target within 5%) and the resident memory at frame 1,000 with the end
(target within 2%; frame 100 is reported as warm-up); every 400-frame window's time is printed too, so
that a trend can be told from a shared machine's phases. Random weights: speed does not depend on them.
"""

from __future__ import annotations

import argparse
import math
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from samwise_ros.data.synthetic import demo_scene, scene_corpus
from samwise_ros.model import Samwise, SamwiseConfig
from samwise_ros.model.tokenizer import train_roberta_tokenizer
from samwise_ros.runtime import resolve_device, resolve_precision
from samwise_ros.tracker import StreamTracker

CHECKPOINTS = (100, 1000)
FLATNESS_FRAMES = 896  # frames 96-495 and a last 400 apart from them


def resident_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def median_time_per_frame(step_times: list[float], clip: int) -> float:
    """Median over whole clips of the clip's time divided by its length (robust to stray stalls)."""
    clips = [sum(step_times[i : i + clip]) / clip for i in range(0, len(step_times) - clip + 1, clip)]
    return statistics.median(clips)


def time_per_frame(step_times: list[float], clip: int, warm_up: int) -> list[float]:
    """Each clip's time divided by its length, past the first `warm_up` frames (the eager warm-up of a stream,
    and the caches settling)."""
    return [sum(step_times[i : i + clip]) / clip for i in range(warm_up, len(step_times) - clip + 1, clip)]


def run_mode(model: Samwise, mode: str, compile: bool, frames: list[np.ndarray], count: int, warm_up: int,
             device: torch.device) -> dict:
    constructed = time.perf_counter()
    tracker = StreamTracker(model, mode=mode, compile=compile)
    compile_s = time.perf_counter() - constructed
    tracker.set_query(demo_scene().expression)
    pushed_at, latencies, step_times, rss, gpu = {}, [], [], {}, {}
    started = time.perf_counter()
    for index in range(count):
        frame = frames[index % len(frames)]
        before = time.perf_counter()
        pushed_at[index] = before
        results = tracker.push(frame, stamp=index / 30.0)
        if device.type == "cuda":
            torch.cuda.synchronize()
        now = time.perf_counter()
        step_times.append(now - before)
        for result in results:
            latencies.append(now - pushed_at.pop(result.frame_index))
        if index + 1 in CHECKPOINTS or index + 1 == count:
            rss[index + 1] = resident_mib()
            if device.type == "cuda":
                gpu[index + 1] = torch.cuda.memory_allocated(device) / 2**20
    elapsed = time.perf_counter() - started
    clip = 1 if mode == "frame" else tracker.clip_length
    end = count - count % clip
    # 400-frame windows (50 clips): a single clip's time varies by tens of percent on a shared machine;
    # a run too short for two of them has no flatness figures
    long_enough = count >= FLATNESS_FRAMES
    early = median_time_per_frame(step_times[96:496], clip) if long_enough else math.nan  # whole clips from frame 96
    late = median_time_per_frame(step_times[end - 400:end], clip) if long_enough else math.nan
    # every window, so that a trend shows apart from the machine's phases
    windows = [median_time_per_frame(step_times[start:start + 400], clip) for start in range(96, end - 399, 400)]
    per_frame = time_per_frame(step_times[:end], clip, warm_up)
    return {
        "time_p50_ms": 1000 * statistics.median(per_frame),
        "time_p95_ms": 1000 * float(np.percentile(per_frame, 95)),
        "compiled_step_active": tracker.compiled_step_active,
        "compile_s": compile_s,
        "latency_p50_ms": 1000 * statistics.median(latencies),
        "latency_p95_ms": 1000 * float(np.percentile(latencies, 95)),
        "fps": count / elapsed,
        "rss_mib": rss,
        "gpu_mib": gpu,
        "time_early_ms": 1000 * early,
        "time_late_ms": 1000 * late,
        "time_windows_ms": [1000 * window for window in windows],
        "memory_bank": tracker.memory_size,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", choices=("tiny", "demo", "official"), default="tiny",
                        help="a preset with random weights (speed does not depend on them); demo: the demo weights' 256 px")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--frames", type=int, default=5000)
    parser.add_argument("--warm-up", type=int, default=96, help="frames left out of the summary's times (a multiple of 8)")
    parser.add_argument("--modes", nargs="+", default=["clip", "frame"])
    parser.add_argument("--compile", choices=("off", "on", "both"), default="off",
                        help="the eager step, the compiled one, or both (compiling takes minutes on a CPU)")
    parser.add_argument("--size", type=int, nargs=2, default=(240, 320), metavar=("H", "W"))
    args = parser.parse_args()

    device = resolve_device(args.device)
    precision = resolve_precision(args.precision, device)
    torch.manual_seed(0)
    tokenizer = train_roberta_tokenizer(scene_corpus(), Path(tempfile.mkdtemp()), 512)
    presets = {"tiny": SamwiseConfig.tiny, "demo": SamwiseConfig.demo}
    config = presets[args.config](vocab_size=len(tokenizer)) if args.config in presets else SamwiseConfig.official()
    model = Samwise(config, tokenizer=tokenizer).prepare(device, precision)
    scene = demo_scene()
    frames = [scene.render(i)[0] for i in range(16)]
    if tuple(args.size) != (scene.height, scene.width):
        import cv2

        frames = [cv2.resize(f, (args.size[1], args.size[0])) for f in frames]

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    print(f"config {args.config}, image size {model.image_size}, frames {args.size[0]}x{args.size[1]}, "
          f"{name}, {precision}, {args.frames} frames per run")
    steps = {"off": [False], "on": [True], "both": [False, True]}[args.compile]
    summary = {}
    for mode in args.modes:
        for compile in steps:
            label = f"{mode}, {'compiled' if compile else 'eager'}"
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            stats = run_mode(model, mode, compile, frames, args.frames, args.warm_up, device)
            print_run(label, stats, args.frames, device)
            summary[mode, compile] = stats
    print_summary(summary, device)
    return 0


def print_run(label: str, stats: dict, count: int, device: torch.device) -> None:
    rss = stats["rss_mib"]
    rss_drift = 100 * (rss[count] - rss[1000]) / rss[1000] if 1000 in rss else float("nan")
    time_drift = 100 * (stats["time_late_ms"] - stats["time_early_ms"]) / stats["time_early_ms"]
    print(f"[{label}] tracker built in {stats['compile_s']:.1f} s; latency p50 {stats['latency_p50_ms']:.1f} ms, "
          f"p95 {stats['latency_p95_ms']:.1f} ms, throughput {stats['fps']:.1f} frames/s, memory bank "
          f"{stats['memory_bank']} frames")
    if count < FLATNESS_FRAMES:
        return
    print(f"[{label}] RSS MiB " + ", ".join(f"@{k}: {v:.1f}" for k, v in sorted(rss.items()))
          + f"; drift 1,000 -> {count}: {rss_drift:+.2f}% ({'ok' if abs(rss_drift) <= 2 else 'OVER 2%'})")
    print(f"[{label}] time per frame, frames 96-495: {stats['time_early_ms']:.2f} ms, last 400: "
          f"{stats['time_late_ms']:.2f} ms; drift {time_drift:+.2f}% ({'ok' if abs(time_drift) <= 5 else 'OVER 5%'})")
    print(f"[{label}] time per frame by 400-frame window from frame 96 (ms): "
          + " ".join(f"{window:.1f}" for window in stats["time_windows_ms"]))
    if device.type == "cuda":
        print(f"[{label}] GPU memory allocated MiB " + ", ".join(f"@{k}: {v:.1f}" for k, v in sorted(stats["gpu_mib"].items()))
              + f"; peak {torch.cuda.max_memory_allocated(device) / 2**20:.0f} MiB")


def print_summary(summary: dict, device: torch.device) -> None:
    memory = "gpu_mib" if device.type == "cuda" else "rss_mib"
    print("summary: time per frame p50 / p95 (ms), frames/s at p50, "
          f"{'GPU allocated' if device.type == 'cuda' else 'resident'} MiB at frame 100 and at the end, "
          "compile time (s)")
    for (mode, compile), stats in summary.items():
        held = stats[memory]
        step = "compiled" if compile else "eager"
        active = "" if not compile or stats["compiled_step_active"] else " (compiled step NOT active)"
        print(f"  {mode:5s} {step:8s} {stats['time_p50_ms']:8.2f} / {stats['time_p95_ms']:8.2f}   "
              f"{1000 / stats['time_p50_ms']:7.1f}   {held.get(100, float('nan')):.1f} -> {held[max(held)]:.1f}   "
              f"{stats['compile_s'] if compile else 0:.0f}{active}")
    for compile in (False, True):
        if ("frame", compile) in summary and ("clip", compile) in summary:
            ratio = summary["frame", compile]["time_p50_ms"] / summary["clip", compile]["time_p50_ms"]
            print(f"  frame/clip ({'compiled' if compile else 'eager'}): {ratio:.2f}")
    for mode in ("clip", "frame"):
        if (mode, False) in summary and (mode, True) in summary:
            ratio = summary[mode, False]["time_p50_ms"] / summary[mode, True]["time_p50_ms"]
            print(f"  eager/compiled ({mode}): {ratio:.2f}")


if __name__ == "__main__":
    raise SystemExit(main())
