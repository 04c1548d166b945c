"""The stream session that the node and samwise-replay share (samwise_ros/session.py), without ROS: query
checks, frames in flight, depth pairing and the 3-D centroid, CME switches, and the published messages,
on a real StreamTracker with a tiny model that always detects something and whose CME switches whenever
its window lets it (frames 5, 8, 11, ...)."""

import math
import re
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest

from samwise_ros.depth import DepthFrame, DepthPairing, Intrinsics, IntrinsicsMismatch, camera_info_to_intrinsics
from samwise_ros.geometry import centroid_3d
from samwise_ros.messages import Duration, Header, Marker, Point, RegionOfInterest, Time
from samwise_ros.model import Samwise
from samwise_ros.result_messages import MARKER_LIFETIME_S, region
from samwise_ros.session import QueryRejected, StreamFrame, StreamSession
from samwise_ros.tracker import StreamTracker

HEIGHT, WIDTH = 24, 32
FX, FY, CX, CY = 30.0, 32.0, (WIDTH - 1) / 2, (HEIGHT - 1) / 2
K = Intrinsics(FX, FY, CX, CY, WIDTH, HEIGHT)
FRAME_ID = "camera_color_optical_frame"


@pytest.fixture(scope="module")
def model(switching_model_dir):
    return Samwise.load(switching_model_dir)


def settings(**changes) -> SimpleNamespace:
    return SimpleNamespace(**{**dict(max_query_chars=256, mask_threshold=0.5, use_depth=True, sync_slop=0.05),
                              **changes})


def session_of(model, mode="frame", clip_length=8, depth=None, query="the red ball", **changes) -> StreamSession:
    session = StreamSession(StreamTracker(model, clip_length=clip_length, mode=mode), settings(**changes), depth)
    if query:
        session.set_query(query)
    return session


def frame(index: int, depth: DepthFrame | None = None) -> StreamFrame:
    """Frame `index`, stamped index x 100 ms."""
    rgb = np.random.default_rng(index).integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)
    return StreamFrame(rgb, index * 100_000_000, FRAME_ID, depth=depth, source=index)


def depth_metres(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0.5, 3.0, (HEIGHT, WIDTH))


def depth_frame(stamp: float, metres: np.ndarray, intrinsics: Intrinsics = K) -> DepthFrame:
    return DepthFrame(stamp, metres, 1.0, intrinsics)


def run(session: StreamSession, frames) -> list:
    return [publication for f in frames for publication in session.push(f)]


# ---- the query ---------------------------------------------------------------------------------------------

def test_a_query_starts_a_clean_stream_and_an_empty_one_pauses_the_output(model):
    session = session_of(model, query="")
    assert session.push(frame(0)) == []  # no query: nothing tracked
    notice = session.set_query("  the red ball ")
    assert (notice.level, notice.text, session.query) == ("info", "tracking 'the red ball'", "the red ball")
    assert [p.result.frame_index for p in run(session, [frame(1), frame(2)])] == [0, 1]
    session.set_query("the blue cup")
    assert [p.result.frame_index for p in run(session, [frame(3)])] == [0]
    notice = session.set_query("   ")
    assert (notice.level, notice.kind, session.query) == ("warning", "text_query: empty", "")
    assert "output paused" in notice.text and session.push(frame(4)) == []


def test_the_query_being_tracked_sent_again_keeps_the_stream_and_is_said_once(model):
    session = session_of(model, query="")
    session.set_query("the red ball")
    assert [p.result.frame_index for p in run(session, [frame(0), frame(1)])] == [0, 1]
    notice = session.set_query(" the red ball  ")
    assert (notice.level, notice.kind) == ("info", "text_query: unchanged") and "already tracking" in notice.text
    assert session.set_query("the red ball") is None  # said once
    assert [p.result.frame_index for p in run(session, [frame(2)])] == [2]
    session.set_query("the blue cup")
    assert [p.result.frame_index for p in run(session, [frame(3)])] == [0]


@pytest.mark.parametrize("text, kind, reason", [
    ("x" * 300, "text_query: too long", "the query has 300 characters, more than max_query_chars (256)"),
    ("q" * 250, "text_query: rejected", "the query has 252 tokens"),  # more than the text encoder takes
])
def test_a_rejected_query_keeps_the_previous_one_and_its_stream(model, text, kind, reason):
    session = session_of(model)
    run(session, [frame(0), frame(1)])
    with pytest.raises(QueryRejected, match=re.escape(reason)) as rejected:
        session.set_query(text)
    notice = rejected.value.notice
    assert (notice.level, notice.kind) == ("error", kind)
    assert notice.text.startswith(f"text_query: rejected '{text[:60]}...': {reason}")  # the text cut
    (publication,) = session.push(frame(2))
    assert (publication.result.query, publication.result.frame_index) == ("the red ball", 2)


