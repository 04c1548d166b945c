"""From a ReferringClip (uint8 frames, bool masks, text) to the tensors the training forward takes."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..preprocess import preprocess_frame


@dataclass
class ClipTensors:
    frames: Tensor  # [T, 3, h, w] normalised, resized as at inference
    masks: Tensor  # [T, h, w] float {0, 1} at the same size
    expression: str
    attributes: Tensor | None = None  # [T, 3, h, w] long: per-pixel attribute classes, -1 background

    def frames_from(self, start: int) -> "ClipTensors":
        """The clip from frame `start` on."""
        attributes = None if self.attributes is None else self.attributes[start:]
        return ClipTensors(self.frames[start:], self.masks[start:], self.expression, attributes)


def clip_tensors(frames: np.ndarray, masks: np.ndarray, expression: str, image_size: int,
                 device: torch.device, attributes: np.ndarray | None = None) -> ClipTensors:
    """Resize frames exactly as the tracker does, and the masks (and attribute maps) to the same size (nearest)."""
    pixels = [preprocess_frame(frame, image_size, device) for frame in frames]
    size = pixels[0][1]
    frame_tensor = torch.stack([p for p, _ in pixels])
    mask_tensor = resize_nearest(masks[:, None], size, device)[:, 0]
    attribute_tensor = None if attributes is None else resize_nearest(attributes, size, device).long()
    return ClipTensors(frame_tensor, mask_tensor, expression, attribute_tensor)


def resize_nearest(maps: np.ndarray, size: tuple[int, int], device: torch.device) -> Tensor:
    """[T, K, H, W] label maps -> [T, K, *size] float."""
    tensor = torch.from_numpy(np.ascontiguousarray(maps)).to(device).float()
    return F.interpolate(tensor, size=tuple(size), mode="nearest")
