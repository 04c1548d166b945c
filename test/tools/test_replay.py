"""samwise-replay on bags written here with rosbags, on videos and on folders of frames (tiny model)."""

import itertools
import json
import os
import re
import subprocess
import sys

import cv2
import numpy as np
import pytest
from rosbags.highlevel import AnyReader
from rosbags.rosbag2 import StoragePlugin, Writer

from samwise_ros.bags import image_to_rgb, samwise_typestore
from samwise_ros.data.synthetic import demo_scene
from samwise_ros.params import default_parameters_file, load_node_parameters, override_parameters
from samwise_ros.runtime import model_from_parameters, tracker_from_parameters
from samwise_ros.tools import replay
from samwise_ros.weights import demo_weights

os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")  # rclpy is imported below (no DDS)

HEIGHT, WIDTH = 24, 32
IMAGE_TOPIC, QUERY_TOPIC = "/camera/color/image_raw", "/text_query"
TYPES = samwise_typestore()
T = TYPES.types


def frames(count, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8) for _ in range(count)]


def stamp_ns(index):
    return 1_700_000_000 * 10**9 + index * 100_000_000  # 10 Hz


def header(index):
    ns = stamp_ns(index)
    return T["std_msgs/msg/Header"](stamp=T["builtin_interfaces/msg/Time"](sec=ns // 10**9, nanosec=ns % 10**9),
                                    frame_id="camera_color_optical_frame")


def raw_image(index, rgb, encoding="rgb8"):
    pixels = {"rgb8": rgb, "bgr8": rgb[..., ::-1]}.get(encoding, rgb[..., :2])  # anything else: 2 channels
    height, width, channels = pixels.shape
    return T["sensor_msgs/msg/Image"](header=header(index), height=height, width=width, encoding=encoding,
                                      is_bigendian=0, step=width * channels,
                                      data=np.ascontiguousarray(pixels).reshape(-1))


def compressed_image(index, rgb):
    ok, data = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    return T["sensor_msgs/msg/CompressedImage"](header=header(index), format="rgb8; png compressed bgr8",
                                                data=data.reshape(-1))


def write_bag(path, storage, images, queries=(), encoding="rgb8", compressed=False, corrupt_at=None):
    """images: RGB frames; queries: (before frame index, text); corrupt_at: a frame written truncated."""
    msgtype = "sensor_msgs/msg/CompressedImage" if compressed else "sensor_msgs/msg/Image"
    with Writer(path, version=9, storage_plugin=storage) as writer:
        image_connection = writer.add_connection(IMAGE_TOPIC, msgtype, typestore=TYPES)
        query_connection = writer.add_connection(QUERY_TOPIC, "std_msgs/msg/String", typestore=TYPES)
        writer.add_connection("/camera/depth/image_rect_raw", "sensor_msgs/msg/Image", typestore=TYPES)
        queries = dict(queries)
        for index, rgb in enumerate(images):
            if index in queries:
                data = TYPES.serialize_cdr(T["std_msgs/msg/String"](data=queries[index]), "std_msgs/msg/String")
                writer.write(query_connection, stamp_ns(index) - 1000, data)
            message = compressed_image(index, rgb) if compressed else raw_image(index, rgb, encoding)
            data = TYPES.serialize_cdr(message, msgtype)
            writer.write(image_connection, stamp_ns(index) + 5000, data[:40] if index == corrupt_at else data)
    return path


@pytest.fixture(scope="module")
def model_dir(tiny_model, tmp_path_factory):
    return tiny_model.save(tmp_path_factory.mktemp("model"))


def run(model_dir, *arguments):
    return replay.main([*map(str, arguments), "--checkpoint", str(model_dir), "--device", "cpu"])


def read_bag(path):
    """{topic: [(log time, raw bytes, msgtype)]} of a bag, read back with rosbags."""
    topics = {}
    with AnyReader([path]) as reader:
        for connection, log_time, raw in reader.messages():
            topics.setdefault(connection.topic, []).append((log_time, raw, connection.msgtype))
    return topics


def test_mcap_bag_with_a_query_topic_changing_mid_bag(model_dir, tmp_path):
    """6 frames in clips of 2; the query changes before frame 3. Frames 0-1 form a clip; frame 2 is
    still buffered when the new query arrives and is dropped with the old stream (as the node does);
    frames 3-4 form a clip and frame 5 is flushed at the end: 5 results."""
    images = frames(6)
    bag = write_bag(tmp_path / "in", StoragePlugin.MCAP, images,
                    queries=[(0, "the red ball"), (3, "a small green square")])
    assert run(model_dir, bag, "--image-topic", IMAGE_TOPIC, "--query-topic", QUERY_TOPIC, "--set", "clip_length=2",
               "--output-bag", tmp_path / "out", "--results", tmp_path / "results.jsonl") == 0
    records = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert [r["input_frame"] for r in records] == [0, 1, 3, 4, 5]
    assert [r["frame_index"] for r in records] == [0, 1, 0, 1, 2]
    assert [r["query"] for r in records] == ["the red ball"] * 2 + ["a small green square"] * 3

    from rclpy.serialization import deserialize_message
    from samwise_ros.msg import CmeSwitch, Segmentation
    from sensor_msgs.msg import Image

    topics = read_bag(tmp_path / "out")
    assert set(topics) <= {"/mask", "/result", "/cme_switch"}
    assert {msgtype for _, _, msgtype in topics["/mask"]} == {"sensor_msgs/msg/Image"}
    assert {msgtype for _, _, msgtype in topics["/result"]} == {"samwise_ros/msg/Segmentation"}
    masks = [deserialize_message(raw, Image) for _, raw, _ in topics["/mask"]]
    results = [deserialize_message(raw, Segmentation) for _, raw, _ in topics["/result"]]
    switches = [deserialize_message(raw, CmeSwitch) for _, raw, _ in topics.get("/cme_switch", [])]
    assert len(masks) == len(results) == 5 and len(switches) == sum(r["cme_switched"] for r in records)
    expected_stamps = [stamp_ns(i) for i in (0, 1, 3, 4, 5)]
    for mask, result, stamp, record in zip(masks, results, expected_stamps, records):
        for message in (mask, result):
            assert message.header.stamp.sec * 10**9 + message.header.stamp.nanosec == stamp
            assert message.header.frame_id == "camera_color_optical_frame"
        assert (mask.height, mask.width, mask.encoding, mask.step) == (HEIGHT, WIDTH, "mono8", WIDTH)
        pixels = np.frombuffer(bytes(mask.data), np.uint8)
        assert pixels.size == HEIGHT * WIDTH and set(np.unique(pixels)) <= {0, 255}
        assert result.area_px == np.count_nonzero(pixels) == record["area"]
        assert result.query == record["query"] and result.frame_index == record["frame_index"]
        assert result.detected == record["detected"]
        assert result.object_score == pytest.approx(record["object_score"], abs=1e-4)
    assert [t for t, _, _ in topics["/result"]] == sorted(t for t, _, _ in topics["/result"])


def test_sqlite3_compressed_images_and_two_queries(model_dir, tmp_path, capsys):
    """Two --query streams over 4 PNG-compressed frames (clips of 8: all flushed at the end): 4 results
    each, masks in masks/0 and masks/1, an overlay video per stream, namespaced topics in the bag."""
    bag = write_bag(tmp_path / "in", StoragePlugin.SQLITE3, frames(4), compressed=True)
    assert run(model_dir, bag, "--image-topic", IMAGE_TOPIC, "--query", "the red ball", "--query", "the blue cup",
               "--masks", tmp_path / "masks",
               "--overlay", tmp_path / "overlay.mp4", "--results", tmp_path / "r.jsonl",
               "--output-bag", tmp_path / "out", "--storage", "sqlite3", "--namespace", "/samwise") == 0
    for stream in ("0", "1"):
        names = sorted(p.name for p in (tmp_path / "masks" / stream).iterdir())
        assert names == [f"{i:06d}.png" for i in range(4)]
        assert set(np.unique(cv2.imread(str(tmp_path / "masks" / stream / names[0]), cv2.IMREAD_UNCHANGED))) <= {0, 255}
        video = cv2.VideoCapture(str(tmp_path / f"overlay_{stream}.mp4"))
        assert int(video.get(cv2.CAP_PROP_FRAME_COUNT)) == 4
        assert int(video.get(cv2.CAP_PROP_FRAME_WIDTH)) == WIDTH
    records = [json.loads(line) for line in (tmp_path / "r.jsonl").read_text().splitlines()]
    assert sorted((r["stream"], r["input_frame"]) for r in records) == [(s, i) for s in (0, 1) for i in range(4)]
    assert list((tmp_path / "out").glob("*.db3"))
    topics = read_bag(tmp_path / "out")
    assert len(topics["/samwise/query_0/mask"]) == len(topics["/samwise/query_1/result"]) == 4
    summary = capsys.readouterr().out
    assert "frames:  4" in summary and "stream 1 ('the blue cup'): 4 results" in summary


def test_missing_bag(model_dir, tmp_path, capsys):
    assert run(model_dir, tmp_path / "no_such_bag") == 2
    assert "no bag at" in capsys.readouterr().err


@pytest.mark.parametrize("assignment, problem", [
    ("mask_treshold=0.9", "unknown parameter 'mask_treshold' (did you mean 'mask_threshold'?)"),
    ("nonsense=1", "unknown parameter 'nonsense'"),  # no parameter's name is close
])
def test_an_unknown_parameter_starts_nothing(model_dir, tmp_path, capsys, assignment, problem):
    video = write_video(tmp_path / "clip.avi", frames(2))
    assert run(model_dir, video, "--query", "x", "--set", assignment, "--results", tmp_path / "r.jsonl") == 2
    assert capsys.readouterr().err == f"samwise-replay: error: the command line: {problem}\n"
    assert not (tmp_path / "r.jsonl").exists()


NO_QUERY = "no query: give --query TEXT (or --query-topic for a bag that has one), or set the query parameter"


@pytest.mark.parametrize("query_arguments", [[], ["--query", "  "]], ids=["no --query", "a blank --query"])
def test_without_a_query_nothing_starts(tmp_path, capsys, query_arguments):
    """Refused before the model loads (the checkpoint given does not exist): an empty query segments nothing."""
    video = write_video(tmp_path / "clip.avi", frames(2))
    assert run(tmp_path / "no_model", video, *query_arguments, "--results", tmp_path / "r.jsonl") == 2
    assert capsys.readouterr().err == f"samwise-replay: error: {NO_QUERY}\n"
    assert not (tmp_path / "r.jsonl").exists()


def test_a_query_topic_without_messages_is_no_query(tmp_path, capsys):
    bag = write_bag(tmp_path / "in", StoragePlugin.MCAP, frames(2))  # its query topic has no message
    assert run(tmp_path / "no_model", bag, "--image-topic", IMAGE_TOPIC, "--query-topic", QUERY_TOPIC) == 2
    assert capsys.readouterr().err == (f"samwise-replay: error: no query: the bag has no message on {QUERY_TOPIC}: "
                                       "give --query TEXT, or set the query parameter\n")


def test_the_query_parameter_of_the_parameters_file_is_the_query(model_dir, tmp_path):
    params = tmp_path / "samwise.yaml"
    params.write_text('/**/samwise:\n  ros__parameters:\n    query: "the red ball"\n')
    video = write_video(tmp_path / "clip.avi", frames(2))
    assert run(model_dir, video, "--params", params, "--results", tmp_path / "r.jsonl") == 0
    records = [json.loads(line) for line in (tmp_path / "r.jsonl").read_text().splitlines()]
    assert [r["query"] for r in records] == ["the red ball"] * 2


def test_unknown_topic_lists_the_image_topics(model_dir, tmp_path, capsys):
    bag = write_bag(tmp_path / "in", StoragePlugin.MCAP, frames(1))
    assert run(model_dir, bag, "--image-topic", "/camera/image", "--query", "x") == 2
    error = capsys.readouterr().err
    assert "'/camera/image' is not in the bag" in error
    assert "/camera/color/image_raw" in error and "/camera/depth/image_rect_raw" in error
    assert run(model_dir, bag, "--query", "x") == 2  # two image topics: one must be chosen
    assert "choose the image topic" in capsys.readouterr().err


def test_unsupported_encoding(model_dir, tmp_path, capsys):
    bag = write_bag(tmp_path / "in", StoragePlugin.MCAP, frames(2), encoding="16UC1")
    assert run(model_dir, bag, "--image-topic", IMAGE_TOPIC, "--query", "x", "--results", tmp_path / "r.jsonl") == 1
    assert "image encoding '16UC1' is not supported" in capsys.readouterr().err
    assert (tmp_path / "r.jsonl").read_text() == ""


def test_truncated_message_keeps_what_came_before(model_dir, tmp_path, capsys):
    """Frame 3 of 5 is cut short: frames 0-2 are segmented and written, then a clear error."""
    bag = write_bag(tmp_path / "in", StoragePlugin.SQLITE3, frames(5), corrupt_at=3)
    assert run(model_dir, bag, "--image-topic", IMAGE_TOPIC, "--query", "the red ball",
               "--results", tmp_path / "r.jsonl", "--output-bag", tmp_path / "out") == 1
    assert "cannot be read past image 3 of 5" in capsys.readouterr().err
    assert [json.loads(line)["input_frame"] for line in (tmp_path / "r.jsonl").read_text().splitlines()] == [0, 1, 2]
    assert len(read_bag(tmp_path / "out")["/result"]) == 3  # the output bag was closed properly


def test_truncated_mcap_file_is_a_clear_error(model_dir, tmp_path, capsys):
    bag = write_bag(tmp_path / "in", StoragePlugin.MCAP, frames(3))
    data = (bag / "in.mcap").read_bytes()
    (bag / "in.mcap").write_bytes(data[: len(data) // 2])
    assert run(model_dir, bag, "--image-topic", IMAGE_TOPIC, "--query", "x") == 2
    error = capsys.readouterr().err
    assert "cannot open bag" in error and "mcap recover" in error


def write_video(path, images, fourcc="MJPG"):
    height, width = images[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), 5.0, (width, height))
    for rgb in images:
        writer.write(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    writer.release()
    return path


def test_video_file_and_truncated_video(model_dir, tmp_path, capsys):
    video = write_video(tmp_path / "clip.avi", frames(6))
    assert run(model_dir, video, "--query", "the red ball", "--results", tmp_path / "r.jsonl") == 0
    records = [json.loads(line) for line in (tmp_path / "r.jsonl").read_text().splitlines()]
    assert [r["stamp"] for r in records] == pytest.approx([i / 5.0 for i in range(6)])  # the video's 5 frames/s

    data = video.read_bytes()
    (tmp_path / "cut.avi").write_bytes(data[: int(len(data) * 0.8)])  # the last frame or two cut off
    capsys.readouterr()
    assert run(model_dir, tmp_path / "cut.avi", "--query", "the red ball", "--results", tmp_path / "cut.jsonl") == 1
    assert "ended after 4 of the 6 frames it declares: the file is truncated" in capsys.readouterr().err
    assert len((tmp_path / "cut.jsonl").read_text().splitlines()) == 4  # what was read is kept


def test_a_damaged_video_is_said_once_and_ffmpeg_keeps_quiet(model_dir, tmp_path):
    """An MPEG-4 video with its middle third zeroed, which FFmpeg would log a line for per damaged block
    (hundreds). In a process of its own: FFmpeg writes to the process's stderr from C, and OpenCV sets its
    log level once per process."""
    video = write_video(tmp_path / "clip.mp4", [demo_scene().render(t)[0] for t in range(10)], fourcc="mp4v")
    data = bytearray(video.read_bytes())
    third = len(data) // 3
    data[third: 2 * third] = bytes(third)
    video.write_bytes(data)
    environment = {name: value for name, value in os.environ.items() if name != "OPENCV_FFMPEG_LOGLEVEL"}
    done = subprocess.run([sys.executable, "-m", "samwise_ros.tools.replay", str(video), "--query", "the red ball",
                           "--checkpoint", str(model_dir), "--device", "cpu"],
                          env=environment, capture_output=True, timeout=300)
    errors = done.stderr.decode()  # not text=True, which turns the progress bar's redrawing \r into lines
    assert done.returncode == 1, errors[-3000:]
    assert re.search(r"^samwise-replay: error: the video ended after \d+ of the 10 frames it declares: "
                     r"the file is truncated or damaged", errors, re.MULTILINE), errors[-3000:]
    assert errors.count("\n") <= 3, errors[:3000]  # the progress bar's line and the error
    # with OPENCV_FFMPEG_LOGLEVEL at an error level, OpenCV prints FFmpeg's lines to stdout instead
    assert done.stdout.decode().count("\n") == 4, done.stdout[:3000]  # the summary


def test_folder_of_frames_keeps_the_file_names(model_dir, tmp_path):
    folder = tmp_path / "frames"
    folder.mkdir()
    for index, rgb in enumerate(frames(3)):
        cv2.imwrite(str(folder / f"frame_{index:03d}.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    assert run(model_dir, folder, "--query", "the red ball", "--masks", tmp_path / "masks",
               "--output-bag", tmp_path / "out", "--frame-id", "cam") == 0
    assert sorted(p.name for p in (tmp_path / "masks").iterdir()) == [f"frame_{i:03d}.png" for i in range(3)]
    assert len(read_bag(tmp_path / "out")["/mask"]) == 3


def test_folder_whose_first_image_is_unreadable_starts_nothing(model_dir, tmp_path, capsys):
    folder = tmp_path / "frames"
    folder.mkdir()
    (folder / "a.png").write_bytes(b"not a png")
    cv2.imwrite(str(folder / "b.png"), frames(1)[0])
    assert run(model_dir, folder, "--query", "the red ball", "--output-bag", tmp_path / "out") == 2
    assert f"cannot read image {folder / 'a.png'}" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_bag_without_image_topics_lists_its_topics_and_types(model_dir, tmp_path, capsys):
    with Writer(tmp_path / "in", version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        writer.add_connection(QUERY_TOPIC, "std_msgs/msg/String", typestore=TYPES)
        writer.add_connection("/camera/camera_info", "sensor_msgs/msg/CameraInfo", typestore=TYPES)
    assert run(model_dir, tmp_path / "in", "--query", "x") == 2
    error = capsys.readouterr().err
    assert ("the bag has no sensor_msgs/msg/Image or sensor_msgs/msg/CompressedImage topic; its topics: "
            "/camera/camera_info (sensor_msgs/msg/CameraInfo), /text_query (std_msgs/msg/String)") in error


def test_over_long_query_is_rejected(model_dir, tmp_path, capsys):
    folder = tmp_path / "frames"
    folder.mkdir()
    cv2.imwrite(str(folder / "a.png"), frames(1)[0])
    assert run(model_dir, folder, "--query", "x" * 20, "--set", "max_query_chars=10") == 2
    assert "more than max_query_chars (10)" in capsys.readouterr().err


@pytest.mark.parametrize("encoding", ["rgb8", "bgr8", "rgba8", "bgra8", "mono8"])
def test_image_encodings_with_padded_rows(encoding):
    """Every encoding the node accepts, with 3 bytes of padding per row (step > width * channels)."""
    rgb = frames(1)[0]
    pixels = {"rgb8": rgb, "bgr8": rgb[..., ::-1], "mono8": rgb[..., :1],
              "rgba8": np.dstack([rgb, np.full_like(rgb[..., :1], 7)]),
              "bgra8": np.dstack([rgb[..., ::-1], np.full_like(rgb[..., :1], 7)])}[encoding]
    step = WIDTH * pixels.shape[2] + 3
    rows = np.zeros((HEIGHT, step), np.uint8)
    rows[:, : WIDTH * pixels.shape[2]] = pixels.reshape(HEIGHT, -1)
    message = T["sensor_msgs/msg/Image"](header=header(0), height=HEIGHT, width=WIDTH, encoding=encoding,
                                         is_bigendian=0, step=step, data=rows.reshape(-1))
    expected = np.repeat(rgb[..., :1], 3, axis=2) if encoding == "mono8" else rgb
    decoded = image_to_rgb(message)
    assert decoded.flags.writeable and np.array_equal(decoded, expected)


DEPTH_TOPIC, INFO_TOPIC = "/camera/depth/aligned", "/camera/color/camera_info"
FX, FY, CX, CY = 30.0, 32.0, (WIDTH - 1) / 2, (HEIGHT - 1) / 2


def millimetres(metres):
    return np.nan_to_num(metres * 1000.0, nan=0.0).astype(np.uint16)  # 16UC1: 0 is a hole


def depth_image(index, metres):
    return T["sensor_msgs/msg/Image"](header=header(index), height=HEIGHT, width=WIDTH, encoding="16UC1",
                                      is_bigendian=0, step=WIDTH * 2, data=millimetres(metres).view(np.uint8).reshape(-1))


def camera_info(index):
    return T["sensor_msgs/msg/CameraInfo"](
        header=header(index), height=HEIGHT, width=WIDTH, distortion_model="plumb_bob", d=np.zeros(5),
        k=np.array([FX, 0.0, CX, 0.0, FY, CY, 0.0, 0.0, 1.0]), r=np.eye(3).reshape(-1), p=np.zeros(12),
        binning_x=0, binning_y=0, roi=T["sensor_msgs/msg/RegionOfInterest"](
            x_offset=0, y_offset=0, height=0, width=0, do_rectify=False))


def write_depth_bag(path, images, depths):
    """Colour frames at 10 Hz; after each, camera_info and (where `depths` has one) a depth frame of
    the same stamp, recorded a little later as a camera driver's would be."""
    with Writer(path, version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        colour = writer.add_connection(IMAGE_TOPIC, "sensor_msgs/msg/Image", typestore=TYPES)
        info = writer.add_connection(INFO_TOPIC, "sensor_msgs/msg/CameraInfo", typestore=TYPES)
        depth = writer.add_connection(DEPTH_TOPIC, "sensor_msgs/msg/Image", typestore=TYPES)
        for index, rgb in enumerate(images):
            writer.write(colour, stamp_ns(index) + 5000,
                         TYPES.serialize_cdr(raw_image(index, rgb), "sensor_msgs/msg/Image"))
            writer.write(info, stamp_ns(index) + 6000,
                         TYPES.serialize_cdr(camera_info(index), "sensor_msgs/msg/CameraInfo"))
            if depths[index] is not None:
                writer.write(depth, stamp_ns(index) + 9000,
                             TYPES.serialize_cdr(depth_image(index, depths[index]), "sensor_msgs/msg/Image"))
    return path


def expected_centroid(mask, metres):
    recorded = millimetres(metres) * 0.001  # depth_scale of config/samwise.yaml
    rows, cols = np.nonzero(mask & (recorded > 0))
    z = recorded[rows, cols]
    return [np.median((cols - CX) * z / FX), np.median((rows - CY) * z / FY), np.median(z)]


def test_depth_and_camera_info_give_the_nodes_3d_centroid_and_markers(present_model_dir, tmp_path, capsys):
    """Depth recorded just after its colour frame is paired by stamp; frame 2 has no depth within the
    slop and frame 4's depth is all holes (NaN): no 3-D centroid there (said once each), a PointStamped
    and markers elsewhere."""
    rng = np.random.default_rng(3)
    depths = [rng.uniform(0.5, 3.0, (HEIGHT, WIDTH)) for _ in range(6)]
    depths[2], depths[4] = None, np.full((HEIGHT, WIDTH), np.nan)
    bag = write_depth_bag(tmp_path / "in", frames(6), depths)
    assert run(present_model_dir, bag, "--image-topic", IMAGE_TOPIC, "--query", "the red ball",
               "--depth-topic", DEPTH_TOPIC, "--camera-info-topic", INFO_TOPIC, "--set", "clip_length=4",
               "--masks", tmp_path / "masks", "--results", tmp_path / "r.jsonl", "--output-bag", tmp_path / "out") == 0

    from geometry_msgs.msg import PointStamped
    from rclpy.serialization import deserialize_message
    from samwise_ros.msg import Segmentation
    from visualization_msgs.msg import Marker, MarkerArray

    topics = read_bag(tmp_path / "out")
    results = [deserialize_message(raw, Segmentation) for _, raw, _ in topics["/result"]]
    points = [deserialize_message(raw, PointStamped) for _, raw, _ in topics["/centroid"]]
    marker_arrays = [deserialize_message(raw, MarkerArray) for _, raw, _ in topics["/markers"]]
    records = [json.loads(line) for line in (tmp_path / "r.jsonl").read_text().splitlines()]
    assert all(r.detected for r in results) and len(results) == 6
    with_depth = [0, 1, 3, 5]
    assert [r.has_centroid_3d for r in results] == [i in with_depth for i in range(6)]
    assert [r["centroid_3d"] is not None for r in records] == [i in with_depth for i in range(6)]
    assert [p.header.stamp.sec * 10**9 + p.header.stamp.nanosec for p in points] == [stamp_ns(i) for i in with_depth]
    for index, point in zip(with_depth, points):
        mask = cv2.imread(str(tmp_path / "masks" / f"{index:06d}.png"), cv2.IMREAD_UNCHANGED) == 255
        expected = expected_centroid(mask, depths[index])
        assert [point.point.x, point.point.y, point.point.z] == pytest.approx(expected, abs=1e-6)
        assert point.header.frame_id == "camera_color_optical_frame"
        stored = results[index].centroid_3d
        assert [stored.x, stored.y, stored.z] == pytest.approx(expected, abs=1e-6)
        assert records[index]["centroid_3d"] == pytest.approx(expected, abs=1e-6)
    assert len(marker_arrays) == len(points)
    for point, array in zip(points, marker_arrays):
        sphere, text = array.markers
        assert (sphere.type, sphere.header, sphere.pose.position) == (Marker.SPHERE, point.header, point.point)
        assert (text.type, text.header, text.text) == (Marker.TEXT_VIEW_FACING, point.header, "the red ball")
    errors = capsys.readouterr().err
    assert errors.count("samwise-replay: warning: depth: no depth frame with camera_info within sync_slop") == 1
    assert errors.count("samwise-replay: warning: depth: no valid depth under the mask") == 1


def test_depth_topic_errors(model_dir, tmp_path, capsys):
    bag = write_depth_bag(tmp_path / "in", frames(2), [np.ones((HEIGHT, WIDTH))] * 2)
    assert run(model_dir, bag, "--image-topic", IMAGE_TOPIC, "--query", "x",
               "--depth-topic", "/depth", "--camera-info-topic", INFO_TOPIC) == 2
    error = capsys.readouterr().err
    assert "depth topic '/depth' is not a sensor_msgs/msg/Image topic" in error and DEPTH_TOPIC in error
    with pytest.raises(SystemExit) as exited:
        run(model_dir, bag, "--image-topic", IMAGE_TOPIC, "--depth-topic", DEPTH_TOPIC)
    assert exited.value.code == 2
    assert capsys.readouterr().err.endswith(
        "samwise-replay: error: --depth-topic and --camera-info-topic go together\n")


# ---- replay against the tracker itself -------------------------------------------------------------

SCENE_FRAMES = 5
SCENE_SETTINGS = ("clip_length=3",)  # a clip of 3 frames, then 2 flushed at the end


@pytest.fixture(scope="module")
def scene_images():
    """RGB frames of the demo scene, where the demo weights find the red ball."""
    scene = demo_scene()
    return [scene.render(t)[0] for t in range(SCENE_FRAMES)]


def scene_parameters():
    """The parameters replay reads for the runs below: the package's file, the demo weights, SCENE_SETTINGS."""
    return override_parameters(load_node_parameters(default_parameters_file()),
                               [f"checkpoint={demo_weights()}", "device=cpu", *SCENE_SETTINGS])


@pytest.fixture(scope="module")
def demo_model():
    return model_from_parameters(scene_parameters())


def track_directly(model, images):
    """The StreamTracker that the node's parameters describe, fed `images` one by one."""
    tracker = tracker_from_parameters(model, scene_parameters())
    tracker.set_query(demo_scene().expression)
    return [result for image in images for result in tracker.push(np.ascontiguousarray(image))] + tracker.flush()


@pytest.fixture(scope="module")
def direct_results(demo_model, scene_images):
    return track_directly(demo_model, scene_images)


def test_the_direct_run_tells_rgb_from_bgr_and_each_frame_from_the_next(demo_model, scene_images, direct_results):
    """What gives the comparison below its power: with BGR frames the red ball looks blue and is not found,
    and the ball moves every frame, so swapped channels or a shifted frame change the results."""
    assert len(direct_results) == SCENE_FRAMES and all(result.detected for result in direct_results)
    bgr_results = track_directly(demo_model, [image[..., ::-1] for image in scene_images])
    assert not any(result.detected for result in bgr_results)
    assert all(not np.array_equal(before.mask, after.mask) for before, after in itertools.pairwise(direct_results))


def write_scene_input(kind, images, tmp_path):
    """The input's path and the arguments it needs."""
    if kind == "bgr8 bag":
        return [write_bag(tmp_path / "in", StoragePlugin.MCAP, images, encoding="bgr8"), "--image-topic", IMAGE_TOPIC]
    if kind == "lossless video":
        return [write_video(tmp_path / "scene.mkv", images, fourcc="FFV1")]
    folder = tmp_path / "frames"
    folder.mkdir()
    for index, rgb in enumerate(images):
        cv2.imwrite(str(folder / f"frame_{index:03d}.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    return [folder]


EXACT_FIELDS = ("frame_index", "detected", "area", "bbox", "centroid", "cme_switched")


@pytest.mark.parametrize("kind", ["bgr8 bag", "lossless video", "folder of PNGs"])
def test_replay_gives_what_the_tracker_gives_on_the_same_rgb_frames(kind, scene_images, direct_results, tmp_path):
    arguments = write_scene_input(kind, scene_images, tmp_path)
    settings = [item for setting in SCENE_SETTINGS for item in ("--set", setting)]
    assert run(demo_weights(), *arguments, "--query", demo_scene().expression, *settings,
               "--masks", tmp_path / "masks", "--results", tmp_path / "r.jsonl") == 0
    records = [json.loads(line) for line in (tmp_path / "r.jsonl").read_text().splitlines()]
    assert [record["input_frame"] for record in records] == list(range(SCENE_FRAMES))
    for record, expected in zip(records, direct_results):
        mask = cv2.imread(str(tmp_path / "masks" / f"{record['name']}.png"), cv2.IMREAD_UNCHANGED)
        assert np.count_nonzero((mask == 255) != expected.mask) == 0, record["name"]
        # through JSON, as the record went: tuples become lists
        assert {name: record[name] for name in EXACT_FIELDS} == json.loads(
            json.dumps({name: getattr(expected, name) for name in EXACT_FIELDS}))
        assert record["object_score"] == pytest.approx(expected.object_score, abs=1e-5)  # written to 5 decimals
        assert record["cme_probability"] == pytest.approx(expected.cme_probability)
