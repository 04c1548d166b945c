"""The node's pure parts, without DDS: image conversions, depth pairing, 3-D centroid, parameters,
the work queue."""

import math

import cv2
import numpy as np
import pytest
import yaml
from diagnostic_msgs.msg import DiagnosticStatus
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_msgs.msg import Header

from ros_harness import PARAMETERS_FILE, camera_info, frame_pixels
from samwise_ros.geometry import centroid_3d
from samwise_ros.images import ImageError, check_image_size, compressed_to_rgb, depth_to_array, image_to_rgb
from samwise_ros.depth import DepthPairing, IntrinsicsMismatch, camera_info_to_intrinsics
from samwise_ros.ros.conversions import array_to_image, mask_to_image
from samwise_ros.params import PARAMETERS, PARAMETERS_BY_NAME
from samwise_ros.ros.diagnostics import STALLED_S, ProcessingStats
from samwise_ros.ros.parameters import descriptor, validate_changes
from samwise_ros.ros.work_queue import WorkQueue
from rclpy.parameter import Parameter

RGB = frame_pixels(0, 6, 5)  # odd sizes catch stride mistakes


def raw_image(pixels: np.ndarray, encoding: str, padding: int = 0, big_endian: bool = False) -> Image:
    """An Image built by hand (not by the code under test), rows padded with `padding` junk bytes."""
    height, width = pixels.shape[:2]
    rows = pixels.astype(pixels.dtype.newbyteorder(">" if big_endian else "<")).reshape(height, -1).view(np.uint8)
    padded = np.concatenate([rows, np.full((height, padding), 0xAB, np.uint8)], axis=1)
    msg = Image(height=height, width=width, encoding=encoding, is_bigendian=int(big_endian), step=padded.shape[1])
    msg.data = padded.tobytes()
    return msg


@pytest.mark.parametrize("padding", [0, 3])
@pytest.mark.parametrize("encoding, pixels", [
    ("rgb8", RGB),
    ("bgr8", RGB[:, :, ::-1]),
    ("rgba8", np.dstack([RGB, np.full(RGB.shape[:2], 7, np.uint8)])),
    ("bgra8", np.dstack([RGB[:, :, ::-1], np.full(RGB.shape[:2], 7, np.uint8)])),
])
def test_colour_encodings_become_rgb_views_of_the_message(encoding, pixels, padding):
    msg = raw_image(pixels, encoding, padding)
    rgb = image_to_rgb(msg)
    assert rgb.shape == RGB.shape and rgb.dtype == np.uint8
    assert np.array_equal(rgb, RGB)
    assert np.shares_memory(rgb, np.frombuffer(msg.data, np.uint8))  # no copy


def test_mono8_is_grey_in_all_three_channels():
    grey = RGB[:, :, 0].copy()
    rgb = image_to_rgb(raw_image(grey, "mono8", padding=2))
    assert rgb.shape == RGB.shape and all(np.array_equal(rgb[:, :, c], grey) for c in range(3))


@pytest.mark.parametrize("change, message", [
    (dict(encoding="16UC1"), "unsupported encoding '16UC1'"),
    (dict(step=10), "step 10 is shorter than a row"),
    (dict(height=7), "data has 90 bytes, but step x height"),
    (dict(width=0), "empty image"),
])
def test_malformed_images_are_rejected_with_the_reason(change, message):
    msg = raw_image(RGB, "rgb8", padding=0)
    for field, value in change.items():
        setattr(msg, field, value)
    with pytest.raises(ValueError, match=message):
        image_to_rgb(msg)
    with pytest.raises(ValueError, match="empty image"):
        image_to_rgb(Image(encoding="rgb8"))


def test_images_larger_than_max_image_pixels_are_refused_from_their_size_alone():
    check_image_size(64, 48, 64 * 48, "image")
    with pytest.raises(ImageError, match=r"image: 8000x6000 is 48000000 pixels, more than max_image_pixels "
                                         r"\(16777216\): frame rejected") as refused:
        check_image_size(8000, 6000, 4096 * 4096, "image")
    assert refused.value.kind == "too large"


