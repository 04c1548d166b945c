"""Conversions without DDS: incoming images and depth, camera_info, and the session's messages in rclpy
and in rosbags."""

from functools import partial

import cv2
import numpy as np
import pytest
from rclpy.serialization import deserialize_message, serialize_message
from sensor_msgs.msg import CameraInfo, CompressedImage, Image

from helpers.ros_harness import camera_info, frame_pixels
from samwise_ros.bags import bag_message, samwise_typestore
from samwise_ros.depth import camera_info_to_intrinsics
from samwise_ros.images import ImageError, check_image_size, compressed_to_rgb, depth_to_array, image_to_rgb
from samwise_ros.messages import Header, Time, build, image
from samwise_ros.ros.conversions import array_to_image, message_class, ros_message
from samwise_ros.result_messages import cme_switch, markers, segmentation
from samwise_ros.tracker import TrackResult

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
    header = Header(Time(3, 5), "cam")
    mask = np.zeros((5, 7), np.uint8)
    mask[1:3, 2:6] = 255
    msg = build(image(mask, "mono8", header), ros_message)
    assert (msg.encoding, msg.width, msg.height, msg.step, msg.header.frame_id) == ("mono8", 7, 5, 7, "cam")
    assert np.array_equal(np.frombuffer(msg.data, np.uint8).reshape(5, 7), mask)
    bgr = RGB[:, :, ::-1]
    assert np.array_equal(image_to_rgb(array_to_image(bgr, "bgr8", msg.header)), RGB)


def test_rclpy_and_rosbags_make_the_same_bytes_of_every_output():
    """The node publishes the session's messages with rclpy, the replay writes them with rosbags: a bag
    holds exactly what the node publishes (compared decoded: CDR's padding bytes are left undefined)."""

    def received(data: bytes, msgtype: str):
        return deserialize_message(data, message_class(msgtype))

    mask = np.zeros((6, 5), bool)
    mask[1:4, 2:4] = True
    result = TrackResult(frame_index=7, stamp=1.5, query="the red ball", mask=mask, object_score=0.875, detected=True,
                         bbox=(2, 1, 3, 3), area=6, centroid=(2.5, 2.0), cme_probability=0.96875, cme_switched=True)
    header = Header(Time(1, 500_000_000), "camera_color_optical_frame")
    point = (0.25, -0.125, 1.5)
    outputs = [image(mask.view(np.uint8) * np.uint8(255), "mono8", header), segmentation(result, header, point, 0.02),
               segmentation(result, header, None, 0.02), cme_switch(result, header, (1.0, 2.0)),
               markers(header, point, result.query)]
    typestore = samwise_typestore()
    for output in outputs:
        published = serialize_message(build(output, ros_message))
        written = bytes(typestore.serialize_cdr(build(output, partial(bag_message, typestore)), output.MSGTYPE))
        assert received(written, output.MSGTYPE) == received(published, output.MSGTYPE), output.MSGTYPE
