"""Referring video datasets in their training layouts, as `ReferringClip`s of T frames.

Ref-YouTube-VOS (`root` = the ref-youtube-vos folder):
  train/JPEGImages/<video>/<frame>.jpg
  train/Annotations/<video>/<frame>.png           palette PNG: pixel value = object id, 0 = background
  meta_expressions/train/meta_expressions.json    {"videos": {video: {"frames": [frame, ...],
                                                   "expressions": {exp_id: {"exp": str, "obj_id": "1"}}}}}
MeViS (`root` = the MeViS_release folder; train and valid_u have masks):
  <split>/JPEGImages/<video>/<frame>.jpg
  <split>/meta_expressions.json    as above, but "obj_id" and "anno_id" are lists: an expression may
                                   refer to several objects, its mask is the union of theirs
  <split>/mask_dict.json           {anno_id: [COCO RLE, or null where the object is absent, for each
                                   frame of the video in sorted frame order]}

Like the release, one item per (expression, window of T frames): a video's sorted frames are cut into
windows of T, and an item samples T frames around its window's first frame, the anchor.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from torch.utils.data import Dataset

from .clips import ReferringClip, clean_expression, read_rgb
from .refcoco import decode_rle

TRIES = 3  # samplings of an item before giving up on finding its object in a sampled frame


def consecutive_frames(rng: np.random.Generator, anchor: int, count: int, frames: int) -> list[int]:
    """T consecutive frames from the anchor (moved back near the end; a short video repeats its last)."""
    start = min(anchor, max(0, count - frames))
    return [min(start + i, count - 1) for i in range(frames)]


def local_frames(rng: np.random.Generator, anchor: int, count: int, frames: int) -> list[int]:
    """T distinct frames drawn from the 2T around the anchor, sorted: the release's Ref-YouTube-VOS
    sampling (which draws T/2 of them before the anchor and T/2 after)."""
    low = min(max(0, anchor - frames), max(0, count - 2 * frames))
    pool = np.arange(low, min(count, low + 2 * frames))
    return sorted(int(i) for i in rng.choice(pool, frames, replace=len(pool) < frames))


def global_frames(rng: np.random.Generator, anchor: int, count: int, frames: int) -> list[int]:
    """The anchor, a frame 1-3 before and one 1-3 after it, the rest from the whole video, sorted: the
    release's MeViS sampling (its motion expressions need the long range)."""
    before, after = max(0, anchor - int(rng.integers(1, 4))), min(count - 1, anchor + int(rng.integers(1, 4)))
    near = list(dict.fromkeys((anchor, before, after)))[:frames]  # at the ends of the video they coincide
    needed = frames - len(near)
    others = np.setdiff1d(np.arange(count), near)
    if len(others) < needed:  # a short video: frames repeat
        others = np.arange(count)
    far = rng.choice(others, needed, replace=len(others) < needed)
    return sorted(int(i) for i in (*near, *far))


SAMPLERS = {"consecutive": consecutive_frames, "local": local_frames, "global": global_frames}


@dataclass(frozen=True)
class VideoExpression:
    video: str
    exp_id: str
    expression: str
    objects: tuple  # what the masks are looked up by: palette ids (Ref-YouTube-VOS), anno_ids (MeViS)
    frame_names: tuple[str, ...]  # sorted
    anchor: int  # index into frame_names


def windowed_expressions(meta: dict, frames: int, objects_of) -> list[VideoExpression]:
    """One item per expression and window of `frames` of every video in a meta_expressions.json."""
    items = []
    for video, entry in meta["videos"].items():
        names = tuple(sorted(entry["frames"]))
        for exp_id, expression in entry["expressions"].items():
            for anchor in range(0, len(names), frames):
                items.append(VideoExpression(video, exp_id, clean_expression(expression["exp"]),
                                             objects_of(expression), names, anchor))
    return items


class ReferringVideos(Dataset):
    """Shared sampling and reading; subclasses say where the items and masks come from.

    Item `index` is a function of (seed, epoch, index): deterministic, and `set_epoch` draws others."""

    source = ""  # prefix of ReferringClip.source

    def __init__(self, split_dir: Path, items: list[VideoExpression], frames: int, sampling: str, seed: int):
        if sampling not in SAMPLERS:
            raise ValueError(f"sampling must be one of {sorted(SAMPLERS)}, got {sampling!r}")
        self.split_dir, self.items, self.frames = split_dir, items, frames
        self.sample, self.seed, self.epoch = SAMPLERS[sampling], seed, 0

    def __len__(self) -> int:
        return len(self.items)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __getitem__(self, index: int) -> ReferringClip:
        item = self.items[index]
        rng = np.random.default_rng([self.seed, self.epoch, index])
        anchor = item.anchor
        for _ in range(TRIES):
            picks = self.sample(rng, anchor, len(item.frame_names), self.frames)
            images = np.stack([read_rgb(self.frame_path(item, i)) for i in picks])
            masks = np.stack([self.mask(item, i, images.shape[1:3]) for i in picks])
            if masks.any():
                break
            # the object is absent around this anchor: try elsewhere in the video (the release draws
            # another item instead, which would change the expression)
            anchor = int(rng.integers(len(item.frame_names)))
        return ReferringClip(images, masks, item.expression, f"{self.source}/{item.video}/{item.exp_id}")

    def frame_path(self, item: VideoExpression, frame_index: int) -> Path:
        return self.split_dir / "JPEGImages" / item.video / f"{item.frame_names[frame_index]}.jpg"

    def mask(self, item: VideoExpression, frame_index: int, shape: tuple[int, int]) -> np.ndarray:
        raise NotImplementedError


class RefYouTubeVOS(ReferringVideos):
    """Ref-YouTube-VOS train (the only split with masks); `sampling` defaults to the release's."""

    source = "ytvos"

    def __init__(self, root: Path, frames: int = 8, sampling: str = "local", seed: int = 0):
        root = Path(root)
        meta = json.loads((root / "meta_expressions" / "train" / "meta_expressions.json").read_text())
        items = windowed_expressions(meta, frames, lambda expression: (int(expression["obj_id"]),))
        super().__init__(root / "train", items, frames, sampling, seed)

    def mask(self, item: VideoExpression, frame_index: int, shape: tuple[int, int]) -> np.ndarray:
        path = self.split_dir / "Annotations" / item.video / f"{item.frame_names[frame_index]}.png"
        with Image.open(path) as labels:  # palette indices are the object ids
            return np.isin(np.asarray(labels), item.objects)


class MeViS(ReferringVideos):
    """MeViS `split` (train or valid_u); `sampling` defaults to the release's."""

    source = "mevis"

    def __init__(self, root: Path, split: str = "train", frames: int = 8, sampling: str = "global", seed: int = 0):
        split_dir = Path(root) / split
        meta = json.loads((split_dir / "meta_expressions.json").read_text())
        items = windowed_expressions(meta, frames, lambda expression: tuple(str(a) for a in expression["anno_id"]))
        super().__init__(split_dir, items, frames, sampling, seed)
        # read whole, like the release (it is large for train: forked DataLoader workers share it)
        self.mask_dict = json.loads((split_dir / "mask_dict.json").read_text())

    def mask(self, item: VideoExpression, frame_index: int, shape: tuple[int, int]) -> np.ndarray:
        mask = np.zeros(shape, dtype=bool)
        for anno_id in item.objects:
            rle = self.mask_dict[anno_id][frame_index]
            if rle is not None:
                mask |= decode_rle(rle)
        return mask
