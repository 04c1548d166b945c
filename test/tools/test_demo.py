"""samwise-demo end to end: samwise_player and samwise_node as processes over loopback DDS, the
recorder in the demo's process, the bundled demo weights; and those weights on a held-out clip."""

import json
import os
import re
import subprocess
import sys
import time

import numpy as np
from PIL import Image

from helpers.ros_harness import ros_environment, unique_domain_id


def test_demo_plays_the_scene_through_the_node_and_writes_its_outputs(tmp_path):
    """How many frames the node segments at the camera's rate depends on the machine (the others are
    dropped as stale, and counted): asserted is what it segmented, not how much (benchmarks/node.py)."""
    frames = 24
    command = [sys.executable, "-m", "samwise_ros.tools.demo", "--frames", str(frames), "--device", "cpu",
               "--output", str(tmp_path)]
    done = subprocess.run(command, env=ros_environment(unique_domain_id()), capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "model bundled demo weights" in done.stdout

    published, segmented, dropped = map(int, re.search(
        r"frames:  (\d+) published, (\d+) segmented \((\d+) dropped as stale\)", done.stdout).groups())
    assert published == frames and segmented + dropped == frames and segmented >= 1
    records = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert len(records) == segmented
    scene_frames = [r["scene_frame"] for r in records]
    assert scene_frames == sorted(set(scene_frames)) and 0 <= scene_frames[0] and scene_frames[-1] < frames
    assert np.all(np.diff([r["frame_index"] for r in records]) > 0)  # one stream, never reset

    jf = float(re.search(r"J&F against the true masks: ([0-9.]+)", done.stdout).group(1))
    assert jf >= 0.6, done.stdout  # on the frames it segmented, the trained demo weights follow the red ball
    import cv2

    video = cv2.VideoCapture(str(tmp_path / "overlay.mp4"))
    assert int(video.get(cv2.CAP_PROP_FRAME_COUNT)) == segmented
    assert (int(video.get(cv2.CAP_PROP_FRAME_WIDTH)), int(video.get(cv2.CAP_PROP_FRAME_HEIGHT))) == (320, 240)
    with Image.open(tmp_path / "overlay.gif") as gif:
        assert gif.n_frames == (segmented + 1) // 2 and gif.size == (200, 150)
    assert cv2.imread(str(tmp_path / "strip.jpg")).shape == (240, min(6, segmented) * 320, 3)


def test_bundled_weights_follow_the_fixed_held_out_demo_clip_on_the_cpu():
    """The issue's bar: at least 0.7 J&F on a fixed synthetic clip the weights never trained on, the
    demo's scene (16 frames, segmented as one stream without DDS, so nothing is dropped). Measured: 0.97."""
    from samwise_ros import Samwise
    from samwise_ros.data.synthetic import demo_scene
    from samwise_ros.training.evaluation import score_clips
    from samwise_ros.weights import demo_weights

    clip = demo_scene().referring_clip(16, "demo")
    assert score_clips(Samwise.load(demo_weights(), device="cpu"), [clip])["eval_JF"] >= 0.7


def test_bundled_weights_load_from_float16_and_segment_held_out_clips_on_the_cpu():
    """Random clips the demo weights never saw (samwise-train's held-out seed), 8 per expression kind,
    with look-alike distractors: far from the issue's appearance target (see the model card); this
    holds them to what they measured (0.63 appearance, 0.46 motion, 0.74 time, 0.63 switch: mean 0.61;
    without switch the previous weights 0.57, the 128 px ones 0.35), with an untrained model of the same
    configuration at 0.03."""
    import torch

    from samwise_ros import Samwise
    from samwise_ros.data.synthetic import HELD_OUT_SEED_OFFSET, KINDS, SyntheticReferringVideos
    from samwise_ros.training.evaluation import score_clips
    from samwise_ros.weights import demo_weights

    model = Samwise.load(demo_weights(), device="cpu")
    assert all(p.dtype == torch.float32 for p in model.parameters())  # stored as float16, computed in float32
    scores = []
    for kind in KINDS:
        clips = SyntheticReferringVideos(length=8, frames=8, kinds=(kind,), seed=HELD_OUT_SEED_OFFSET)
        scores.append(score_clips(model, [clips[i] for i in range(len(clips))])["eval_JF"])
    assert np.mean(scores) >= 0.56, scores


def test_a_child_that_ignores_sigint_is_killed_and_said(monkeypatch, capsys):
    """The pipeline stops its processes with SIGINT; one that does not stop in time is killed, and the
    demo says so (a killed process leaves its Fast DDS shared memory behind)."""
    from samwise_ros.tools import demo_pipeline
    from samwise_ros.tools.processes import ChildProcess

    monkeypatch.setattr(demo_pipeline, "STOP_TIMEOUT_S", 0.5)
    stubborn = ChildProcess("stubborn", [sys.executable, "-c", (
        "import signal, time; signal.signal(signal.SIGINT, signal.SIG_IGN); print('ready', flush=True); "
        "time.sleep(60)")], dict(os.environ))
    while not stubborn.said("ready"):
        assert stubborn.running(), stubborn.last_line()
        time.sleep(0.05)
    demo_pipeline.stop(stubborn)
    assert not stubborn.running() and stubborn.popen.returncode == -9
    assert "stubborn did not stop within 0.5 s of SIGINT; killed (last output: ready)" in capsys.readouterr().err
