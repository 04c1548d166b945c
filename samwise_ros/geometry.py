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


def centroid_3d(mask: np.ndarray, depth: np.ndarray, fx: float, fy: float, cx: float, cy: float,
                metres_per_unit: float = 1.0) -> tuple[float, float, float] | None:
    """3-D centroid (metres, camera optical frame: x right, y down, z forward) of a boolean HxW mask
    over an HxW depth image of the same size, with pinhole intrinsics in pixels.

    The masked pixels with a valid depth (finite and positive: zeros are holes) are back-projected
    and the per-axis median is taken, so holes, NaN and a few pixels of background at the mask's edge
    do not move the point. None when no masked pixel has a valid depth, or a focal length is 0."""
    if mask.shape != depth.shape:
        raise ValueError(f"mask {mask.shape} and depth {depth.shape} differ in size")
    if fx == 0 or fy == 0:
        return None
    rows, cols = np.nonzero(mask)
    z = depth[rows, cols].astype(np.float64) * metres_per_unit
    valid = np.isfinite(z) & (z > 0)
    if not valid.any():
        return None
    rows, cols, z = rows[valid], cols[valid], z[valid]
    x = (cols - cx) * z / fx
    y = (rows - cy) * z / fy
    return float(np.median(x)), float(np.median(y)), float(np.median(z))
