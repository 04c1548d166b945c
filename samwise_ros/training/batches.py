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


def clip_tensors(frames: np.ndarray, masks: np.ndarray, expression: str, image_size: int,
                 device: torch.device) -> ClipTensors:
    """Resize frames exactly as the tracker does, and the masks to the same size (nearest)."""
    pixels = [preprocess_frame(frame, image_size, device) for frame in frames]
    height, width = pixels[0][1]
    frame_tensor = torch.stack([p for p, _ in pixels])
    mask_tensor = torch.from_numpy(np.ascontiguousarray(masks)).to(device).float().unsqueeze(1)
    mask_tensor = F.interpolate(mask_tensor, size=(height, width), mode="nearest")[:, 0]
    return ClipTensors(frame_tensor, mask_tensor, expression)
