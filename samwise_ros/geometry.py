"""Geometry of a mask: bounding box, area, centroid (pixels)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class MaskStats:
    area: int
    bbox: tuple[int, int, int, int] | None  # (x0, y0, x1, y1), inclusive pixel bounds
    centroid: tuple[float, float] | None  # (x, y) mean pixel position


def mask_stats(mask: np.ndarray) -> MaskStats:
    """Area, bounding box and centroid of a boolean HxW mask (None fields when it is empty)."""
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return MaskStats(0, None, None)
    cols = np.flatnonzero(mask.any(axis=0))
    ys, xs = np.nonzero(mask[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1])
    area = int(xs.size)
    centroid = (float(xs.mean() + cols[0]), float(ys.mean() + rows[0]))
    return MaskStats(area, (int(cols[0]), int(rows[0]), int(cols[-1]), int(rows[-1])), centroid)
