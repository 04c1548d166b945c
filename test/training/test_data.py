"""Data side of training: the synthetic referring videos and the Ref-YouTube-VOS, MeViS and RefCOCO
loaders, each on a tiny fixture folder written here."""

import json
from dataclasses import replace

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as coco_mask
from torch.utils.data import DataLoader

from samwise_ros.data.clips import ReferringClip, collate_clips
from samwise_ros.data.refcoco import RefCOCO, decode_rle, polygons_mask
from samwise_ros.data.refvos import MeViS, RefYouTubeVOS, consecutive_frames, global_frames, local_frames
from samwise_ros.data.synthetic import (DEFAULT_KINDS, KINDS, Description, SyntheticReferringVideos, demo_scene,
                                        scene_corpus)

H, W = 32, 40

# pycocotools 2.0.11 under numpy 2 warns about its own __array__ on every decode
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


# --- synthetic -------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def scenes():
    dataset = SyntheticReferringVideos(length=36, frames=8, size=(64, 80), kinds=KINDS, seed=3)
    return dataset, [dataset.scene(index) for index in range(len(dataset))]


def visible(scene, index, frame):
    return replace(scene, target=index).render(frame)[1]


def test_synthetic_clips_are_deterministic_and_seeded():
    first, again = SyntheticReferringVideos(6, 4, (48, 64), seed=1), SyntheticReferringVideos(6, 4, (48, 64), seed=1)
    held_out = SyntheticReferringVideos(6, 4, (48, 64), seed=2)
    for index in range(6):
        clip = first[index]
        assert clip.frames.shape == (4, 48, 64, 3) and clip.frames.dtype == np.uint8
        assert clip.masks.shape == (4, 48, 64) and clip.masks.dtype == bool
        assert clip.source == f"synthetic/{DEFAULT_KINDS[index % len(DEFAULT_KINDS)]}/{index:05d}"
        same = again[index]
        assert np.array_equal(clip.frames, same.frames) and np.array_equal(clip.masks, same.masks)
        assert clip.expression == same.expression
        assert not np.array_equal(clip.frames, held_out[index].frames)


def test_synthetic_masks_are_the_targets_visible_pixels(scenes):
    _, all_scenes = scenes
    occluded = 0
    for scene in all_scenes:
        for frame in range(8):
            mask = scene.render(frame)[1]
            drawn_over = [scene.footprint(j, frame) for j in range(scene.target + 1, len(scene.shapes))]
            expected = scene.footprint(scene.target, frame) & ~np.any(drawn_over, axis=0)
            assert np.array_equal(mask, expected)
            occluded += mask.sum() < scene.footprint(scene.target, frame).sum()
    assert occluded >= len(all_scenes)  # every scene has a shape passing over its target


def test_synthetic_expressions_fit_the_target_and_no_other_shape(scenes):
    _, all_scenes = scenes
    corpus = set(scene_corpus())
    for scene in all_scenes:
        matches = [i for i in range(len(scene.shapes)) if scene.description.covers(scene.describe(i))]
        assert matches == [scene.target], scene.expression
        assert scene.expression in scene.description.phrasings()
        assert scene.expression in corpus
    assert demo_scene().expression in corpus


def test_synthetic_motion_and_time_expressions_need_motion_and_time(scenes):
    dataset, all_scenes = scenes
    for index, scene in enumerate(all_scenes):
        kind = dataset.kind(index)
        needed = {"appearance": None, "motion": "direction", "time": "appears_later", "switch": "appears_later"}[kind]
        if needed:  # without it, the description also fits a look-alike
            vaguer = replace(scene.description, **{needed: None})
            assert sum(vaguer.covers(scene.describe(i)) for i in range(len(scene.shapes))) > 1, scene.expression


def scenes_of(kind, scenes):
    dataset, all_scenes = scenes
    of_kind = [scene for index, scene in enumerate(all_scenes) if dataset.kind(index) == kind]
    assert of_kind
    return of_kind


def look_alikes(scene):
    """The other shapes that look like the target (shape, colour and size)."""
    look = scene.describe(scene.target)
    return [i for i in range(len(scene.shapes)) if i != scene.target and
            Description(look.shape, look.colour, look.size).covers(scene.describe(i))]


def test_synthetic_time_target_appears_later_while_a_look_alike_is_there_throughout(scenes):
    for scene in scenes_of("time", scenes):
        appears = scene.shapes[scene.target].first_frame
        assert 0 < appears < 8
        masks = np.stack([scene.render(frame)[1] for frame in range(8)])
        assert not masks[:appears].any() and masks[appears:].any()
        assert any(all(visible(scene, twin, frame).any() for frame in range(8)) for twin in look_alikes(scene))