@pytest.mark.parametrize("extension", [".png", ".jpg"])
def test_compressed_images_decode_to_rgb(extension):
    pixels = np.zeros((16, 24, 3), np.uint8)
    pixels[:, :12] = (200, 30, 10)  # RGB: red left half
    ok, encoded = cv2.imencode(extension, pixels[:, :, ::-1])
    rgb = compressed_to_rgb(CompressedImage(format=extension[1:], data=encoded.tobytes()))
    assert rgb.shape == pixels.shape
    if extension == ".png":
        assert np.array_equal(rgb, pixels)
    else:  # lossy, and blurred at the edge: compare the halves' insides
        assert np.abs(rgb[:, :8].mean((0, 1)) - (200, 30, 10)).max() < 8
        assert rgb[:, 16:].max() < 8
    with pytest.raises(ValueError, match="cannot decode"):
        compressed_to_rgb(CompressedImage(format="jpeg", data=b"not an image"))
    with pytest.raises(ValueError, match="empty"):
        compressed_to_rgb(CompressedImage(format="jpeg"))


@pytest.mark.parametrize("big_endian", [False, True])
def test_16uc1_depth_honours_endianness_and_step(big_endian):
    depth = np.arange(30, dtype=np.uint16).reshape(6, 5) * 1000 + 1
    msg = raw_image(depth, "16UC1", padding=3, big_endian=big_endian)  # odd step: unaligned rows
    values, metres_per_unit = depth_to_array(msg, 0.001)
    assert np.array_equal(values, depth) and metres_per_unit == 0.001
    assert np.shares_memory(values, np.frombuffer(msg.data, np.uint8))


def test_32fc1_depth_is_metres_and_other_encodings_are_refused():
    depth = np.full((4, 3), 1.25, np.float32)
    values, metres_per_unit = depth_to_array(raw_image(depth, "32FC1"), 0.001)
    assert np.array_equal(values, depth) and metres_per_unit == 1.0
    with pytest.raises(ValueError, match="depth: unsupported encoding 'rgb8'"):
        depth_to_array(raw_image(RGB, "rgb8"), 0.001)


def test_camera_info_needs_a_focal_length():
    k = camera_info_to_intrinsics(camera_info(0.0, 48, 64, fx=500.0, fy=510.0))
    assert (k.fx, k.fy, k.cx, k.cy) == (500.0, 510.0, 31.5, 23.5)
    with pytest.raises(ValueError, match="zero or non-finite focal length"):
        camera_info_to_intrinsics(CameraInfo())


def test_outgoing_images_round_trip():
    header = Header(frame_id="cam")
    mask = np.zeros((5, 7), bool)
    mask[1:3, 2:6] = True
    msg = mask_to_image(mask, header)
    assert (msg.encoding, msg.width, msg.height, msg.step, msg.header.frame_id) == ("mono8", 7, 5, 7, "cam")
    assert set(np.frombuffer(msg.data, np.uint8)) == {0, 255}
    assert np.array_equal(np.frombuffer(msg.data, np.uint8).reshape(5, 7) == 255, mask)
    bgr = RGB[:, :, ::-1]
    assert np.array_equal(image_to_rgb(array_to_image(bgr, "bgr8", header)), RGB)


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
    k = camera_info_to_intrinsics(camera_info(0.0, 4, 4))
    for stamp in (1.0, 1.1, 1.2, 1.3):  # capacity 3: 1.0 falls out
        pairing.add_depth(stamp, np.full((4, 4), stamp, np.float32), 1.0)
    assert pairing.match(1.2, 0.05) is None  # no intrinsics yet
    pairing.add_intrinsics(5.0, k)
    assert pairing.match(1.14, 0.05).stamp == 1.1
    assert pairing.match(1.16, 0.05).stamp == 1.2
    assert pairing.match(1.0, 0.05) is None  # dropped from the buffer, and 1.1 is beyond the slop
    assert pairing.match(1.4, 0.05) is None
    assert pairing.match(1.4, 0.15).intrinsics == k


