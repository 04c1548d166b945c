"""Dense attribute supervision, an auxiliary loss for models trained from scratch on synthetic data:
linear heads must read, at every pixel, the colour, shape and size of the shape there (or background)
from the image embedding the mask decoder attends to.

Why: the decoder picks the referred shape by matching its text prompt against that embedding, so the
embedding must tell the shapes apart by what expressions say. In the demo weights it did not: linear
probes on it (research/probe_image_features.py) read each stride-16 cell's colour (0.63 accuracy,
majority class 0.32) but not its shape (0.49, majority 0.52) or size (majority), so "the small green
square" could not be told from the green ball beside it. A pre-trained SAM2 brings such features; a
SAM2 trained from scratch on masks alone does not learn them. The heads are training-only and discarded.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from samwise_ros.data.synthetic import ATTRIBUTE_CLASSES
from samwise_ros.model import Samwise
from samwise_ros.training.batches import ClipTensors


class ShapeAttributeLoss(nn.Module):
    def __init__(self, model: Samwise):
        super().__init__()
        width = model.sam.hidden_dim
        # class 0 is the background
        self.heads = nn.ModuleList(nn.Conv2d(width, len(values) + 1, kernel_size=1)
                                   for values in ATTRIBUTE_CLASSES.values())

    def forward(self, model: Samwise, frame_outputs: list, clip: ClipTensors) -> Tensor:
        """Summed over the attributes: cross-entropy per pixel of the clip (logits upsampled like mask
        logits), the shapes' pixels and the background's weighing half each."""
        if clip.attributes is None:
            raise ValueError("the shape attribute loss needs per-pixel attribute maps: synthetic training data")
        embedding = torch.cat([out.image_embedding.float() for out in frame_outputs])  # [T, C, h/16, w/16]
        # each pixel's vector normalised: the embedding's scale grows large in from-scratch training, and
        # logits from it would make this loss's gradient swamp the others
        embedding = F.layer_norm(embedding.permute(0, 2, 3, 1), embedding.shape[1:2]).permute(0, 3, 1, 2)
        targets = clip.attributes + 1  # [T, 3, h, w], background 0
        resized_hw = tuple(targets.shape[-2:])
        total = embedding.new_zeros(())
        for index, head in enumerate(self.heads):
            logits = model.postprocess_logits(head(embedding), resized_hw, resized_hw)  # [T, classes, h, w]
            losses = F.cross_entropy(logits, targets[:, index], reduction="none")
            total = total + balanced_mean(losses, targets[:, index] > 0)
        return total


def balanced_mean(values: Tensor, foreground: Tensor) -> Tensor:
    """Mean over the foreground plus mean over the background (a part without pixels adds 0): the
    shapes cover a few percent of a frame and must not be outweighed."""
    parts = [values[part].mean() for part in (foreground, ~foreground) if part.any()]
    return torch.stack(parts).sum()
