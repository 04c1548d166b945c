"""samwise-eval on synthetic datasets in the benchmark layouts, end to end with the tiny model."""

import json

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools import mask as coco_mask

from samwise_ros.eval import inference
from samwise_ros.eval.inference import davis_labels
from samwise_ros.eval.datasets import Video
from samwise_ros.tools import eval as eval_tool

HEIGHT, WIDTH, FRAMES = 48, 64, 4
PALETTE = [0, 0, 0, 128, 0, 0, 0, 128, 0] + [255] * (256 * 3 - 9)


def object_masks(frame):
    """Two moving squares: object 1 and object 2."""
    first, second = np.zeros((HEIGHT, WIDTH), bool), np.zeros((HEIGHT, WIDTH), bool)
    first[8:24, 4 + 2 * frame : 20 + 2 * frame] = True
    second[28:44, 40 - frame : 56 - frame] = True
    return first, second


def frame_image(frame):
    image = np.full((HEIGHT, WIDTH, 3), 40, np.uint8)
    first, second = object_masks(frame)
    image[first] = (220, 30, 30)
    image[second] = (30, 200, 30)
    return image


def write_frames(folder, names):
    folder.mkdir(parents=True)
    for index, name in enumerate(names):
        Image.fromarray(frame_image(index)).save(folder / f"{name}.jpg", quality=95)


def save_labels(path, labels):
    image = Image.fromarray(labels.astype(np.uint8))
    image.putpalette(PALETTE)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)


def label_map(frame, objects=2):
    labels = np.zeros((HEIGHT, WIDTH), np.uint8)
    for object_id, mask in enumerate(object_masks(frame)[:objects], start=1):
        labels[mask] = object_id
    labels[0, :] = 255  # a void row, as DAVIS marks uncertain pixels
    return labels


@pytest.fixture(scope="module")
def model_dir(tiny_model, tmp_path_factory):
    return tiny_model.save(tmp_path_factory.mktemp("model"))


@pytest.fixture(scope="module")
def ref_davis(tmp_path_factory):
    """Ref-DAVIS17 after SAMWISE's conversion: two videos, with 1 and 2 objects, 4 texts per object."""
    root = tmp_path_factory.mktemp("ref-davis")
    names = [f"{i:05d}" for i in range(FRAMES)]
    texts = {1: "the red square moving right", 2: "the green square moving left"}
    videos = {}
    for video, objects in (("one", 1), ("two", 2)):
        write_frames(root / "valid" / "JPEGImages" / video, names)
        for index, name in enumerate(names):
            save_labels(root / "DAVIS" / "Annotations_unsupervised" / "480p" / video / f"{name}.png",
                        label_map(index, objects))
        expressions = {str(4 * (o - 1) + a): {"exp": texts[o], "obj_id": str(o)}
                       for o in range(1, objects + 1) for a in range(4)}
        videos[video] = {"expressions": expressions, "frames": names}
    meta = root / "meta_expressions" / "valid" / "meta_expressions.json"
    meta.parent.mkdir(parents=True)
    meta.write_text(json.dumps({"videos": videos}))
    return root


@pytest.fixture(scope="module")
def davis_run(ref_davis, model_dir, tmp_path_factory):
    output = tmp_path_factory.mktemp("davis-out")
    assert eval_tool.main(["video", str(ref_davis), "--dataset", "ref-davis17", "--checkpoint", str(model_dir),
                           "--device", "cpu", "--output", str(output)]) == 0
    return output, json.loads((output / "results.json").read_text())


def test_ref_davis17_end_to_end(ref_davis, davis_run):
    output, report = davis_run
    assert [a["annotator"] for a in report["annotators"]] == [0, 1, 2, 3]
    for annotator in report["annotators"]:
        assert [(o["sequence"], o["object_id"]) for o in annotator["objects"]] == [("one", 1), ("two", 1), ("two", 2)]
        summary = annotator["overall"]
        assert 0.0 <= summary["J&F-Mean"] <= 1.0
        assert summary["J&F-Mean"] == pytest.approx((summary["J-Mean"] + summary["F-Mean"]) / 2)
    means = [a["overall"]["J&F-Mean"] for a in report["annotators"]]
    assert report["overall"]["J&F-Mean"] == pytest.approx(np.mean(means))
    predicted = sorted(p.name for p in (output / "anno_0" / "two").glob("*.png"))
    assert predicted == [f"{i:05d}.png" for i in range(FRAMES)]
    with Image.open(output / "anno_0" / "two" / "00000.png") as image:
        assert image.mode == "P" and image.size == (WIDTH, HEIGHT)  # indexed, with the annotations' palette