# ---- frames in flight ------------------------------------------------------------------------------------

def test_clip_results_come_back_with_their_own_frames(model):
    session = session_of(model, mode="clip", clip_length=3)
    pushed = [session.push(frame(i)) for i in range(7)]
    assert [len(p) for p in pushed] == [0, 0, 3, 0, 0, 3, 0]
    publications = [p for batch in pushed for p in batch] + session.flush()
    assert [p.frame.source for p in publications] == list(range(7))
    assert [p.result.frame_index for p in publications] == list(range(7))
    assert [p.header for p in publications] == [Header(Time.from_ns(i * 100_000_000), FRAME_ID) for i in range(7)]
    for publication in publications:
        assert publication.result.header is publication.header and publication.mask.header is publication.header


def test_frames_the_tracker_drops_get_no_result(model):
    session = session_of(model, mode="clip", clip_length=3)
    run(session, [frame(0), frame(1)])
    session.set_query("the blue cup")  # the half clip goes with the old stream
    run(session, [frame(2)])
    broken = StreamFrame(np.zeros((HEIGHT, WIDTH), np.uint8), 300_000_000, FRAME_ID, source="broken")
    with pytest.raises(ValueError, match="HxWx3"):
        session.push(broken)  # refused by the tracker: never in its clip
    publications = run(session, [frame(4), frame(5)])
    assert [(p.frame.source, p.result.frame_index) for p in publications] == [(2, 0), (4, 1), (5, 2)]
    session.reset()
    assert [p.frame.source for p in run(session, [frame(6)]) + session.flush()] == [6]


def test_stamps_going_backwards_start_a_new_stream_and_say_so(model):
    session = session_of(model, use_depth=False)
    run(session, [frame(5), frame(6)])
    (publication,) = session.push(frame(1))
    assert publication.result.frame_index == 0 and publication.track.stream_reset
    (notice,) = publication.notices
    assert (notice.level, notice.kind) == ("warning", "image: stamp backwards")
    assert "went backwards (bag loop or clock jump) to 0.100: stream state reset" in notice.text


# ---- depth and the 3-D centroid ----------------------------------------------------------------------

def expected_centroid(mask: np.ndarray, metres: np.ndarray, k: Intrinsics = K) -> tuple:
    return centroid_3d(mask, metres, k.fx, k.fy, k.cx, k.cy)


def test_depth_is_paired_by_stamp_when_the_result_is_ready(model):
    """The node's live topics: frame 0's depth comes in after the frame, before its clip completes; frame
    1 has none within the slop."""
    pairing = DepthPairing()
    session = session_of(model, mode="clip", clip_length=2, depth=pairing)
    assert session.push(frame(0)) == []
    pairing.add_intrinsics(0.0, K)
    pairing.add_depth(0.0, depth_metres(), 1.0)
    pairing.add_depth(0.1 + 0.06, depth_metres(1), 1.0)  # beyond sync_slop (0.05 s) of frame 1
    first, second = session.push(frame(1))
    expected = expected_centroid(first.track.mask, depth_metres())
    assert first.result.has_centroid_3d and first.centroid.point == Point(*expected) == first.result.centroid_3d
    assert first.centroid.header is first.header and first.notices == []
    assert second.centroid is None and second.markers is None and not second.result.has_centroid_3d
    (notice,) = second.notices
    assert (notice.level, notice.kind) == ("warning", "depth: none paired")
    assert notice.text == ("depth: no depth frame with camera_info within sync_slop (0.05 s) of the image stamped "
                           "0.100: no 3-D centroid")


def test_frames_paired_with_their_depth_already(model):
    """A bag's replay pairs depth as it reads the bag: the session takes the frame's own."""
    session = session_of(model)
    publications = run(session, [frame(0, depth_frame(0.0, depth_metres())), frame(1)])
    assert publications[0].centroid.point == Point(*expected_centroid(publications[0].track.mask, depth_metres()))
    assert publications[1].centroid is None and publications[1].notices[0].kind == "depth: none paired"


def test_no_3d_centroid_without_use_depth(model):
    (publication,) = session_of(model, use_depth=False).push(frame(0, depth_frame(0.0, depth_metres())))
    assert publication.centroid is None and publication.markers is None and publication.notices == []


