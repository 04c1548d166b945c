"""The bounded memory one video stream keeps: only what memory attention and the CME read."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

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


@dataclass
class StreamMemory:
    """Per-stream state of the network: the memory bank and the CME's last applied switch."""

    bank: MemoryBank = field(default_factory=MemoryBank)
    last_cme_switch: int = 0

    def clear(self) -> None:
        self.bank.clear()
        self.last_cme_switch = 0