def test_scoring_the_written_masks_gives_the_same_numbers(ref_davis, davis_run, tmp_path):
    output, report = davis_run
    gt = ref_davis / "DAVIS" / "Annotations_unsupervised" / "480p"
    assert eval_tool.main(["masks", str(output / "anno_2"), str(gt), "--json", str(tmp_path / "s.json")]) == 0
    rescored = json.loads((tmp_path / "s.json").read_text())
    assert rescored["layout"] == "davis"
    assert rescored["overall"] == pytest.approx(report["annotators"][2]["overall"])


def test_two_workers_give_the_same_scores(ref_davis, model_dir, tmp_path):
    """Each of 2 workers on 2 cores runs torch with 1 thread; the serial run gets 1 thread too, since
    the thread count changes float summation order (and so masks near the threshold)."""
    common = ["video", str(ref_davis), "--dataset", "ref-davis17", "--checkpoint", str(model_dir), "--device", "cpu"]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert eval_tool.main([*common, "--output", str(tmp_path / "serial")]) == 0
    finally:
        torch.set_num_threads(threads)
    assert eval_tool.main([*common, "--output", str(tmp_path / "parallel"), "--workers", "2"]) == 0
    serial, parallel = (json.loads((tmp_path / run / "results.json").read_text()) for run in ("serial", "parallel"))
    assert parallel == serial


def test_davis_objects_are_matched_whatever_their_ids(ref_davis, tmp_path):
    """Predictions = the ground truth with ids 1 and 2 swapped in 'two': the Hungarian matching pairs
    them back, J = F = 1. In 'one' the prediction is empty: J = F = 0 on the frames with the object."""
    gt = ref_davis / "DAVIS" / "Annotations_unsupervised" / "480p"
    for index in range(FRAMES):
        swapped = label_map(index)
        swapped[swapped == 255] = 0
        swapped = np.choose(swapped, [0, 2, 1]).astype(np.uint8)
        save_labels(tmp_path / "pred" / "two" / f"{index:05d}.png", swapped)
        save_labels(tmp_path / "pred" / "one" / f"{index:05d}.png", np.zeros((HEIGHT, WIDTH)))
    assert eval_tool.main(["masks", str(tmp_path / "pred"), str(gt), "--json", str(tmp_path / "s.json")]) == 0
    objects = {(o["sequence"], o["object_id"]): o for o in json.loads((tmp_path / "s.json").read_text())["objects"]}
    assert objects[("two", 1)]["j"][0] == 1.0 and objects[("two", 2)]["f"][0] == 1.0
    assert objects[("one", 1)]["j"][0] == 0.0 and objects[("one", 1)]["f"][0] == 0.0


def test_davis_merge_follows_the_release(monkeypatch):
    """Probabilities under 0.5 are dropped, the highest wins, 0.5 itself counts, ties go to the first
    object, and pixels nobody claims are background."""
    p1 = np.array([[0.6, 0.49, 0.7, 0.5, 0.1]], np.float32)
    p2 = np.array([[0.7, 0.3, 0.7, 0.2, 0.0]], np.float32)
    results = {"first": p1, "second": p2}

    class Result:
        def __init__(self, probability):
            self.probability = probability

    monkeypatch.setattr(inference, "segment", lambda tracker, paths, text: iter([Result(results[text])]))
    monkeypatch.setattr(inference, "frame_size", lambda path: (1, 5))
    video = Video("v", ["00000"], ["00000.jpg"])
    (labels,) = davis_labels(None, video, [type("E", (), {"text": t})() for t in ("first", "second")])
    assert labels.tolist() == [[2, 0, 1, 1, 0]]