@pytest.mark.parametrize("depth, level, kind, text", [
    (depth_frame(0.0, np.full((HEIGHT, WIDTH), np.nan)), "warning", "depth: no valid depth",
     "depth: no valid depth under the mask (holes, zeros or NaN): no 3-D centroid"),
    (depth_frame(0.0, depth_metres(), Intrinsics(FX, FY, CX, CY, 640, 360)), "warning", "camera_info: image size",
     "camera_info: the intrinsics are for 640x360 images, the image is 32x24 (another aspect ratio): no 3-D centroid"),
    (depth_frame(0.0, np.ones((HEIGHT, WIDTH + 1))), "error", "depth: image size",
     "depth: the depth image is 33x24, the colour image 32x24: depth must be aligned to the colour image"),
])
def test_depth_that_gives_no_3d_centroid_says_why(model, depth, level, kind, text):
    (publication,) = session_of(model).push(frame(0, depth))
    assert publication.centroid is None and publication.markers is None and not publication.result.has_centroid_3d
    (notice,) = publication.notices
    assert (notice.level, notice.kind, notice.text) == (level, kind, text)


def test_intrinsics_of_a_binned_camera_are_scaled_and_said_once(model):
    full_sensor = Intrinsics(2 * FX, 2 * FY, 2 * CX + 0.5, 2 * CY + 0.5, 2 * WIDTH, 2 * HEIGHT)
    session = session_of(model)
    publications = run(session, [frame(i, depth_frame(i / 10, depth_metres(), full_sensor)) for i in range(3)])
    for publication in publications:
        expected = expected_centroid(publication.track.mask, depth_metres(), full_sensor.scaled_to(WIDTH, HEIGHT))
        assert publication.centroid.point == Point(*expected)
    assert [[n.text for n in p.notices] for p in publications] == [
        ["camera_info: intrinsics for 64x48 images scaled to the 32x24 image (same aspect ratio: a binned or "
         "resized camera)"], [], []]
    assert publications[0].notices[0].level == "info"


# ---- CME switches ------------------------------------------------------------------------------------------

def test_a_cme_switch_reports_the_centroid_before_and_after_it(model):
    publications = run(session_of(model), [frame(i) for i in range(9)])
    switched = [p.result.frame_index for p in publications if p.cme_switch is not None]
    assert switched == [5, 8] == [p.result.frame_index for p in publications if p.result.cme_switched]
    for index in switched:
        before, after = publications[index - 1], publications[index]
        switch = after.cme_switch
        assert (switch.header, switch.query, switch.frame_index) == (after.header, "the red ball", index)
        assert switch.cme_probability == after.track.cme_probability > 0.99
        assert (switch.centroid_px_before, switch.centroid_px_after) == (Point.of(before.track.centroid),
                                                                         Point.of(after.track.centroid))


# ---- what is published ---------------------------------------------------------------------------------

def test_a_result_becomes_the_messages_fields(model):
    (publication,) = session_of(model).push(frame(0, depth_frame(0.0, depth_metres())))
    track, result = publication.track, publication.result
    assert (result.query, result.frame_index, result.detected, result.area_px) == (
        track.query, 0, True, int(track.mask.sum()))
    rows, cols = np.nonzero(track.mask)
    assert result.bbox == RegionOfInterest(x_offset=cols.min(), y_offset=rows.min(),
                                           height=rows.max() - rows.min() + 1, width=cols.max() - cols.min() + 1)
    centroid = result.centroid_px
    assert (centroid.x, centroid.y, centroid.z) == pytest.approx((cols.mean(), rows.mean(), 0.0))
    assert result.object_score == track.object_score
    assert math.isnan(result.cme_probability)  # the CME did not decide on the first frame
    assert result.latency_ms > 0 and result.latency_ms == 1000.0 * publication.latency_s
    mask = publication.mask
    assert (mask.encoding, mask.height, mask.width, mask.step) == ("mono8", HEIGHT, WIDTH, WIDTH)
    assert np.array_equal(mask.data.reshape(HEIGHT, WIDTH), track.mask * 255)
    assert list(publication.messages()) == ["mask", "result", "centroid", "markers"]  # no CME switch on frame 0
    assert region(None) == RegionOfInterest(0, 0, 0, 0)  # nothing detected: all zero


def test_a_3d_centroid_gets_a_sphere_and_the_query_as_markers_that_expire(model):
    (publication,) = session_of(model).push(frame(0, depth_frame(0.0, depth_metres())))
    sphere, text = publication.markers.markers
    point = publication.centroid.point
    assert (sphere.type, text.type) == (Marker.SPHERE, Marker.TEXT_VIEW_FACING) and sphere.id != text.id
    assert sphere.pose.position == point and sphere.scale.x == sphere.scale.y == sphere.scale.z > 0
    assert text.text == "the red ball" and text.scale.z > 0
    assert text.pose.position.y < point.y and (text.pose.position.x, text.pose.position.z) == (point.x, point.z)
    for marker in (sphere, text):
        assert marker.header is publication.header and marker.action == Marker.ADD
        assert marker.lifetime == Duration.from_ns(round(MARKER_LIFETIME_S * 1e9)) != Duration()
    (without,) = session_of(model).push(frame(0))
    assert without.markers is None and "markers" not in without.messages()


