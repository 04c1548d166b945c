"""samwise-replay: run the node's tracker offline over a rosbag2, a video file or a folder of frames.

The model and tracker are built from the node's parameters file (config/samwise.yaml) as the node
builds them, and every frame is processed (the node drops stale frames only when it falls behind a
live camera), so the output is what the node publishes for the same frames when it keeps up.
Outputs, each optional: PNG masks, overlay videos, per-frame JSON lines, and a rosbag2 with the node's
topics (mask, result, centroid, markers, cme_switch) stamped with the input's headers. With a bag's depth
and camera_info topics, results get the node's 3-D centroid (depth_scale and sync_slop from the parameters).
Each query runs in a StreamSession, as the node's does (samwise_ros/session.py).
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

from tqdm import tqdm

from ..bags import STORAGES, NodeTopicWriter, samwise_typestore
from ..model.checkpoint import CheckpointError
from ..params import default_parameters_file, load_node_parameters, override_parameters
from ..replay.outputs import MaskFolder, OverlayVideos, ResultLog
from ..replay.sources import DepthTopics, Frame, QueryChange, ReplayInputError, open_source, quiet_ffmpeg_log
from ..runtime import model_from_parameters, tracker_from_parameters
from ..session import Notice, Publication, QueryRejected, StreamFrame, StreamSession, check_query


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
    """One query's session and what the summary tells of it."""

    index: int
    namespace: str
    session: StreamSession
    label: str
    results: int = 0
    detections: int = 0
    points_3d: int = 0
    switches: int = 0
    latency_ms: float = 0.0
    said: set[str] = field(default_factory=set)  # the kinds of problem reported already

    def count(self, publication: Publication) -> None:
        self.results += 1
        self.detections += publication.track.detected
        self.points_3d += publication.centroid is not None
        self.switches += publication.cme_switch is not None
        self.latency_ms += 1000.0 * publication.latency_s


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

    def write(self, stream: Stream, publication: Publication) -> None:
        frame: Frame = publication.frame.source
        if self.masks:
            self.masks.write(stream.index, frame, publication.track)
        if self.overlay:
            self.overlay.write(stream.index, frame, publication.track)
        if self.log:
            self.log.write(stream.index, frame, publication)
        if self.bag:
            self.bag.write(stream.namespace, frame.log_time_ns, publication)

    def close(self) -> None:
        for output in (self.overlay, self.log, self.bag):
            if output:
                output.close()

    def describe(self, args: argparse.Namespace) -> str:
        written = [str(path) for path in (args.masks, args.overlay, args.results, args.output_bag) if path]
        return ", ".join(written) or "none (see --masks, --overlay, --results, --output-bag)"


def main(argv=None) -> int:
    args = parse_args(argv)
    quiet_ffmpeg_log()
    try:
        parameters = override_parameters(load_node_parameters(args.params), args.assignments)
        queries = args.query or [parameters["query"]]
        tracked = [check_query(query, parameters["max_query_chars"]) for query in queries]  # before the model loads
        depth_topics = None
        if args.depth_topic:
            depth_topics = DepthTopics(args.depth_topic, args.camera_info_topic, parameters["depth_scale"],
                                       parameters["sync_slop"])
        source = open_source(args.input, args.image_topic, args.query_topic, args.frame_id, args.fps or 10.0,
                             depth_topics)
        problem = missing_query(tracked, args.query_topic, source)
        if problem:
            raise ValueError(problem)
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
                    change_query(streams[0], event.text)
                    continue
                deliver(outputs, [(stream, stream.session.push(stream_frame(event))) for stream in streams])
                frames += 1
                progress.update(1)
    except ReplayInputError as err:
        failure = err
    finally:  # on errors too: the frames read so far get their results, and every file is closed
        deliver(outputs, [(stream, stream.session.flush()) for stream in streams])
        outputs.close()
    elapsed = time.perf_counter() - started
    print_summary(source.description, frames, elapsed, streams, outputs.describe(args))
    if failure is not None:
        print(f"samwise-replay: error: {failure} (the results up to there are written)", file=sys.stderr)
        return 1
    return 0


def missing_query(queries: list[str], query_topic: str | None, source) -> str | None:
    """Why a stream would have nothing to track (an empty query pauses the output, as on the node), or None."""
    if all(queries):
        return None
    if query_topic is None:
        return "no query: give --query TEXT (or --query-topic for a bag that has one), or set the query parameter"
    if source.query_messages == 0:
        return f"no query: the bag has no message on {query_topic}: give --query TEXT, or set the query parameter"
    return None


def make_streams(model, parameters: dict, queries: list[str], args: argparse.Namespace) -> list[Stream]:
    # a 3-D centroid wherever the input has depth, as the node with use_depth
    settings = SimpleNamespace(**{**parameters, "use_depth": bool(args.depth_topic)})
    streams = []
    for index, query in enumerate(queries):
        session = StreamSession(tracker_from_parameters(model, parameters), settings)
        session.set_query(query)
        namespace = "/" + args.namespace.strip("/")
        if len(queries) > 1:
            namespace = f"{namespace.rstrip('/')}/query_{index}"
        label = f"query topic {args.query_topic}" if args.query_topic else repr(query)
        streams.append(Stream(index, namespace, session, label))
    return streams


def stream_frame(frame: Frame) -> StreamFrame:
    return StreamFrame(frame.rgb, frame.stamp_ns, frame.frame_id, depth=frame.depth, source=frame)


def change_query(stream: Stream, text: str) -> None:
    """A text_query message, as the node takes it."""
    try:
        say(stream, stream.session.set_query(text))
    except QueryRejected as rejection:
        say(stream, rejection.notice)


def deliver(outputs: Outputs, batches: list[tuple[Stream, list[Publication]]]) -> None:
    """Write publications in recording order across streams (bag writers want time order)."""
    ready = [(publication.frame.source.log_time_ns, stream.index, stream, publication)
             for stream, publications in batches for publication in publications]
    for _, _, stream, publication in sorted(ready, key=lambda item: item[:2]):
        for notice in publication.notices:
            say(stream, notice)
        outputs.write(stream, publication)
        stream.count(publication)


def say(stream: Stream, notice: Notice | None) -> None:
    """Every info notice; each kind of problem once (it is the same on every frame)."""
    if notice is None:
        return
    if notice.level != "info":
        if notice.kind in stream.said:
            return
        stream.said.add(notice.kind)
    prefix = "" if notice.level == "info" else f"{notice.level}: "
    tqdm.write(f"samwise-replay: {prefix}{notice.text}", file=sys.stderr)


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
