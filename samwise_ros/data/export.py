"""Referring clips written as a benchmark split in the MeViS layout, so that `samwise-eval video
--dataset mevis` scores a model on them exactly as on the real benchmark (JPEG frames, RLE masks)::

    ROOT/<split>/JPEGImages/<video>/<frame>.jpg
    ROOT/<split>/meta_expressions.json   {"videos": {video: {"frames": [...], "expressions": {"0": {"exp", "anno_id"}}}}}
    ROOT/<split>/mask_dict.json          {anno_id: [COCO RLE per frame]}
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable

import numpy as np
from PIL import Image
from pycocotools import mask as coco_mask

from .clips import ReferringClip

# The layout's frames are JPEG; near-lossless settings keep the synthetic sensor noise the model was
# trained on (quality 95 with 4:2:0 chroma changes pixels by 6 grey levels on average, this by about 1).
JPEG_OPTIONS = {"quality": 98, "subsampling": 0}


def write_mevis_split(clips: Iterable[ReferringClip], root: Path, split: str = "valid_u") -> Path:
    """One video per clip, named after its `source` ("/" -> "_"), with one expression; returns the split folder."""
    directory = Path(root) / split
    videos, masks = {}, {}
    for anno_id, clip in enumerate(clips):
        name = clip.source.replace("/", "_")
        frames = [f"{index:05d}" for index in range(len(clip.frames))]
        folder = directory / "JPEGImages" / name
        folder.mkdir(parents=True, exist_ok=True)
        for frame, rgb in zip(frames, clip.frames):
            Image.fromarray(rgb).save(folder / f"{frame}.jpg", **JPEG_OPTIONS)
        videos[name] = {"frames": frames, "expressions": {"0": {"exp": clip.expression, "anno_id": [str(anno_id)]}}}
        masks[str(anno_id)] = [encode_rle(mask) for mask in clip.masks]
    (directory / "meta_expressions.json").write_text(json.dumps({"videos": videos}), encoding="utf-8")
    (directory / "mask_dict.json").write_text(json.dumps(masks), encoding="utf-8")
    return directory


def encode_rle(mask: np.ndarray) -> dict:
    rle = coco_mask.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(n) for n in rle["size"]], "counts": rle["counts"].decode("ascii")}