def test_the_session_and_the_bag_writer_import_no_ros():
    code = ("import sys, samwise_ros.session, samwise_ros.bags, samwise_ros.tools.replay; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('rclpy', 'rosidl_parser', 'sensor_msgs')))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


# ---- the depth parts: 3-D centroid, pairing by stamp, intrinsics ---------------------------------------------

def test_centroid_3d_is_the_median_of_valid_back_projected_pixels():
    mask = np.zeros((40, 60), bool)
    mask[10:20, 30:40] = True
    depth = np.full((40, 60), 2.0, np.float32)
    depth[10:12, 30:40] = 0.0  # holes
    depth[12, 30:35] = np.nan
    depth[19, 39] = 50.0  # one wild pixel moves a mean, not a median
    fx, fy, cx, cy = 100.0, 120.0, 29.5, 19.5
    x, y, z = centroid_3d(mask, depth, fx, fy, cx, cy)
    rows, cols = np.nonzero(mask & np.isfinite(depth) & (depth > 0))
    assert z == pytest.approx(2.0)
    assert x == pytest.approx(np.median((cols - cx) * 2.0 / fx), abs=1e-3)
    assert y == pytest.approx(np.median((rows - cy) * 2.0 / fy), abs=1e-3)
    millimetres = np.where(np.isfinite(depth), depth * 1000, 0).astype(np.uint16)
    assert centroid_3d(mask, millimetres, fx, fy, cx, cy, 0.001) == pytest.approx((x, y, z), abs=1e-3)


def test_centroid_3d_is_none_without_valid_depth_or_focal_length():
    mask = np.ones((4, 4), bool)
    assert centroid_3d(mask, np.full((4, 4), np.nan, np.float32), 1.0, 1.0, 0, 0) is None
    assert centroid_3d(mask, np.zeros((4, 4), np.uint16), 1.0, 1.0, 0, 0) is None
    assert centroid_3d(mask, np.ones((4, 4), np.float32), 0.0, 1.0, 0, 0) is None
    with pytest.raises(ValueError, match="differ in size"):
        centroid_3d(mask, np.ones((4, 5), np.float32), 1.0, 1.0, 0, 0)


def test_depth_pairing_takes_the_nearest_stamp_within_the_slop():
    pairing = DepthPairing(capacity=3)
    k = Intrinsics(100.0, 110.0, 1.5, 1.5, 4, 4)
    for stamp in (1.0, 1.1, 1.2, 1.3):  # capacity 3: 1.0 falls out
        pairing.add_depth(stamp, np.full((4, 4), stamp, np.float32), 1.0)
    assert pairing.match(1.2, 0.05) is None  # no intrinsics yet
    pairing.add_intrinsics(5.0, k)
    assert pairing.match(1.14, 0.05).stamp == 1.1
    assert pairing.match(1.16, 0.05).stamp == 1.2
    assert pairing.match(1.0, 0.05) is None  # dropped from the buffer, and 1.1 is beyond the slop
    assert pairing.match(1.4, 0.05) is None
    assert pairing.match(1.4, 0.15).intrinsics == k


def camera_info(width: int, height: int, fx: float, fy: float, cx: float, cy: float) -> SimpleNamespace:
    """What camera_info_to_intrinsics reads of a sensor_msgs/CameraInfo."""
    return SimpleNamespace(width=width, height=height, k=[fx, 0.0, cx, 0.0, fy, cy, 0.0, 0.0, 1.0])


def test_intrinsics_are_scaled_to_an_image_of_the_same_aspect_ratio_only():
    k = camera_info_to_intrinsics(camera_info(1280, 720, 900.0, 910.0, 640.0, 360.0))
    assert k.scaled_to(1280, 720) is k
    half = k.scaled_to(640, 360)
    assert (half.fx, half.fy, half.cx, half.cy) == (450.0, 455.0, 320.0, 180.0)
    third = k.scaled_to(426, 240)  # 3x3 binning rounds 426.67 down
    assert (third.fx, third.cy) == (pytest.approx(900.0 * 426 / 1280), 120.0)
    with pytest.raises(IntrinsicsMismatch, match="intrinsics are for 1280x720 images, the image is 640x480"):
        k.scaled_to(640, 480)
    unsized = camera_info_to_intrinsics(camera_info(0, 0, 900.0, 910.0, 640.0, 360.0))
    assert unsized.scaled_to(640, 480) is unsized  # no size to check it against