@pytest.fixture(scope="module")
def mevis(tmp_path_factory):
    """MeViS valid_u: one video, expressions on object 1, on objects 1 and 2, and on an absent object."""
    root = tmp_path_factory.mktemp("mevis")
    split = root / "valid_u"
    names = [f"{i:05d}" for i in range(FRAMES)]
    write_frames(split / "JPEGImages" / "clip", names)
    masks = {"0": [], "1": [], "2": [None] * FRAMES}
    for index in range(FRAMES):
        for anno_id, mask in zip(("0", "1"), object_masks(index)):
            rle = coco_mask.encode(np.asfortranarray(mask.astype(np.uint8)))
            masks[anno_id].append({"size": rle["size"], "counts": rle["counts"].decode("ascii")})
    (split / "mask_dict.json").write_text(json.dumps(masks))
    expressions = {"0": {"exp": "the red square", "anno_id": [0], "obj_id": [0]},
                   "1": {"exp": "both squares", "anno_id": [0, 1], "obj_id": [0, 1]},
                   "2": {"exp": "the blue circle", "anno_id": [2], "obj_id": [2]}}
    (split / "meta_expressions.json").write_text(json.dumps({"videos": {"clip": {"expressions": expressions,
                                                                                 "frames": names}}}))
    return root


def test_mevis_valid_u_end_to_end(mevis, model_dir, tmp_path):
    assert eval_tool.main(["video", str(mevis), "--dataset", "mevis", "--checkpoint", str(model_dir),
                           "--device", "cpu", "--output", str(tmp_path / "out")]) == 0
    report = json.loads((tmp_path / "out" / "results.json").read_text())
    assert [e["exp_id"] for e in report["expressions"]] == ["0", "1", "2"]
    assert report["overall"]["J&F"] == pytest.approx((report["overall"]["J"] + report["overall"]["F"]) / 2)
    written = tmp_path / "out" / "Annotations" / "clip"
    assert sorted(p.name for p in (written / "1").glob("*.png")) == [f"{i:05d}.png" for i in range(FRAMES)]

    assert eval_tool.main(["masks", str(tmp_path / "out" / "Annotations"), str(mevis / "valid_u"),
                           "--json", str(tmp_path / "s.json")]) == 0
    rescored = json.loads((tmp_path / "s.json").read_text())
    assert rescored["layout"] == "mevis" and rescored["overall"] == pytest.approx(report["overall"])


def test_mevis_ground_truth_is_the_union_of_the_referred_objects(mevis, tmp_path):
    """Predictions equal to the decoded ground truth score 1; for 'the blue circle' (no object in any
    frame) an empty prediction is right (J = F = 1 on empty vs empty)."""
    for index in range(FRAMES):
        first, second = object_masks(index)
        for exp_id, mask in (("0", first), ("1", first | second), ("2", np.zeros_like(first))):
            path = tmp_path / "pred" / "clip" / exp_id / f"{index:05d}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(mask.astype(np.uint8) * 255).save(path)
    assert eval_tool.main(["masks", str(tmp_path / "pred"), str(mevis / "valid_u"),
                           "--json", str(tmp_path / "s.json")]) == 0
    assert json.loads((tmp_path / "s.json").read_text())["overall"]["J&F"] == 1.0


def test_expression_folders(tmp_path):
    """GT/<video>/<exp>/<frame>.png against PRED. Expression a is exact: 1, 1. In b the 16x16 square
    (rows 8-23, cols 4-19) is shifted 4 px right: J = 16*12 / (16*20) = 0.6. Tolerance on 48x64:
    ceil(0.008 * 80) = 1 px. Each boundary is a 17x17 box outline (64 px): for the prediction's,
    top and bottom rows match for x = 7..20 (14 + 14: exact up to 19, 1 px from gt's corner at 20),
    its left column for y = 8 and 22 (1 px from gt's top and bottom rows), its right column nowhere:
    P = 30/64; by symmetry R = 30/64, so F = 30/64 = 15/32."""
    first, _ = object_masks(0)
    shifted = np.roll(first, 4, axis=1)
    for root, masks in (("gt", (first, first)), ("pred", (first, shifted))):
        for exp_id, mask in zip(("a", "b"), masks):
            path = tmp_path / root / "video" / exp_id / "00000.png"
            path.parent.mkdir(parents=True)
            Image.fromarray(mask.astype(np.uint8) * 255).save(path)
    assert eval_tool.main(["masks", str(tmp_path / "pred"), str(tmp_path / "gt"), "--json", str(tmp_path / "s.json")]) == 0
    scores = {e["exp_id"]: e for e in json.loads((tmp_path / "s.json").read_text())["expressions"]}
    assert scores["a"]["j"] == 1.0 and scores["a"]["f"] == 1.0
    assert scores["b"]["j"] == pytest.approx(0.6) and scores["b"]["f"] == pytest.approx(15 / 32)