def test_synthetic_switch_look_alike_pops_in_first_and_the_target_in_the_second_half(scenes):
    """The memory's first match of "appears later" is the look-alike; the expression fits the target only."""
    for scene in scenes_of("switch", scenes):
        appears = scene.shapes[scene.target].first_frame
        assert 4 <= appears <= 6  # the second half, shown twice at least
        twins = look_alikes(scene)
        entries = [scene.shapes[twin].first_frame for twin in twins]
        assert entries and all(0 < entry <= appears // 2 for entry in entries)
        alone = [visible(scene, twin, frame).any() for twin in twins for frame in range(min(entries), appears)]
        assert all(alone) and not any(scene.render(frame)[1].any() for frame in range(appears))
        assert scene.appears_later(scene.target) and not any(scene.appears_later(twin) for twin in twins)


def test_synthetic_scenes_shared_by_several_expressions_refer_to_different_shapes():
    shared = SyntheticReferringVideos(length=36, frames=8, size=(64, 80), seed=3, expressions_per_scene=3)
    groups = [[shared.scene(index) for index in range(start, start + 3)] for start in range(0, 36, 3)]
    different = 0
    for start, group in zip(range(0, 36, 3), groups):
        assert len({shared.kind(index) for index in range(start, start + 3)}) == 1
        assert all(scene.shapes == group[0].shapes for scene in group)  # the same pixels
        for scene in group:
            matches = [i for i in range(len(scene.shapes)) if scene.description.covers(scene.describe(i))]
            assert matches == [scene.target] and scene.expression in scene.description.phrasings()
            clip_mask = scene.render(3)[1]
            assert np.array_equal(clip_mask, visible(scene, scene.target, 3))
        different += len({scene.target for scene in group}) == 3
    assert different >= len(groups) // 2  # most scenes have two other describable shapes


def test_synthetic_options():
    only_time = SyntheticReferringVideos(length=3, frames=4, size=(48, 64), kinds=("time",))
    assert all(only_time[i].source.startswith("synthetic/time/") for i in range(3))
    with pytest.raises(IndexError):
        only_time[3]
    with pytest.raises(ValueError):
        SyntheticReferringVideos(frames=2)
    with pytest.raises(ValueError, match="at least 4 frames"):  # the look-alike alone, then the target twice
        SyntheticReferringVideos(frames=3, kinds=("time", "switch"))
    assert SyntheticReferringVideos(frames=3, kinds=("time",)).frames == 3
    with pytest.raises(ValueError):
        SyntheticReferringVideos(kinds=("colour",))
    with pytest.raises(ValueError):
        SyntheticReferringVideos(expressions_per_scene=0)


def test_demo_scene_still_renders():
    image, mask = demo_scene().render(0)
    assert image.shape == (240, 320, 3) and mask.any()


def test_clips_are_checked_and_collated_as_lists():
    with pytest.raises(ValueError):
        ReferringClip(np.zeros((2, 4, 4, 3), np.uint8), np.zeros((2, 4, 4), np.uint8), "x")
    batch = next(iter(DataLoader(SyntheticReferringVideos(4, 3, (32, 32)), batch_size=2, collate_fn=collate_clips)))
    assert [type(clip) for clip in batch] == [ReferringClip, ReferringClip]


# --- COCO masks --------------------------------------------------------------------------------------

def encode(mask: np.ndarray) -> dict:
    rle = coco_mask.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": rle["size"], "counts": rle["counts"].decode()}  # as stored in json


def test_rle_and_polygons_decode():
    # uncompressed RLE counts run down the columns, starting with background
    assert np.array_equal(np.argwhere(decode_rle({"size": [3, 4], "counts": [1, 2, 9]})), [[1, 0], [2, 0]])
    mask = np.random.default_rng(0).random((H, W)) > 0.6
    assert np.array_equal(decode_rle(encode(mask)), mask)
    square = polygons_mask([[2, 2, 10, 2, 10, 8, 2, 8]], 12, 14)
    assert square.sum() == 48 and square[2:8, 2:10].all()


# --- fixture folders ---------------------------------------------------------------------------------

def object_box(obj: int, frame: int) -> tuple[slice, slice]:
    """Where object `obj` is in frame `frame` of a fixture video: it moves right a pixel a frame."""
    top = 4 + 12 * (obj - 1)
    return slice(top, top + 8), slice(2 + frame, 12 + frame)


def frame_image(frame: int) -> Image.Image:
    """A flat grey whose level says which frame this is (JPEG keeps a flat level to within a few)."""
    return Image.fromarray(np.full((H, W, 3), 20 * frame + 10, np.uint8))


def frame_of(image: np.ndarray) -> int:
    return round((float(image.mean()) - 10) / 20)


def object_mask(obj: int, frame: int) -> np.ndarray:
    mask = np.zeros((H, W), bool)
    mask[object_box(obj, frame)] = True
    return mask


def write_video(folder, video: str, count: int) -> list[str]:
    names = [f"{5 * i:05d}" for i in range(count)]  # Ref-YouTube-VOS keeps every 5th frame
    (folder / "JPEGImages" / video).mkdir(parents=True)
    for i, name in enumerate(names):
        frame_image(i).save(folder / "JPEGImages" / video / f"{name}.jpg", quality=95)
    return names


@pytest.fixture(scope="module")
def ytvos_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("ref-youtube-vos")
    videos = {}
    for video, count in (("video_a", 6), ("video_b", 3)):
        names = write_video(root / "train", video, count)
        (root / "train" / "Annotations" / video).mkdir(parents=True)
        for i, name in enumerate(names):
            labels = np.zeros((H, W), np.uint8)
            for obj in (1, 2):
                labels[object_box(obj, i)] = obj
            png = Image.fromarray(labels, mode="P")
            png.putpalette([0, 0, 0, 236, 95, 103, 249, 145, 87] + [0] * (256 - 3) * 3)
            png.save(root / "train" / "Annotations" / video / f"{name}.png")
        videos[video] = {"frames": names[::-1],  # listed in any order: the loader sorts
                         "expressions": {"0": {"exp": "A  Red Box", "obj_id": "1"}, "1": {"exp": "the other", "obj_id": "2"}}}
    (root / "meta_expressions" / "train").mkdir(parents=True)
    (root / "meta_expressions" / "train" / "meta_expressions.json").write_text(json.dumps({"videos": videos}))
    return root


@pytest.fixture(scope="module")
def mevis_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("MeViS_release")
    names = write_video(root / "train", "video_m", 5)
    # object 1 everywhere; object 2 absent (null) in the first two frames
    mask_dict = {"10": [encode(object_mask(1, i)) for i in range(5)],
                 "11": [None, None] + [encode(object_mask(2, i)) for i in range(2, 5)]}
    meta = {"videos": {"video_m": {"frames": names, "expressions": {
        "0": {"exp": "both boxes", "obj_id": [0, 1], "anno_id": [10, 11]},
        "1": {"exp": "the lower box", "obj_id": [1], "anno_id": [11]}}}}}
    (root / "train" / "mask_dict.json").write_text(json.dumps(mask_dict))
    (root / "train" / "meta_expressions.json").write_text(json.dumps(meta))
    return root


# --- Ref-YouTube-VOS and MeViS ---------------------------------------------------------------------------

def check_clip_alignment(clip: ReferringClip, objects_in_frame) -> list[int]:
    """The frames each mask belongs to, after checking the mask is the objects' pixels in that frame."""
    frames = [frame_of(image) for image in clip.frames]
    for frame, mask in zip(frames, clip.masks):
        expected = np.zeros((H, W), bool)
        for obj in objects_in_frame(frame):
            expected |= object_mask(obj, frame)
        assert np.array_equal(mask, expected), (clip.source, frame)
    return frames


def test_ref_youtube_vos_clips(ytvos_root):
    dataset = RefYouTubeVOS(ytvos_root, frames=4)
    # windows of 4 frames: video_a (6 frames) has 2 per expression, video_b (3 frames) 1
    assert len(dataset) == 2 * 2 + 2 * 1
    for index in range(len(dataset)):
        clip = dataset[index]
        assert clip.frames.shape == (4, H, W, 3) and clip.frames.dtype == np.uint8
        assert clip.masks.shape == (4, H, W) and clip.masks.dtype == bool
        obj = 1 if clip.source.endswith("/0") else 2
        frames = check_clip_alignment(clip, lambda frame: [obj])
        assert frames == sorted(frames)
    assert dataset[0].expression == "a red box" and dataset[0].source == "ytvos/video_a/0"


def test_mevis_clips_union_objects_and_keep_absent_frames_empty(mevis_root):
    dataset = MeViS(mevis_root, frames=4)
    assert len(dataset) == 2 * 2
    for index in range(len(dataset)):
        clip = dataset[index]
        assert clip.masks.shape == (4, H, W) and clip.masks.dtype == bool
        both = clip.expression == "both boxes"
        check_clip_alignment(clip, lambda frame: ([1] if both else []) + ([2] if frame >= 2 else []))


def test_video_clips_are_deterministic_per_seed_and_epoch(ytvos_root, mevis_root):
    for make in (lambda seed: RefYouTubeVOS(ytvos_root, frames=4, seed=seed),
                 lambda seed: MeViS(mevis_root, frames=4, seed=seed)):
        first, again = make(0), make(0)
        frames = [[frame_of(image) for image in first[i].frames] for i in range(len(first))]
        assert frames == [[frame_of(image) for image in again[i].frames] for i in range(len(again))]
        again.set_epoch(1)
        later = [[frame_of(image) for image in again[i].frames] for i in range(len(again))]
        assert later != frames  # another epoch samples other frames


@pytest.mark.parametrize("sample", [consecutive_frames, local_frames, global_frames])
def test_frame_samplers_give_sorted_in_range_indices(sample):
    rng = np.random.default_rng(0)
    for count, anchor in ((30, 0), (30, 24), (30, 12), (3, 0), (1, 0)):
        picks = sample(rng, anchor, count, 8)
        assert len(picks) == 8 and picks == sorted(picks) and all(0 <= i < count for i in picks)
        if count >= 16:
            assert len(set(picks)) == 8  # no repeats unless the video is too short
    assert consecutive_frames(rng, 24, 30, 8) == list(range(22, 30))


# --- RefCOCO -------------------------------------------------------------------------------------------

def test_refcoco_clips_from_polygons_and_rle(tmp_path):
    (tmp_path / "train2014").mkdir()
    for name, level in (("a.jpg", 60), ("b.jpg", 180)):
        Image.fromarray(np.full((H, W, 3), level, np.uint8)).save(tmp_path / "train2014" / name)
    lower = object_mask(2, 0)
    images = [
        {"id": 1, "file_name": "a.jpg", "height": H, "width": W, "caption": "The Square", "dataset_name": "refcoco"},
        {"id": 2, "file_name": "a.jpg", "height": H, "width": W, "caption": "lower box", "dataset_name": "refcoco"},
        {"id": 3, "file_name": "b.jpg", "height": H, "width": W, "caption": "nothing", "dataset_name": "refcoco"},
    ]
    annotations = [
        {"id": 1, "image_id": 1, "iscrowd": 0, "segmentation": [[2, 2, 10, 2, 10, 8, 2, 8]]},
        {"id": 2, "image_id": 2, "iscrowd": 0, "segmentation": encode(lower)},
        {"id": 3, "image_id": 3, "iscrowd": 1, "segmentation": {"size": [H, W], "counts": [0, H * W]}},
    ]
    (tmp_path / "refcoco").mkdir()
    (tmp_path / "refcoco" / "instances_refcoco_train.json").write_text(
        json.dumps({"images": images, "annotations": annotations, "categories": []}))

    dataset = RefCOCO.from_root(tmp_path)
    assert len(dataset) == 3
    square, box, crowd = dataset[0], dataset[1], dataset[2]
    assert square.frames.shape == (1, H, W, 3) and square.masks.shape == (1, H, W)
    assert square.expression == "the square" and square.source == "refcoco/1"
    assert square.masks.sum() == 48 and square.masks[0, 2:8, 2:10].all()
    assert np.array_equal(box.masks[0], lower)
    assert not crowd.masks.any()  # crowd regions are not referred objects


def test_synthetic_clips_carry_each_pixels_colour_shape_and_size():
    from samwise_ros.data.synthetic import ATTRIBUTE_CLASSES

    clips = SyntheticReferringVideos(length=3, frames=4, kinds=("appearance",), seed=5)
    for index in range(len(clips)):
        clip, scene = clips[index], clips.scene(index)
        assert clip.attributes.shape == (4, 3, *clip.frames.shape[1:3]) and clip.attributes.dtype == np.int8
        described = scene.describe(scene.target)
        expected = [values.index(getattr(described, name)) for name, values in ATTRIBUTE_CLASSES.items()]
        target_pixels = clip.attributes.transpose(0, 2, 3, 1)[clip.masks]  # [N, 3]
        assert len(target_pixels) and (target_pixels == expected).all()
        background = np.ones(clip.masks.shape, dtype=bool)
        for shape in range(len(scene.shapes)):
            for frame in range(4):
                background[frame] &= ~scene.footprint(shape, frame)
        assert (clip.attributes.transpose(0, 2, 3, 1)[background] == -1).all()
        assert (clip.attributes.transpose(0, 2, 3, 1)[~background] >= 0).all()
