"""One stream's session: what the node does between a frame coming in and its messages going out, without
ROS (the node in samwise_ros/ros/node.py and samwise-replay both run it, so they cannot drift).

The contract it keeps: a query is checked (length, then the text encoder) and starts a clean stream (the
query being tracked, sent again, changes nothing: behaviour trees and voice pipelines re-publish theirs); the
frames in flight in the tracker get their results in order and are forgotten when the tracker drops them;
a detected object gets a 3-D centroid from the depth paired with its frame; a CME switch reports the
centroid before it; every output is a plain mirror of its ROS message (samwise_ros/messages.py, built
from a result in samwise_ros/result_messages.py).
Problems come back as Notices for the caller to log. One object holds one stream's whole state.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .depth import DepthFrame, DepthPairing, Intrinsics, IntrinsicsMismatch
from .messages import CmeSwitch, Header, Image, MarkerArray, Point, PointStamped, Segmentation, Time, image
from .result_messages import OUTPUT_TOPICS, cme_switch, markers, segmentation
from .tracker import Tracker, TrackResult

LOGGED_QUERY_CHARS = 60  # a rejected query is quoted up to this length


@dataclass(frozen=True)
class Notice:
    """Something to tell the user. `kind` names it without its details ("topic: problem"), so a caller
    can throttle by kind; info notices are each worth saying (the session says a repeated one once)."""

    kind: str
    text: str
    level: str = "error"  # "error", "warning" or "info"


class QueryRejected(ValueError):
    """A query that is not tracked (the previous one is kept): the text says why, `notice` says it in a log."""

    def __init__(self, reason: str, notice: Notice):
        super().__init__(reason)
        self.notice = notice


def check_query(text: str, max_chars: int) -> str:
    """The query as it is tracked (without surrounding blanks); QueryRejected when it is longer than
    max_chars (the max_query_chars parameter)."""
    text = text.strip()
    if len(text) > max_chars:
        raise _rejection(text, f"the query has {len(text)} characters, more than max_query_chars ({max_chars})",
                         "text_query: too long")
    return text


def _rejection(text: str, reason: str, kind: str) -> QueryRejected:
    quoted = text if len(text) <= LOGGED_QUERY_CHARS else text[:LOGGED_QUERY_CHARS] + "..."
    return QueryRejected(reason, Notice(kind, f"text_query: rejected {quoted!r}: {reason}"))


@dataclass
class StreamFrame:
    rgb: np.ndarray  # HxWx3 uint8
    stamp_ns: int  # the image's header stamp
    frame_id: str
    received: float = field(default_factory=time.monotonic)  # the latency is counted from here
    depth: DepthFrame | None = None  # paired already (a bag's replay); else looked up when its result is ready
    source: Any = None  # the caller's own record of the frame, handed back with its result

    @property
    def stamp(self) -> float:
        return self.stamp_ns / 1e9


@dataclass
class Publication:
    """What is published for one result: a message for each topic of OUTPUT_TOPICS (None: not this time)."""

    frame: StreamFrame
    track: TrackResult
    header: Header  # the image's
    mask: Image
    result: Segmentation
    centroid: PointStamped | None  # with a 3-D centroid
    markers: MarkerArray | None  # with a 3-D centroid
    cme_switch: CmeSwitch | None  # when the CME switched
    notices: list[Notice]
    latency_s: float  # from receiving the frame to this publication

    def messages(self) -> dict[str, Any]:
        """topic: message, for the topics published this time, in OUTPUT_TOPICS' order."""
        return {topic: getattr(self, topic) for topic in OUTPUT_TOPICS if getattr(self, topic) is not None}


