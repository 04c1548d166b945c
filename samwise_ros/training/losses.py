"""The release's losses: sigmoid focal + dice on the clip's masks, weighted cross-entropy for the CME; and
SAM2's object-score loss for models trained from scratch."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

FOCAL_ALPHA = 0.25
FOCAL_GAMMA = 2.0
CME_CLASS_WEIGHTS = (1.0, 2.0)  # switching is the rarer class


def sigmoid_focal_loss(logits: Tensor, targets: Tensor) -> Tensor:
    """logits, targets: [N, T*H*W] (one row per video) -> mean over pixels, averaged over videos."""
    prob = logits.sigmoid()
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_t = prob * targets + (1 - prob) * (1 - targets)
    alpha_t = FOCAL_ALPHA * targets + (1 - FOCAL_ALPHA) * (1 - targets)
    return (alpha_t * ce * (1 - p_t) ** FOCAL_GAMMA).mean(1).mean()


def dice_loss(logits: Tensor, targets: Tensor) -> Tensor:
    """logits, targets: [N, T*H*W] -> 1 - smoothed Dice over each video's whole clip, averaged."""
    prob = logits.sigmoid().float()
    numerator = 2 * (prob * targets).sum(1)
    denominator = prob.sum(1) + targets.sum(1)
    return (1 - (numerator + 1) / (denominator + 1)).mean()


def cme_loss(logits: Tensor, labels: Tensor) -> Tensor:
    """logits [N, 2], labels [N] in {-1, 0, 1}; 0 when every label is ignored (the release maps NaN to 0)."""
    valid = labels >= 0
    if not valid.any():
        return logits.sum() * 0.0  # keeps the graph (DDP needs every trainable output used)
    weight = torch.tensor(CME_CLASS_WEIGHTS, device=logits.device, dtype=logits.dtype)
    return F.cross_entropy(logits.float(), labels, weight=weight.float(), ignore_index=-1)


def object_score_loss(logits: Tensor, present: Tensor) -> Tensor:
    """logits [T] of SAM2's object-score head, present [T] bool (the target is visible in the frame):
    SAM2's own objectness loss, binary cross-entropy. Only a model whose SAM2 is trained needs it."""
    return F.binary_cross_entropy_with_logits(logits, present.to(logits.dtype))


def mask_losses(frame_logits: list[Tensor], masks: Tensor) -> tuple[Tensor, Tensor]:
    """Focal and dice of one clip: frame_logits [1, 1, h, w] each, masks [T, h, w], as one row."""
    logits = torch.cat([frame.float() for frame in frame_logits]).flatten().unsqueeze(0)
    targets = masks.flatten().unsqueeze(0)
    return sigmoid_focal_loss(logits, targets), dice_loss(logits, targets)
