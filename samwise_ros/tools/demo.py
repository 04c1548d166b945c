"""samwise-demo: the ROS 2 demo end to end, without `ros2 launch`.

A player publishes the bundled synthetic video as a camera; samwise_node segments it with the bundled
demo weights (or --checkpoint); this process records the node's topics over DDS (loopback only) and
writes what it saw: the node's overlay as a video, a GIF and a frame strip, and every result as JSON
lines, with J&F against the scene's true masks.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import cv2
import numpy as np

from ..data.synthetic import demo_scene
from ..eval.scoring import score_expression

# The README's animation stays small: 200 px wide, every other frame, 32 colours (the scene's sensor
# noise compresses badly).
GIF_WIDTH, GIF_FRAME_STEP, GIF_COLOURS = 200, 2, 32


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="samwise-demo", description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default="", help="model directory or released .pth (default: the bundled "
                                                         "demo weights)")
    parser.add_argument("--tokenizer", default="", help="tokenizer directory for a released .pth")
    parser.add_argument("--query", help="referring expression (default: the scene's own)")
    parser.add_argument("--frames", type=int, default=48, help="frames of the synthetic scene")
    parser.add_argument("--rate", type=float, default=5.0,
                        help="camera frame rate (the demo weights take about 0.15 s a frame on 2 CPU cores)")
    parser.add_argument("--mode", choices=("clip", "frame"), default="frame", help="the node's mode")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--output", type=Path, default=Path("output/demo"))
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    from .demo_pipeline import DemoError, run_pipeline  # rclpy: only once the arguments are fine

    scene = demo_scene()
    rendered = list(scene.frames(args.frames))
    query = args.query or scene.expression
    node_parameters = dict(checkpoint=args.checkpoint, tokenizer=args.tokenizer, query=query, mode=args.mode,
                           device=args.device, image_reliability="reliable", publish_overlay=True)
    print(f"samwise-demo: {args.frames} frames at {args.rate:g} Hz, query {query!r}, "
          f"model {args.checkpoint or 'bundled demo weights'} (starting samwise_node and samwise_player)")
    started = time.perf_counter()
    try:
        recording = run_pipeline([np.ascontiguousarray(rgb[:, :, ::-1]) for rgb, _ in rendered], node_parameters,
                                 args.rate)
    except DemoError as error:
        print(f"samwise-demo: error: {error}")
        return 1
    elapsed = time.perf_counter() - started
    if not recording.results:
        print("samwise-demo: error: the node published no results")
        return 1

    args.output.mkdir(parents=True, exist_ok=True)
    processed = sorted(recording.results)
    write_results(args.output / "results.jsonl", recording, processed)
    pictures = [recording.overlays[i] for i in processed if i in recording.overlays]
    write_video(args.output / "overlay.mp4", pictures, args.rate)
    write_gif(args.output / "overlay.gif", pictures, args.rate)
    write_strip(args.output / "strip.jpg", pictures)
    j, f = score(recording, {i: truth for i, (_, truth) in enumerate(rendered)}, query)

    print(f"frames:  {recording.frames_published} published, {len(processed)} segmented "
          f"({recording.frames_published - len(processed)} dropped as stale) in {elapsed:.1f} s")
    print(f"detected in {sum(recording.results[i].detected for i in processed)} frames, "
          f"{len(recording.switches)} CME switches")
    print(f"J&F against the true masks: {(j + f) / 2:.3f} (J {j:.3f}, F {f:.3f})")
    print(f"output:  {args.output / 'overlay.mp4'}, {args.output / 'overlay.gif'}, {args.output / 'strip.jpg'}, "
          f"{args.output / 'results.jsonl'}")
    return 0


def score(recording, truths: dict[int, np.ndarray], query: str) -> tuple[float, float]:
    """Mean J and F over the segmented frames (DAVIS definitions)."""
    frames = sorted(recording.masks)
    scored = score_expression("demo", "0", query, [truths[i] for i in frames], [recording.masks[i] for i in frames])
    return scored.j, scored.f


def write_results(path: Path, recording, processed: list[int]) -> None:
    with open(path, "w", encoding="utf-8") as log:
        for index in processed:
            msg = recording.results[index]
            log.write(json.dumps({
                "scene_frame": index, "frame_index": msg.frame_index, "detected": msg.detected,
                "object_score": round(msg.object_score, 4), "area": msg.area_px,
                "bbox": [msg.bbox.x_offset, msg.bbox.y_offset, msg.bbox.width, msg.bbox.height],
                "centroid": [msg.centroid_px.x, msg.centroid_px.y], "cme_switched": msg.cme_switched,
                "latency_ms": round(msg.latency_ms, 2)}) + "\n")


def write_video(path: Path, pictures: list[np.ndarray], rate: float) -> None:
    height, width = pictures[0].shape[:2]
    video = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), rate, (width, height))
    for picture in pictures:
        video.write(picture)
    video.release()


def write_gif(path: Path, pictures: list[np.ndarray], rate: float) -> None:
    from PIL import Image

    height, width = pictures[0].shape[:2]
    size = (GIF_WIDTH, round(height * GIF_WIDTH / width))
    frames = [Image.fromarray(cv2.resize(p, size, interpolation=cv2.INTER_AREA)[:, :, ::-1]).quantize(GIF_COLOURS)
              for p in pictures[::GIF_FRAME_STEP]]
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=round(1000 * GIF_FRAME_STEP / rate),
                   loop=0, optimize=True)


def write_strip(path: Path, pictures: list[np.ndarray], count: int = 6) -> None:
    """`count` evenly spaced overlays side by side (JPEG: small enough for a README)."""
    chosen = [pictures[round(i)] for i in np.linspace(0, len(pictures) - 1, min(count, len(pictures)))]
    cv2.imwrite(str(path), np.concatenate(chosen, axis=1), [cv2.IMWRITE_JPEG_QUALITY, 85])


if __name__ == "__main__":
    raise SystemExit(main())
