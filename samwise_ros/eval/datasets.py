"""Readers for the benchmark layouts SAMWISE is evaluated on (the layouts its data docs and inference
scripts use):

Ref-DAVIS17 (converted to the Ref-YouTube-VOS layout by SAMWISE's convert_davis_to_ytvos.py)::

    ROOT/valid/JPEGImages/<video>/<frame>.jpg
    ROOT/meta_expressions/valid/meta_expressions.json    {"videos": {v: {"expressions": {id: {"exp"}}, "frames"}}}
    ROOT/DAVIS/Annotations_unsupervised/480p/<video>/<frame>.png   (or ROOT/valid/Annotations/...)

  Each object has 4 expressions, one per annotator text (first-frame and full-video texts of two
  annotators), listed object by object: expression i belongs to object i // 4 + 1, annotator i % 4.

MeViS::

    ROOT/<split>/JPEGImages/<video>/<frame>.jpg
    ROOT/<split>/meta_expressions.json    expressions carry "anno_id": the annotated objects referred to
    ROOT/<split>/mask_dict.json           {anno_id: [COCO RLE or null per frame]}  (valid_u, train)

RefCOCO/+/g (SAMWISE's convert_refexp_to_coco.py: one COCO "image" per sentence, with its "caption"
and one annotation)::

    instances_refcoco_val.json + the COCO train2014 image folder
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image
from pycocotools import mask as coco_mask


def read_labels(path: Path) -> np.ndarray:
    """An indexed (palette) or grey PNG as its stored values: object ids, 0/255 masks, 255 for void."""
    with Image.open(path) as image:
        return np.array(image if image.mode in ("P", "L", "I", "I;16") else image.convert("L"))


def read_mask(path: Path) -> np.ndarray:
    """A binary mask PNG (any non-zero value is foreground)."""
    return read_labels(path) > 0


def read_frame(path: Path) -> np.ndarray:
    """HxWx3 uint8 RGB, decoded with PIL as the release's data loaders do."""
    with Image.open(path) as image:
        return np.array(image.convert("RGB"))


@dataclass(frozen=True)
class Expression:
    exp_id: str
    text: str
    anno_ids: tuple[str, ...] = ()  # MeViS: the annotated objects the expression refers to


@dataclass
class Video:
    name: str
    frame_names: list[str]
    frame_paths: list[Path]
    expressions: list[Expression] = field(default_factory=list)


def read_meta_expressions(meta_file: Path, images: Path) -> list[Video]:
    """Videos with their frames and expressions, in the file's order."""
    if not meta_file.is_file():
        raise FileNotFoundError(f"no expression file {meta_file}")
    with open(meta_file, encoding="utf-8") as stream:
        entries = json.load(stream)["videos"]
    videos = []
    for name, entry in entries.items():
        frames = list(entry["frames"])
        expressions = [Expression(str(exp_id), item["exp"], tuple(str(a) for a in item.get("anno_id", ())))
                       for exp_id, item in entry["expressions"].items()]
        videos.append(Video(name, frames, [images / name / f"{frame}.jpg" for frame in frames], expressions))
    return videos


class RefDavis17:
    ANNOTATORS = 4

    def __init__(self, root: Path, split: str = "valid"):
        self.root = Path(root)
        self.videos = read_meta_expressions(self.root / "meta_expressions" / split / "meta_expressions.json",
                                            self.root / split / "JPEGImages")
        candidates = [self.root / "DAVIS" / "Annotations_unsupervised" / "480p", self.root / split / "Annotations"]
        self.annotations = next((c for c in candidates if c.is_dir()), None)
        if self.annotations is None:
            raise FileNotFoundError(f"no ground truth in {' or '.join(map(str, candidates))}")

    def annotator_objects(self, video: Video) -> list[list[Expression]]:
        """For each annotator, its expression of object 1, 2, ... (the release's positional rule)."""
        return [video.expressions[annotator :: self.ANNOTATORS] for annotator in range(self.ANNOTATORS)]

    def ground_truth_dir(self, video: Video) -> Path:
        return self.annotations / video.name


class Mevis:
    def __init__(self, root: Path, split: str = "valid_u"):
        self.directory = Path(root) / split
        self.videos = read_meta_expressions(self.directory / "meta_expressions.json", self.directory / "JPEGImages")
        mask_file = self.directory / "mask_dict.json"
        self._masks = None
        if mask_file.is_file():  # the valid split has none: predictions only
            with open(mask_file, encoding="utf-8") as stream:
                self._masks = json.load(stream)

    @property
    def has_ground_truth(self) -> bool:
        return self._masks is not None

    def ground_truth(self, video: Video, expression: Expression, shape: tuple[int, int]) -> np.ndarray:
        """[T, H, W] bool: the union of the expression's annotated objects in each frame."""
        truth = np.zeros((len(video.frame_names), *shape), dtype=bool)
        for anno_id in expression.anno_ids:
            for index, rle in enumerate(self._masks[anno_id][: len(video.frame_names)]):
                if rle:
                    truth[index] |= decode_rle(rle).astype(bool)
        return truth


def decode_rle(rle: dict) -> np.ndarray:
    """A COCO RLE (compressed string or uncompressed list of counts) as an HxW uint8 mask."""
    if isinstance(rle["counts"], list):
        rle = coco_mask.frPyObjects(rle, *rle["size"])
    elif isinstance(rle["counts"], str):
        rle = {**rle, "counts": rle["counts"].encode("ascii")}
    return coco_mask.decode(rle)


@dataclass(frozen=True)
class ImageSample:
    image_id: int
    path: Path
    caption: str
    height: int
    width: int
    segmentation: object  # COCO polygons or RLE


class RefCoco:
    def __init__(self, annotations: Path, images: Path):
        with open(annotations, encoding="utf-8") as stream:
            data = json.load(stream)
        first_annotation = {}
        for annotation in data["annotations"]:  # one instance per sentence; the first if there are more
            first_annotation.setdefault(annotation["image_id"], annotation)
        self.samples = [
            ImageSample(entry["id"], Path(images) / entry["file_name"], entry["caption"], entry["height"],
                        entry["width"], first_annotation[entry["id"]]["segmentation"])
            for entry in data["images"] if entry["id"] in first_annotation
        ]

    @staticmethod
    def ground_truth(sample: ImageSample) -> np.ndarray:
        """HxW bool, rasterised by pycocotools as COCO's annToMask does."""
        segmentation = sample.segmentation
        if isinstance(segmentation, list):  # polygons
            segmentation = coco_mask.merge(coco_mask.frPyObjects(segmentation, sample.height, sample.width))
            return coco_mask.decode(segmentation).astype(bool)
        return decode_rle(segmentation).astype(bool)
