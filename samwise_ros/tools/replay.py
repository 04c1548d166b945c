"""samwise-replay: run the node's tracker offline over a rosbag2, a video file or a folder of frames.

The model and tracker are built from the node's parameters file (config/samwise.yaml) as the node
builds them, and every frame is processed (the node drops stale frames only when it falls behind a
live camera), so the output is what the node publishes for the same frames when it keeps up.
Outputs, each optional: PNG masks, overlay videos, per-frame JSON lines, and a rosbag2 with the node's
topics (mask, result, centroid, cme_switch) stamped with the input's headers. With a bag's depth and
camera_info topics, results get the node's 3-D centroid (depth_scale and sync_slop from the parameters).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from ..bags import STORAGES, NodeTopicWriter, samwise_typestore
from ..model.checkpoint import CheckpointError
from ..params import (default_parameters_file, load_node_parameters, model_from_parameters,
                      override_parameters, tracker_from_parameters)
from ..replay.outputs import MaskFolder, OverlayVideos, ResultLog
from ..replay.sources import DepthTopics, Frame, QueryChange, ReplayInputError, open_source
from ..tracker import StreamTracker, TrackResult


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="samwise-replay", description=__doc__.splitlines()[0])
    parser.add_argument("input", type=Path, help="rosbag2 directory or .mcap/.db3 file, video file, or folder of frames")
    parser.add_argument("--query", action="append", default=[],
                        help="referring expression; repeat for several streams (default: the `query` parameter)")
    parser.add_argument("--query-topic", help="std_msgs/String topic of the bag that sets the query as it changes")
    parser.add_argument("--image-topic", help="Image or CompressedImage topic of the bag (needed when it has several)")
    parser.add_argument("--depth-topic", help="depth Image topic of the bag (16UC1 or 32FC1, aligned to the colour "
                                              "image): 3-D centroids; needs --camera-info-topic")
    parser.add_argument("--camera-info-topic", help="CameraInfo topic of the bag, for the depth's intrinsics")
    parser.add_argument("--params", type=Path, default=default_parameters_file(),
                        help="the node's ROS 2 parameters file (default: the package's config/samwise.yaml)")
    parser.add_argument("--set", dest="assignments", action="append", default=[], metavar="NAME=VALUE",
                        help="override a node parameter, e.g. --set clip_length=4")
    parser.add_argument("--checkpoint", help="shortcut for --set checkpoint=PATH")
    parser.add_argument("--device", help="shortcut for --set device=...")
    parser.add_argument("--masks", type=Path, help="folder for the PNG masks (0/255)")
    parser.add_argument("--overlay", type=Path, help="overlay video (.mp4)")
    parser.add_argument("--results", type=Path, help="per-frame results as JSON lines")
    parser.add_argument("--output-bag", type=Path, help="rosbag2 to write the node's topics to")
    parser.add_argument("--storage", choices=sorted(STORAGES), default="mcap", help="storage of --output-bag")
    parser.add_argument("--namespace", default="", help="topic prefix in --output-bag (e.g. /samwise)")
    parser.add_argument("--frame-id", default="camera", help="frame id of a video's or a folder's frames")
    parser.add_argument("--fps", type=float, help="frame rate of a folder of frames and of overlays "
                                                   "(default: the video's own, else 10)")
    args = parser.parse_args(argv)
    if args.query_topic and len(args.query) > 1:
        parser.error("--query-topic drives one stream: give at most one --query with it")
    if bool(args.depth_topic) != bool(args.camera_info_topic):
        parser.error("--depth-topic and --camera-info-topic go together")
    args.assignments += [f"{name}={value}" for name, value in
                         (("checkpoint", args.checkpoint), ("device", args.device)) if value is not None]
    return args


@dataclass
class Stream:
    """One tracker and the frames it holds until their results come back."""

    index: int
    namespace: str
    tracker: StreamTracker
    label: str
    waiting: deque = field(default_factory=deque)  # (Frame, perf_counter at push), oldest first
    last_centroid: tuple[float, float] | None = None
    results: int = 0
    detections: int = 0
    points_3d: int = 0
    warnings: set[str] = field(default_factory=set)
    switches: int = 0
    latency_ms: float = 0.0


class Outputs:
    def __init__(self, args: argparse.Namespace, streams: list[Stream], fps: float):
        self.bag = None
        if args.output_bag:  # first: it refuses an existing path before any other file is touched
            self.bag = NodeTopicWriter(args.output_bag, args.storage, samwise_typestore())
            for stream in streams:
                self.bag.add_stream(stream.namespace)
        self.masks = MaskFolder(args.masks, len(streams)) if args.masks else None
        self.overlay = OverlayVideos(args.overlay, len(streams), fps) if args.overlay else None
        self.log = ResultLog(args.results) if args.results else None

    def write(self, stream: Stream, frame: Frame, result: TrackResult, latency_ms: float,
              point: tuple[float, float, float] | None) -> None:
        if self.masks:
            self.masks.write(stream.index, frame, result)
        if self.overlay:
            self.overlay.write(stream.index, frame, result)
        if self.log:
            self.log.write(stream.index, frame, result, latency_ms, point)
        if self.bag:
            self.bag.write(stream.namespace, frame.log_time_ns, frame.stamp_ns, frame.frame_id, result,
                           latency_ms, stream.last_centroid, point)

    def close(self) -> None:
        for output in (self.overlay, self.log, self.bag):
            if output:
                output.close()

    def describe(self, args: argparse.Namespace) -> str:
        written = [str(path) for path in (args.masks, args.overlay, args.results, args.output_bag) if path]
        return ", ".join(written) or "none (see --masks, --overlay, --results, --output-bag)"


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        parameters = override_parameters(load_node_parameters(args.params), args.assignments)
        queries = args.query or [parameters["query"]]
        for query in queries:
            check_query(query, parameters)
        depth_topics = None
        if args.depth_topic:
            depth_topics = DepthTopics(args.depth_topic, args.camera_info_topic, parameters["depth_scale"],
                                       parameters["sync_slop"])
        source = open_source(args.input, args.image_topic, args.query_topic, args.frame_id, args.fps or 10.0,
                             depth_topics)
        model = model_from_parameters(parameters)
        streams = make_streams(model, parameters, queries, args)
        outputs = Outputs(args, streams, args.fps or source.fps or 10.0)
    except (ReplayInputError, CheckpointError, ValueError, OSError) as err:
        print(f"samwise-replay: error: {err}", file=sys.stderr)
        return 2

    started, frames, failure = time.perf_counter(), 0, None
    try:
        with tqdm(total=source.total, unit="frame", desc="replay", dynamic_ncols=True) as progress:
            for event in source:
                if isinstance(event, QueryChange):
                    change_query(streams[0], event.text, parameters)
                    continue
                deliver(streams, outputs, [(s, s.tracker.push(event.rgb, stamp=event.stamp_ns / 1e9))
                                           for s in streams if wait_for(s, event)])
                frames += 1
                progress.update(1)
    except ReplayInputError as err:
        failure = err
    finally:  # on errors too: the frames read so far get their results, and every file is closed
        deliver(streams, outputs, [(stream, stream.tracker.flush()) for stream in streams])
        outputs.close()
    elapsed = time.perf_counter() - started
    print_summary(source.description, frames, elapsed, streams, outputs.describe(args))
    if failure is not None:
        print(f"samwise-replay: error: {failure} (the results up to there are written)", file=sys.stderr)
        return 1
    return 0


def make_streams(model, parameters: dict, queries: list[str], args: argparse.Namespace) -> list[Stream]:
    streams = []
    for index, query in enumerate(queries):
        tracker = tracker_from_parameters(model, parameters)
        tracker.set_query(query)
        namespace = "/" + args.namespace.strip("/")
        if len(queries) > 1:
            namespace = f"{namespace.rstrip('/')}/query_{index}"
        label = f"query topic {args.query_topic}" if args.query_topic else repr(query)
        streams.append(Stream(index, namespace, tracker, label))
    return streams


def check_query(text: str, parameters: dict) -> None:
    if len(text) > parameters["max_query_chars"]:
        raise ValueError(f"the query has {len(text)} characters, more than max_query_chars "
                         f"({parameters['max_query_chars']})")


def change_query(stream: Stream, text: str, parameters: dict) -> None:
    """What the node does with a text_query message: any accepted text restarts the stream (frames
    still buffered for the old one are dropped, as the tracker does), an empty one pauses output, an
    over-long one (or one the tokenizer refuses) is rejected and the previous query kept."""
    text = text.strip()
    try:
        check_query(text, parameters)
        stream.tracker.set_query(text)
    except ValueError as err:
        tqdm.write(f"samwise-replay: query rejected: {err}", file=sys.stderr)
        return
    stream.waiting.clear()
    stream.last_centroid = None


def wait_for(stream: Stream, frame: Frame) -> bool:
    """Remember a frame the tracker will answer for (it ignores frames while it has no query)."""
    if not stream.tracker.query:
        return False
    stream.waiting.append((frame, time.perf_counter()))
    return True


def deliver(streams: list[Stream], outputs: Outputs, batches: list[tuple[Stream, list[TrackResult]]]) -> None:
    """Write results in recording order across streams (bag writers want time order)."""
    ready = []
    for stream, results in batches:
        for result in results:
            frame, pushed = stream.waiting.popleft()  # results come back in push order
            ready.append((frame.log_time_ns, stream.index, stream, frame, result, pushed))
    now = time.perf_counter()
    for _, _, stream, frame, result, pushed in sorted(ready, key=lambda item: item[:2]):
        latency_ms = (now - pushed) * 1000.0
        point = centroid_3d(stream, frame, result)
        outputs.write(stream, frame, result, latency_ms, point)
        stream.results += 1
        stream.detections += result.detected
        stream.points_3d += point is not None
        stream.switches += result.cme_switched
        stream.latency_ms += latency_ms
        stream.last_centroid = result.centroid


def centroid_3d(stream: Stream, frame: Frame, result: TrackResult) -> tuple[float, float, float] | None:
    """The node's 3-D centroid: detected, with a paired depth frame, and valid depth under the mask."""
    if not result.detected or frame.depth is None:
        return None
    try:
        return frame.depth.centroid_3d(result.mask)
    except ValueError as err:  # the same for every frame: said once
        if str(err) not in stream.warnings:
            stream.warnings.add(str(err))
            tqdm.write(f"samwise-replay: warning: {err}", file=sys.stderr)
        return None


def print_summary(description: str, frames: int, elapsed: float, streams: list[Stream], outputs: str) -> None:
    print(f"input:   {description}")
    print(f"frames:  {frames} in {elapsed:.1f} s ({frames / max(elapsed, 1e-9):.1f} frames/s)")
    for stream in streams:
        mean_latency = stream.latency_ms / stream.results if stream.results else 0.0
        print(f"stream {stream.index} ({stream.label}): {stream.results} results, {stream.detections} detections, "
              f"{stream.points_3d} 3-D centroids, {stream.switches} CME switches, mean latency {mean_latency:.1f} ms")
    print(f"output:  {outputs}")


if __name__ == "__main__":
    raise SystemExit(main())
