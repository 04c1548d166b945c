"""Image-level referring data (RefCOCO, RefCOCO+, RefCOCOg) as one-frame clips, and COCO mask decoding.

The layout is the release's (its tools/data/convert_refexp_to_coco.py writes it):
  <coco>/train2014/<file_name>                          the COCO 2014 train images (every split uses them)
  <coco>/<dataset>/instances_<dataset>_<split>.json     COCO-style json with one `images` entry per
      *expression*: {id, file_name, height, width, caption, original_id, dataset_name}, and
      `annotations` whose image_id is that entry's id: {segmentation, iscrowd, bbox, ...}, where a
      segmentation is polygons [[x1, y1, x2, y2, ...], ...] or RLE {"size": [h, w], "counts": ...}.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import numpy as np
from pycocotools import mask as coco_mask
from torch.utils.data import Dataset

from .clips import ReferringClip, clean_expression, read_rgb


class RefCOCO(Dataset):
    """One item per expression: a [1, H, W, 3] clip with the union of its annotations' masks."""

    def __init__(self, images: Path, annotations: Path):
        data = json.loads(Path(annotations).read_text())
        self.images = Path(images)
        self.entries = data["images"]
        self.segmentations = defaultdict(list)
        for annotation in data["annotations"]:
            if not annotation.get("iscrowd", 0):  # the release drops crowd regions too
                self.segmentations[annotation["image_id"]].append(annotation["segmentation"])

    @classmethod
    def from_root(cls, coco_root: Path, dataset: str = "refcoco", split: str = "train") -> RefCOCO:
        """`dataset` is refcoco, refcoco+ or refcocog; `split` train, val, testA, ... as converted."""
        root = Path(coco_root)
        return cls(root / "train2014", root / dataset / f"instances_{dataset}_{split}.json")

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, index: int) -> ReferringClip:
        entry = self.entries[index]
        image = read_rgb(self.images / entry["file_name"])
        mask = segmentation_mask(self.segmentations[entry["id"]], *image.shape[:2])
        return ReferringClip(image[None], mask[None], clean_expression(entry["caption"]),
                             f"{entry.get('dataset_name', 'refcoco')}/{entry['id']}")


def segmentation_mask(segmentations: list, height: int, width: int) -> np.ndarray:
    """HxW bool: the union of COCO segmentations (each polygons or RLE)."""
    mask = np.zeros((height, width), dtype=bool)
    for segmentation in segmentations:
        if isinstance(segmentation, list):
            mask |= polygons_mask(segmentation, height, width)
        else:
            mask |= decode_rle(segmentation)
    return mask


def polygons_mask(polygons: list[list[float]], height: int, width: int) -> np.ndarray:
    """HxW bool inside any polygon, rasterised by pycocotools as in the release: cv2.fillPoly also
    fills the pixels the boundary touches, a ring that adds ~10% to a 30-pixel-wide object."""
    if not polygons:
        return np.zeros((height, width), dtype=bool)
    return coco_mask.decode(coco_mask.frPyObjects(polygons, height, width)).any(axis=2)


def decode_rle(rle: dict) -> np.ndarray:
    """HxW bool from COCO RLE: compressed (counts a string, as in MeViS's mask_dict.json) or not (a list)."""
    if isinstance(rle["counts"], list):
        rle = coco_mask.frPyObjects(rle, *rle["size"])
    return coco_mask.decode(rle).astype(bool)
