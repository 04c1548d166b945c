"""The bounded memory one video stream keeps: only what memory attention and the CME read."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor


@dataclass
class MemoryEntry:
    """What one frame leaves behind in each of R rows: its spatial memory and object pointer."""

    features: Tensor  # [R, mem_dim, h, w]
    pos_enc: Tensor  # [R, mem_dim, h, w]
    obj_ptr: Tensor  # [R, hidden_dim]


class MemoryBank:
    """The newest frames' memories as stacked tensors.

    The memory attention reads the spatial memories of the `num_spatial` previous frames and the
    object pointers of the `num_pointers` previous frames; nothing older is kept, so the bank's size
    is bounded however long the stream runs (the release keeps every frame), and once full its
    tensors keep their shapes (what a compiled step needs). Frames are added in stream order.
    """

    def __init__(self, num_spatial: int = 6, num_pointers: int = 15):
        self.num_spatial = num_spatial
        self.num_pointers = num_pointers
        self.clear()

    def __len__(self) -> int:
        """Frames whose object pointer is held (the bank's reach)."""
        return 0 if self.pointers is None else self.pointers.shape[0]

    def clear(self) -> None:
        self.features: Tensor | None = None  # [n, R, mem_dim, h, w], oldest first (R rows: sam2's batch axis)
        self.pos_enc: Tensor | None = None  # [n, R, mem_dim, h, w]
        self.pointers: Tensor | None = None  # [m, R, hidden_dim], newest first

    def add(self, entry: MemoryEntry) -> None:
        """Add the newest frame's memory, forgetting what falls out of reach."""
        self.features = _keep_last(self.features, entry.features[None], self.num_spatial)
        self.pos_enc = _keep_last(self.pos_enc, entry.pos_enc[None], self.num_spatial)
        newest = entry.obj_ptr[None]
        self.pointers = newest if self.pointers is None else torch.cat([newest, self.pointers[: self.num_pointers - 1]])

    def spatial_entry_count(self) -> int:
        return 0 if self.features is None else self.features.shape[0]

    def own_tensors(self) -> None:
        self.features, self.pos_enc, self.pointers = (
            None if tensor is None else tensor.clone() for tensor in (self.features, self.pos_enc, self.pointers))


def _keep_last(stacked: Tensor | None, newest: Tensor, count: int) -> Tensor:
    """`stacked` ([n, ...]) with `newest` ([1, ...]) appended, its last `count` entries."""
    return newest if stacked is None else torch.cat([stacked, newest])[-count:]


class FusionContext:
    """Frame mode's causal window: each fusion stage's down-projected adapter features ([n, R, C, H, W],
    oldest first, for R rows) of the last `window - 1` frames.

    A new frame's HSA and text attention then see those frames as the clip mode's frames see their
    clip, while the backbone blocks and the adapter's projections run on the new frame alone.
    """

    def __init__(self, window: int):
        if window < 1:
            raise ValueError(f"the frame-mode window must be at least 1 frame, got {window}")
        self.window = window
        self._past: dict[int, Tensor] = {}

    def past(self, stage: int) -> Tensor | None:
        return self._past.get(stage)

    def push(self, stage: int, features: Tensor) -> None:
        """Add the newest frame's features ([R, C, H, W]), forgetting what falls out of the window."""
        if self.window == 1:
            return
        self._past[stage] = _keep_last(self._past.get(stage), features[None], self.window - 1)

    def __len__(self) -> int:
        return max((len(frames) for frames in self._past.values()), default=0)

    def clear(self) -> None:
        self._past.clear()

    def own_tensors(self) -> None:
        self._past = {stage: frames.clone() for stage, frames in self._past.items()}


@dataclass
class StreamMemory:
    """Per-stream state of the network for R rows (streams on the same frames): memory bank, the CME's last
    applied switch of each row ([R] on the device, so that the decision rule never waits for the host) and,
    in frame mode, the fusion context."""

    bank: MemoryBank = field(default_factory=MemoryBank)
    last_cme_switch: Tensor = field(default_factory=lambda: torch.zeros(1, dtype=torch.long))
    fusion_context: FusionContext | None = None

    def clear(self) -> None:
        self.bank.clear()
        self.last_cme_switch = torch.zeros_like(self.last_cme_switch)
        if self.fusion_context is not None:
            self.fusion_context.clear()

    def own_tensors(self) -> None:
        """Copy every tensor held into memory of its own: a CUDA graph's outputs live in its memory pool,
        which its next replay overwrites."""
        self.bank.own_tensors()
        self.last_cme_switch = self.last_cme_switch.clone()
        if self.fusion_context is not None:
            self.fusion_context.own_tensors()
