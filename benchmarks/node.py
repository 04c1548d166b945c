#!/usr/bin/env python3
"""ROS node benchmark: samwise_node in its own process, fed bgr8 frames at camera rate over DDS.

    .venv/bin/python benchmarks/node.py                       # null and tiny model, 640x480 and 1280x720,
                                                              # BEST_EFFORT and RELIABLE, 5 s each
    .venv/bin/python benchmarks/node.py --models null --sizes 1280x720 --seconds 10

For each case it prints: the input rate achieved by the publisher and seen by the node, the output
rate, the latency from publishing an image to receiving its mask in this process (p50 / p95; the
image's stamp is its publish time, both processes read the same clock), and the frames the node
dropped (stale frames replaced by newer ones while the model was busy) or never received.

The null model costs nothing (every pixel is the object: an "identity" mask), so its latency is the
node's own cost plus DDS; the tiny model is a random tiny SAMWISE (speed does not depend on weights).
Every process uses the shipped Fast DDS profile (config/fastdds_shm.xml) and stays on loopback.
Target with the null model: 30 Hz at 1280x720 with p50 added latency below 10 ms.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
PROFILE = REPO / "config" / "fastdds_shm.xml"
QUERY = "the red ball rolling to the left"


# ---- the node's side: `node.py --serve null|tiny --ros-args ...` --------------------------------------

class NullTracker:
    """The StreamTracker interface with no model: every pixel is the object, one result per frame."""

    def __init__(self):
        self.mask_threshold = 0.5
        self.pending_frames = 0
        self.compile = self.compiled_step_active = False
        self.query = ""
        self._index = 0

    def set_query(self, text: str) -> None:
        self.query = text.strip()
        self.reset()

    def reset(self) -> None:
        self._index = 0

    def push(self, frame: np.ndarray, stamp: float | None = None) -> list:
        from samwise_ros.tracker import TrackResult

        if not self.query:
            return []
        height, width = frame.shape[:2]
        self._index += 1
        return [TrackResult(frame_index=self._index - 1, stamp=stamp, query=self.query,
                            mask=np.ones((height, width), bool), object_score=1.0, detected=True,
                            bbox=(0, 0, width - 1, height - 1), area=height * width,
                            centroid=((width - 1) / 2, (height - 1) / 2), cme_probability=None, cme_switched=False)]


def serve(model: str, ros_arguments: list[str]) -> int:
    from samwise_ros.ros.node import LoadedTracker, load_tracker, main

    if model == "null":
        def factory(settings):
            return LoadedTracker(NullTracker(), "none", "none", "null model (identity mask)")
    else:
        factory = load_tracker
    return main([sys.argv[0], *ros_arguments], tracker_factory=factory)


# ---- the driver's side ------------------------------------------------------------------------------

def build_tiny_model(directory: Path) -> Path:
    import torch

    from samwise_ros.data.synthetic import scene_corpus
    from samwise_ros.model import Samwise, SamwiseConfig
    from samwise_ros.model.tokenizer import train_roberta_tokenizer

    tokenizer = train_roberta_tokenizer(scene_corpus(), directory / "tokenizer", 512)
    torch.manual_seed(0)
    return Samwise(SamwiseConfig.tiny(vocab_size=len(tokenizer)), tokenizer=tokenizer).save(directory / "model")


class Driver:
    """This process's rclpy node: publishes frames, receives masks and diagnostics."""

    def __init__(self, domain_id: int, namespace: str, reliability: str):
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import Image

        self.context = rclpy.Context()
        rclpy.init(context=self.context, domain_id=domain_id)
        self.node = rclpy.create_node("benchmark_driver", namespace=namespace, context=self.context)
        policy = ReliabilityPolicy.BEST_EFFORT if reliability == "best_effort" else ReliabilityPolicy.RELIABLE
        self.image = self.node.create_publisher(Image, "image", QoSProfile(
            history=HistoryPolicy.KEEP_LAST, depth=1, reliability=policy))
        self.lock = threading.Lock()
        self.masks: list[tuple[float, float]] = []  # (arrival, stamp)
        self.diagnostics: dict[str, str] = {}
        self.diagnostics_count = 0
        self.history: list[dict[str, str]] = []  # every diagnostics report, in order
        self.status_name = f"{namespace}/samwise: segmentation"
        self.node.create_subscription(Image, "mask", self._on_mask, QoSProfile(
            history=HistoryPolicy.KEEP_LAST, depth=10, reliability=ReliabilityPolicy.RELIABLE))
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics, 10)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.spinner = threading.Thread(target=self._spin, daemon=True)
        self.spinner.start()

    def _spin(self):
        try:
            self.executor.spin()
        except Exception:
            pass

    def _on_mask(self, msg) -> None:
        arrival = time.time()
        with self.lock:
            self.masks.append((arrival, msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9))

    def _on_diagnostics(self, msg) -> None:
        for status in msg.status:
            if status.name == self.status_name:
                with self.lock:
                    self.diagnostics = {kv.key: kv.value for kv in status.values}
                    self.diagnostics_count += 1
                    self.history.append(self.diagnostics)

    def wait(self, condition, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                raise RuntimeError(f"timed out waiting for {what}")
            time.sleep(0.02)

    def fresh_diagnostics(self) -> dict[str, str]:
        """The first diagnostics published after now."""
        with self.lock:
            seen = self.diagnostics_count
        self.wait(lambda: self.diagnostics_count > seen + 1, 5, "diagnostics")
        with self.lock:
            return dict(self.diagnostics)

    def close(self) -> None:
        self.executor.shutdown()
        self.node.destroy_node()
        self.context.try_shutdown()


def frames_for(width: int, height: int, count: int = 4):

    from samwise_ros.ros.conversions import array_to_image
    from std_msgs.msg import Header

    rng = np.random.default_rng(0)
    return [array_to_image(rng.integers(0, 256, (height, width, 3), dtype=np.uint8), "bgr8",
                           Header(frame_id="camera_color_optical_frame")) for _ in range(count)]


def run_case(driver: Driver, size: tuple[int, int], rate: float, seconds: float) -> dict:
    from builtin_interfaces.msg import Time

    messages = frames_for(*size)
    publish = driver.image.publish

    def stream(duration: float) -> int:
        start, count = time.monotonic(), 0
        while (elapsed := time.monotonic() - start) < duration:
            time.sleep(max(0.0, start + count / rate - time.monotonic()))
            msg = messages[count % len(messages)]
            now = time.time_ns()
            msg.header.stamp = Time(sec=now // 1_000_000_000, nanosec=now % 1_000_000_000)
            publish(msg)
            count += 1
        return count

    stream(1.0)  # warm-up: caches, first large samples through shared memory
    before = driver.fresh_diagnostics()
    with driver.lock:
        driver.masks.clear()
        first_report = len(driver.history)
    started = time.monotonic()
    published = stream(seconds)
    duration = time.monotonic() - started
    after = driver.fresh_diagnostics()  # >= 1 s later: the last masks are in
    with driver.lock:
        masks = list(driver.masks)
        reports = driver.history[first_report:]
    # the node's own share: receive (callback) to publish, per-second p50s of the measured window
    inside = [float(r["latency receive to publish p50 (ms)"]) for r in reports
              if r["latency receive to publish p50 (ms)"] != "n/a"]
    latencies = np.array([arrival - stamp for arrival, stamp in masks]) * 1000.0
    delta = {key: int(after[key]) - int(before[key]) for key in ("frames received", "dropped frames")}
    return {
        "published_hz": published / duration,
        "node_in_hz": delta["frames received"] / duration,
        "masks_hz": len(masks) / duration,
        "p50_ms": float(np.percentile(latencies, 50)) if masks else float("nan"),
        "p95_ms": float(np.percentile(latencies, 95)) if masks else float("nan"),
        "node_ms": float(np.median(inside)) if inside else float("nan"),
        "dropped": delta["dropped frames"],
        "not_received": max(0, published - delta["frames received"]),
        "published": published,
    }


def start_node(model: str, checkpoint: str, reliability: str, domain_id: int, namespace: str,
               log: Path) -> subprocess.Popen:
    env = dict(os.environ, ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST", ROS_DOMAIN_ID=str(domain_id),
               FASTDDS_DEFAULT_PROFILES_FILE=str(PROFILE), RCUTILS_COLORIZED_OUTPUT="0")
    command = [sys.executable, str(Path(__file__).resolve()), "--serve", model, "--ros-args",
               "-r", f"__ns:={namespace}", "--params-file", str(REPO / "config" / "samwise.yaml"),
               "-p", f"checkpoint:={checkpoint or 'unused'}", "-p", "mode:=frame", "-p", f"query:={QUERY}",
               "-p", f"image_reliability:={reliability}", "-p", "queue_depth:=1"]
    with open(log, "w") as output:  # a file, not a pipe: a pipe nobody reads would block the node
        return subprocess.Popen(command, env=env, stdout=output, stderr=subprocess.STDOUT)


def stop_node(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGINT)
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["null", "tiny"], choices=["null", "tiny"])
    parser.add_argument("--sizes", nargs="+", default=["640x480", "1280x720"])
    parser.add_argument("--reliability", nargs="+", default=["best_effort", "reliable"],
                        choices=["best_effort", "reliable"])
    parser.add_argument("--rate", type=float, default=30.0, help="frames per second published")
    parser.add_argument("--seconds", type=float, default=5.0, help="measured seconds per case")
    args = parser.parse_args(argv)
    sizes = [tuple(int(v) for v in size.split("x")) for size in args.sizes]

    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    os.environ["FASTDDS_DEFAULT_PROFILES_FILE"] = str(PROFILE)
    workdir = Path(tempfile.mkdtemp(prefix="samwise-node-benchmark-"))
    checkpoint = str(build_tiny_model(workdir)) if "tiny" in args.models else ""
    print(f"samwise_node benchmark: {args.rate:g} Hz bgr8 for {args.seconds:g} s per case, frame mode, "
          f"queue_depth 1, DDS profile {PROFILE.name}, {os.cpu_count()} CPUs")
    print(f"{'model':<6} {'size':>9} {'QoS':<11} {'pub Hz':>7} {'node in':>8} {'masks Hz':>8} "
          f"{'p50 ms':>7} {'p95 ms':>7} {'in node':>7} {'dropped':>8} {'lost':>5}")
    for model in args.models:
        for reliability in args.reliability:
            domain_id, namespace = random.randrange(1, 101), f"/samwise_benchmark_{os.getpid()}"
            log = workdir / f"node-{model}-{reliability}.log"
            node = start_node(model, checkpoint, reliability, domain_id, namespace, log)
            driver = Driver(domain_id, namespace, reliability)
            try:
                driver.wait(lambda: driver.image.get_subscription_count() > 0
                            and driver.diagnostics.get("query") == QUERY, 120, "the node to start")
                for width, height in sizes:
                    figures = run_case(driver, (width, height), args.rate, args.seconds)
                    print(f"{model:<6} {f'{width}x{height}':>9} {reliability:<11} {figures['published_hz']:7.1f} "
                          f"{figures['node_in_hz']:8.1f} {figures['masks_hz']:8.1f} {figures['p50_ms']:7.1f} "
                          f"{figures['p95_ms']:7.1f} {figures['node_ms']:7.1f} {figures['dropped']:8d} "
                          f"{figures['not_received']:5d}",
                          flush=True)
            finally:
                driver.close()
                stop_node(node)
                if node.returncode:
                    print(f"the node exited with {node.returncode}:\n{log.read_text()[-2000:]}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    if "--serve" in sys.argv:
        split = sys.argv.index("--ros-args") if "--ros-args" in sys.argv else len(sys.argv)
        model = sys.argv[sys.argv.index("--serve") + 1]
        sys.exit(serve(model, sys.argv[split:]))
    sys.exit(main())