class StreamSession:
    """One stream: its tracker, and what the contract keeps beside it between frames."""

    def __init__(self, tracker: Tracker, settings, depth: DepthPairing | None = None):
        """settings: the node's parameters as attributes, read at each call (the node changes
        some while it runs): max_query_chars, mask_threshold, use_depth, sync_slop. depth: where a frame's
        depth is looked up when its result is ready (the node's live topics); None when frames come with
        their depth (a bag's replay)."""
        self.settings = settings
        self.query = ""  # the query being tracked ("" while paused)
        self._tracker = tracker
        self._depth = depth
        self._in_flight: deque[StreamFrame] = deque()  # frames pushed whose result has not come back yet
        self._previous_centroid: tuple[float, float] | None = None
        self._said: set[str] = set()  # info notices given already

    # ---- the query and the stream state -------------------------------------------------------------

    def set_query(self, text: str) -> Notice | None:
        """Track `text` from a clean state (an empty text pauses the output) and say so; the query being
        tracked again changes nothing (and is said once); QueryRejected when it is too long or the text
        encoder refuses it (e.g. too many tokens)."""
        text = check_query(text, self.settings.max_query_chars)
        if text == self.query:
            return self._say_once(Notice("text_query: unchanged", f"already tracking {text!r}: the stream goes on "
                                         "(~/reset clears it)", "info")) if text else None
        try:
            self._tracker.set_query(text)
        except ValueError as error:  # e.g. more tokens than the text encoder takes
            raise _rejection(text, str(error), "text_query: rejected") from None
        self.query = text
        self._forget_stream()
        if not text:
            return Notice("text_query: empty", "text_query: empty query: output paused until the next query",
                          "warning")
        return Notice("text_query: tracking", f"tracking {text!r}", "info")

    def reset(self) -> None:
        """Clear the stream state; keep the query."""
        self._tracker.reset()
        self._forget_stream()

    def _forget_stream(self) -> None:
        self._in_flight.clear()  # the tracker dropped them with its state
        self._previous_centroid = None

    # ---- frames --------------------------------------------------------------------------------------

    def push(self, frame: StreamFrame) -> list[Publication]:
        """Run one frame; what to publish for the results that became ready (maybe none: a clip's come
        at its end; none while no query is tracked)."""
        self._tracker.mask_threshold = self.settings.mask_threshold
        return self._run(lambda: self._tracker.push(frame.rgb, stamp=frame.stamp), frame)

    def flush(self) -> list[Publication]:
        """The results of a partial clip, at the end of a stream."""
        return self._run(self._tracker.flush)

    def _run(self, step, frame: StreamFrame | None = None) -> list[Publication]:
        try:
            results = step()
        except Exception:  # a pushed frame is lost (refused, or in a failed clip, which takes the others along)
            self._forget_lost_frames()
            raise
        if frame is not None:
            self._in_flight.append(frame)
        publications = [self._publication(result, self._in_flight.popleft()) for result in results]
        self._forget_lost_frames()
        return publications

    def _forget_lost_frames(self) -> None:
        """The frames the tracker no longer holds (pushed while no query is tracked, a failed clip), the
        oldest in flight, will get no result."""
        while len(self._in_flight) > self._tracker.pending_frames:
            self._in_flight.popleft()

    def _publication(self, result: TrackResult, frame: StreamFrame) -> Publication:
        notices = []
        if result.stream_reset:
            self._previous_centroid = None
            notices.append(Notice("image: stamp backwards", "image stamp went backwards (bag loop or clock jump) "
                                  f"to {frame.stamp:.3f}: stream state reset", "warning"))
        point, depth_notice = self._centroid_3d(result, frame)
        notices += [depth_notice] if depth_notice else []
        header = Header(Time.from_ns(frame.stamp_ns), frame.frame_id)
        latency = time.monotonic() - frame.received
        publication = Publication(
            frame=frame, track=result, header=header,
            mask=image(result.mask.view(np.uint8) * np.uint8(255), "mono8", header),
            result=segmentation(result, header, point, latency),
            centroid=None if point is None else PointStamped(header, Point.of(point)),
            markers=None if point is None else markers(header, point, result.query),
            cme_switch=cme_switch(result, header, self._previous_centroid) if result.cme_switched else None,
            notices=notices, latency_s=latency)
        self._previous_centroid = result.centroid
        return publication

    # ---- depth ---------------------------------------------------------------------------------------

    def _centroid_3d(self, result: TrackResult,
                     frame: StreamFrame) -> tuple[tuple[float, float, float] | None, Notice | None]:
        """The mask's 3-D centroid over the frame's depth (with use_depth, of a detected object), or None
        and why not."""
        if not (self.settings.use_depth and result.detected):
            return None, None
        slop = self.settings.sync_slop
        depth = frame.depth if self._depth is None else self._depth.match(frame.stamp, slop)
        if depth is None:
            return None, Notice("depth: none paired", f"depth: no depth frame with camera_info within sync_slop "
                                f"({slop} s) of the image stamped {frame.stamp:.3f}: no 3-D centroid", "warning")
        try:
            point = depth.centroid_3d(result.mask)
        except IntrinsicsMismatch as error:
            return None, Notice("camera_info: image size", str(error), "warning")
        except ValueError as error:  # a depth image of another size
            return None, Notice("depth: image size", str(error))
        if point is None:
            return None, Notice("depth: no valid depth", "depth: no valid depth under the mask (holes, zeros or "
                                "NaN): no 3-D centroid", "warning")
        return point, self._scaling_note(depth.intrinsics, result.mask.shape)

    def _scaling_note(self, intrinsics: Intrinsics, image_shape: tuple[int, int]) -> Notice | None:
        height, width = image_shape
        note = intrinsics.scaling_note(width, height)  # names both sizes: said once for each pair
        return None if note is None else self._say_once(Notice("camera_info: scaled", note, "info"))

    def _say_once(self, notice: Notice) -> Notice | None:
        """`notice`, unless its text was said already."""
        if notice.text in self._said:
            return None
        self._said.add(notice.text)
        return notice
