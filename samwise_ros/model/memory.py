"""The bounded memory one video stream keeps: only what memory attention and the CME read."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

import torch
from torch import Tensor


@dataclass
class MemoryEntry:
    """What one frame leaves behind: its spatial memory (dropped once too old) and object pointer."""

    features: Tensor | None  # [1, mem_dim, h, w]
    pos_enc: Tensor | None  # [1, mem_dim, h, w]
    obj_ptr: Tensor  # [1, hidden_dim]


class MemoryBank:
    """Entries keyed by absolute frame index.

    The memory attention reads the spatial memories of the `num_spatial` previous frames and the
    object pointers of the `num_pointers` previous frames; nothing older is kept, so the bank's
    size is bounded however long the stream runs (the release keeps every frame).
    """

    def __init__(self, num_spatial: int = 6, num_pointers: int = 15):
        self.num_spatial = num_spatial
        self.num_pointers = num_pointers
        self._entries: OrderedDict[int, MemoryEntry] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, frame_index: int) -> bool:
        return frame_index in self._entries

    def clear(self) -> None:
        self._entries.clear()

    def add(self, frame_index: int, entry: MemoryEntry) -> None:
        self._entries[frame_index] = entry
        self._prune(newest=frame_index)

    def spatial(self, frame_index: int) -> list[tuple[int, MemoryEntry]]:
        """(distance, entry) of the frames frame_index-num_spatial .. frame_index-1, oldest first."""
        found = []
        for distance in range(self.num_spatial, 0, -1):
            entry = self._entries.get(frame_index - distance)
            if entry is not None and entry.features is not None:
                found.append((distance, entry))
        return found

    def pointers(self, frame_index: int) -> list[tuple[int, Tensor]]:
        """(distance, object pointer) of the previous frames, nearest first (at most num_pointers)."""
        found = []
        for distance in range(1, min(frame_index, self.num_pointers) + 1):
            entry = self._entries.get(frame_index - distance)
            if entry is not None:
                found.append((distance, entry.obj_ptr))
        return found

    def spatial_entry_count(self) -> int:
        return sum(entry.features is not None for entry in self._entries.values())

    def _prune(self, newest: int) -> None:
        oldest_pointer = newest - self.num_pointers + 1  # read by frame newest+1 at distance num_pointers
        oldest_spatial = newest - self.num_spatial + 1
        for index in list(self._entries):
            if index < oldest_pointer:
                del self._entries[index]
            elif index < oldest_spatial:
                self._entries[index].features = self._entries[index].pos_enc = None


class FusionContext:
    """Frame mode's causal window: each fusion stage's down-projected adapter features ([n, C, H, W],
    oldest first) of the last `window - 1` frames.

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
        """Add the newest frame's features ([1, C, H, W]), forgetting what falls out of the window."""
        if self.window == 1:
            return
        past = self._past.get(stage)
        window = features if past is None else torch.cat([past, features])
        self._past[stage] = window[-(self.window - 1):]

    def __len__(self) -> int:
        return max((len(frames) for frames in self._past.values()), default=0)

    def clear(self) -> None:
        self._past.clear()


@dataclass
class StreamMemory:
    """Per-stream state of the network: memory bank, the CME's last applied switch (a device scalar,
    so that the decision rule never waits for the host) and, in frame mode, the fusion context."""

    bank: MemoryBank = field(default_factory=MemoryBank)
    last_cme_switch: Tensor = field(default_factory=lambda: torch.zeros((), dtype=torch.long))
    fusion_context: FusionContext | None = None

    def clear(self) -> None:
        self.bank.clear()
        self.last_cme_switch = torch.zeros_like(self.last_cme_switch)
        if self.fusion_context is not None:
            self.fusion_context.clear()
