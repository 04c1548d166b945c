"""The one interface between datasets and the trainer: every dataset returns `ReferringClip`s."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image


@dataclass
class ReferringClip:
    frames: np.ndarray  # [T, H, W, 3] uint8 RGB
    masks: np.ndarray  # [T, H, W] bool, the referred object's visible pixels (may be empty in some frames)
    expression: str
    source: str = ""  # where it came from, for logs: "synthetic/appearance/00012", "ytvos/<video>/<exp_id>"
    # [T, 3, H, W] int8, synthetic data only: each pixel's visible shape's colour, shape and size class
    # (synthetic.ATTRIBUTE_CLASSES), -1 on background
    attributes: np.ndarray | None = None

    def __post_init__(self):
        # A loader bug (a frame of another size, a label map instead of a mask) fails here, not in the loss.
        if self.frames.ndim != 4 or self.frames.shape[-1] != 3 or self.frames.dtype != np.uint8:
            raise ValueError(f"{self.source}: frames must be [T, H, W, 3] uint8, got {self.frames.shape} {self.frames.dtype}")
        if self.masks.shape != self.frames.shape[:3] or self.masks.dtype != np.bool_:
            raise ValueError(f"{self.source}: masks must be [T, H, W] bool matching the frames, "
                             f"got {self.masks.shape} {self.masks.dtype}")
        if self.attributes is not None and self.attributes.shape != (len(self.frames), 3, *self.frames.shape[1:3]):
            raise ValueError(f"{self.source}: attributes must be [T, 3, H, W] matching the frames, "
                             f"got {self.attributes.shape}")


def collate_clips(batch: list[ReferringClip]) -> list[ReferringClip]:
    """DataLoader collate: clips differ in size, so a batch stays a list (the trainer resizes)."""
    return list(batch)


def clean_expression(text: str) -> str:
    """Lower case, single spaces: what the release feeds its text encoder."""
    return " ".join(text.lower().split())


def read_rgb(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))