def test_intrinsics_are_scaled_to_an_image_of_the_same_aspect_ratio_only():
    k = camera_info_to_intrinsics(CameraInfo(width=1280, height=720, k=[900.0, 0, 640.0, 0, 910.0, 360.0, 0, 0, 1]))
    assert k.scaled_to(1280, 720) is k
    half = k.scaled_to(640, 360)
    assert (half.fx, half.fy, half.cx, half.cy) == (450.0, 455.0, 320.0, 180.0)
    third = k.scaled_to(426, 240)  # 3x3 binning rounds 426.67 down
    assert (third.fx, third.cy) == (pytest.approx(900.0 * 426 / 1280), 120.0)
    with pytest.raises(IntrinsicsMismatch, match="intrinsics are for 1280x720 images, the image is 640x480"):
        k.scaled_to(640, 480)
    unsized = camera_info_to_intrinsics(CameraInfo(k=[900.0, 0, 640.0, 0, 910.0, 360.0, 0, 0, 1]))
    assert unsized.scaled_to(640, 480) is unsized  # no size to check it against


class ManualClock:
    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_diagnostics_warn_while_frames_are_rejected_and_error_once_none_is_processed_for_a_while():
    clock = ManualClock()
    stats = ProcessingStats(clock)
    stats.frame_processed()
    assert stats.report(dropped=0).level == DiagnosticStatus.OK
    clock.now += 1.0
    stats.frame_rejected("image: unsupported encoding 'yuv422'")
    report = stats.report(dropped=0)
    assert (report.level, report.values["frames rejected"]) == (DiagnosticStatus.WARN, "1")
    assert report.problem == "1 frames rejected (image: unsupported encoding 'yuv422')"
    clock.now += STALLED_S
    stats.frame_rejected("image: unsupported encoding 'yuv422'")
    report = stats.report(dropped=0)
    assert report.level == DiagnosticStatus.ERROR and report.problem.startswith("no frame processed for 6 s: ")
    stats.frame_processed()
    assert stats.report(dropped=0).level == DiagnosticStatus.OK  # nothing rejected since: the period is clean


def test_work_queue_keeps_the_newest_frames_and_runs_commands_first():
    queue = WorkQueue(max_frames=2)
    assert [queue.put_frame(i) for i in range(5)] == [False, False, True, True, True]
    queue.put_command("reset")
    assert [queue.get() for _ in range(3)] == [("command", "reset"), ("frame", 3), ("frame", 4)]
    assert queue.dropped == 3
    queue.close()
    assert queue.get() is None


def test_parameter_table_matches_the_shipped_parameters_file():
    document = yaml.safe_load(PARAMETERS_FILE.read_text())
    (key, section), = document.items()
    assert key.split("/")[-1] == "samwise"
    values = section["ros__parameters"]
    assert list(values) == [spec.name for spec in PARAMETERS]
    for spec in PARAMETERS:
        assert values[spec.name] == spec.default and type(values[spec.name]) is type(spec.default), spec.name
        assert spec.description and spec.problem(spec.default) is None


def test_parameter_changes_are_validated():
    assert validate_changes([Parameter("mask_threshold", value=0.7)]).successful
    result = validate_changes([Parameter("mask_threshold", value=1.5)])
    assert not result.successful and "strictly between 0 and 1" in result.reason
    assert not validate_changes([Parameter("image_reliability", value="sometimes")]).successful
    assert {spec.name for spec in PARAMETERS if spec.dynamic} == {
        "mask_threshold", "max_query_chars", "max_image_pixels", "depth_scale", "sync_slop", "publish_overlay"}
    assert descriptor(PARAMETERS_BY_NAME["mode"]).read_only
    assert math.isfinite(PARAMETERS_BY_NAME["sync_slop"].default)