def test_refcoco_image_level(model_dir, tmp_path):
    """Two sentences on one image; polygons rasterised by pycocotools; IoU summaries in [0, 1]."""
    Image.fromarray(frame_image(0)).save(tmp_path / "COCO_1.jpg")
    square = [[4.0, 8.0, 20.0, 8.0, 20.0, 24.0, 4.0, 24.0]]
    annotations = {
        "images": [{"id": 1, "file_name": "COCO_1.jpg", "height": HEIGHT, "width": WIDTH, "caption": "the red square"},
                   {"id": 2, "file_name": "COCO_1.jpg", "height": HEIGHT, "width": WIDTH, "caption": "the red one"}],
        "annotations": [{"id": 1, "image_id": 1, "segmentation": square, "category_id": 1},
                        {"id": 2, "image_id": 2, "segmentation": square, "category_id": 1}],
    }
    (tmp_path / "refcoco.json").write_text(json.dumps(annotations))
    assert eval_tool.main(["image", str(tmp_path / "refcoco.json"), "--images", str(tmp_path),
                           "--checkpoint", str(model_dir), "--device", "cpu", "--json", str(tmp_path / "s.json")]) == 0
    summary = json.loads((tmp_path / "s.json").read_text())["overall"]
    assert summary["samples"] == 2
    assert 0.0 <= summary["overall_iou"] <= 1.0 and 0.0 <= summary["mean_iou"] <= 1.0
    assert set(summary) >= {"precision@0.5", "precision@0.9"}


def test_synthetic_clips_exported_as_mevis_evaluate_with_and_without_the_cme(switching_model_dir, tmp_path):
    """samwise-synthetic writes held-out scenes in the MeViS layout: the masks read back exactly, the
    frames within JPEG error; samwise-eval scores them, and --no-cme changes what a switching CME does."""
    from samwise_ros.data.synthetic import SyntheticReferringVideos
    from samwise_ros.eval.datasets import Mevis
    from samwise_ros.tools import synthetic

    assert synthetic.main([str(tmp_path / "data"), "--kinds", "time", "--count", "2", "--size", "60", "80",
                           "--seed", "5"]) == 0
    clips = SyntheticReferringVideos(length=2, frames=8, size=(60, 80), kinds=("time",), seed=5)
    dataset = Mevis(tmp_path / "data", "valid_u")
    assert [v.expressions[0].text for v in dataset.videos] == [clips[i].expression for i in range(2)]
    for index, video in enumerate(dataset.videos):
        clip = clips[index]
        assert np.array_equal(dataset.ground_truth(video, video.expressions[0], (60, 80)), clip.masks)
        frames = np.stack([np.array(Image.open(path)) for path in video.frame_paths]).astype(int)
        assert np.abs(frames - clip.frames).mean() < 2.0

    switching = switching_model_dir
    reports = {}
    for name, flags in (("cme", []), ("no_cme", ["--no-cme"])):
        assert eval_tool.main(["video", str(tmp_path / "data"), "--dataset", "mevis", "--checkpoint", str(switching),
                               "--device", "cpu", "--output", str(tmp_path / name), *flags]) == 0
        reports[name] = json.loads((tmp_path / name / "results.json").read_text())
    assert len(reports["cme"]["expressions"]) == len(reports["no_cme"]["expressions"]) == 2
    # 8 frames in one clip: the CME decides on frames 5-7 (then waits out its window after a switch)
    assert reports["cme"]["cme"]["decided"] >= 2 and reports["cme"]["cme"]["switched"] >= 1
    assert reports["no_cme"]["cme"] == {"decided": 0, "switched": 0}
    masks = {name: [np.array(Image.open(p)) for p in sorted((tmp_path / name / "Annotations").rglob("*.png"))]
             for name in reports}
    assert any(not np.array_equal(a, b) for a, b in zip(masks["cme"], masks["no_cme"]))
