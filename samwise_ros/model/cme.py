"""Conditional Memory Encoder (CME): decides when the memory should switch to a new object."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# Labels of the release's self-supervised CME target (models/model_utils.py get_same_object_labels).
SWITCH_OVERLAP_FRACTION = 0.1
EMPTY_MASK_PIXELS = 50
IGNORE_LABEL = -1
# The release's decision window (frames): the CME decides past it, at most once per window - 1 frames.
RELEASE_DECISION_WINDOW = 4


class DecisionBlock(nn.Module):
    """Post-norm self-attention block over the 3-token CME sequence.

    `norm2` is created but never applied, exactly as in the release: it exists so that the
    released weights have a place, and it is not trained.
    """

    def __init__(self, dim: int, num_heads: int = 8, ffn_dim: int = 128, dropout: float = 0.1):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(dim, num_heads, dropout=dropout)
        self.linear1 = nn.Linear(dim, ffn_dim)
        self.linear2 = nn.Linear(ffn_dim, dim)
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.norm3 = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout3 = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        # x: [S, B, C]
        x = self.norm1(x + self.dropout1(self.self_attn(x, x, x, need_weights=False)[0]))
        ffn = self.linear2(self.dropout(F.relu(self.linear1(x))))
        return self.norm3(x + self.dropout3(ffn))


class ConditionalMemoryEncoder(nn.Module):
    """[decision token, memory-path object pointer, memory-less early pointer] -> switch logits [B, 2]."""

    def __init__(self, dim: int = 256):
        super().__init__()
        self.decision_token = nn.Embedding(1, dim)
        self.block = DecisionBlock(dim)
        self.decision_head = nn.Linear(dim, 2)

    def forward(self, obj_ptr: Tensor, early_obj_ptr: Tensor) -> Tensor:
        # obj_ptr, early_obj_ptr: [B, C]
        batch = obj_ptr.shape[0]
        token = self.decision_token.weight.repeat(batch, 1)
        sequence = torch.stack([token, obj_ptr, early_obj_ptr], dim=0)  # [3, B, C]
        return self.decision_head(self.block(sequence)[0])


def reweight_memory_logits(memory_logits: Tensor, memoryless_logits: Tensor, rule: str) -> Tensor:
    """High-res logits that go to the memory encoder after a CME switch (the release's apply_decision)."""
    if rule == "all_mask":
        return memoryless_logits
    if rule == "avg":
        return (memory_logits + memoryless_logits) / 2
    if rule == "reweight":
        positive = memoryless_logits > 0
        return torch.where(positive, memoryless_logits * 10, memory_logits)
    raise ValueError(f"unknown CME switch rule {rule!r}")


def cme_window_open(frame_index: int, last_switch: int | Tensor, window: int) -> bool | Tensor:
    """The release's decision window: past frame `window`, and at least window-1 frames since the last
    switch. With `last_switch` a device tensor the second half stays on the device (no host sync)."""
    if frame_index <= window:
        return False
    return spaced_from_last_switch(frame_index, last_switch, window)


def spaced_from_last_switch(frame_index: int | Tensor, last_switch: int | Tensor, window: int) -> bool | Tensor:
    """The window rule's second half: at least window-1 frames since the last switch (device tensors in,
    a device bool out: a compiled step keeps the whole rule on the device)."""
    return frame_index - last_switch >= window - 1


def same_object_labels(memory_masks: Tensor, memoryless_masks: Tensor, memoryless_scores: Tensor) -> Tensor:
    """Self-supervised CME targets per frame: 1 switch, 0 same object, -1 ignored.

    masks: [N, H, W] logits; memoryless_scores: [N] object-score logits of the memory-less pass.
    """
    a, b = memory_masks > 0, memoryless_masks > 0
    area_a, area_b = a.flatten(1).sum(1), b.flatten(1).sum(1)
    overlap = (a & b).flatten(1).sum(1)
    # An empty mask makes this 0/0 = NaN, which the release (and so this code) labels "same object".
    fraction = overlap.float() / torch.minimum(area_a, area_b).float()
    labels = torch.where(fraction < SWITCH_OVERLAP_FRACTION, 1, 0)
    both_tiny = (area_a <= EMPTY_MASK_PIXELS) & (area_b <= EMPTY_MASK_PIXELS)
    labels = torch.where(both_tiny | (memoryless_scores.view(-1) < 0), IGNORE_LABEL, labels)
    return labels.long()
