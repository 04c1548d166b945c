"""J (region similarity) and F (contour accuracy) of one frame, as the DAVIS 2017 benchmark defines them.

Definitions (Perazzi et al. 2016; the davis2017-evaluation code that SAMWISE's scripts use):
- J is the intersection over union of the two masks; two empty masks agree perfectly (J = 1).
- F compares the masks' one-pixel boundaries. A boundary pixel is a pixel whose right, lower or
  lower-right neighbour has the other value; the image border is not a boundary (an object touching
  it has no contour there). A boundary pixel of one mask is matched when a boundary pixel of the other
  lies within a disk of radius ceil(0.008 * image diagonal) pixels (x^2 + y^2 <= r^2). Precision is the
  matched share of the prediction's boundary, recall that of the ground truth's, F = 2PR / (P + R).
  No boundary on either side gives P = R = 1; a boundary on one side only gives F = 0.
- Void pixels (label 255 in DAVIS annotations) count for neither mask.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

BOUNDARY_TOLERANCE = 0.008  # of the image diagonal


def region_similarity(gt: np.ndarray, pred: np.ndarray, void: np.ndarray | None = None) -> float:
    """J: |gt & pred| / |gt | pred| over the non-void pixels; 1.0 when both are empty."""
    gt, pred, keep = _prepare(gt, pred, void)
    union = np.count_nonzero((gt | pred) & keep)
    if union == 0:
        return 1.0
    return np.count_nonzero(gt & pred & keep) / union


def contour_accuracy(gt: np.ndarray, pred: np.ndarray, void: np.ndarray | None = None,
                     tolerance: float = BOUNDARY_TOLERANCE) -> float:
    """F: the boundary F-measure; `tolerance` is a fraction of the diagonal, or pixels when >= 1."""
    gt, pred, keep = _prepare(gt, pred, void)
    gt_boundary = boundary_map(gt & keep)
    pred_boundary = boundary_map(pred & keep)
    radius = boundary_radius(gt.shape, tolerance)
    gt_count, pred_count = np.count_nonzero(gt_boundary), np.count_nonzero(pred_boundary)
    if gt_count == 0 or pred_count == 0:
        return 1.0 if gt_count == pred_count else 0.0  # DAVIS: P or R is 0 on the side with a contour
    precision = np.count_nonzero(pred_boundary & _dilate(gt_boundary, radius)) / pred_count
    recall = np.count_nonzero(gt_boundary & _dilate(pred_boundary, radius)) / gt_count
    if precision + recall == 0:
        return 0.0
    return 2 * precision * recall / (precision + recall)


def boundary_radius(shape: tuple[int, int], tolerance: float = BOUNDARY_TOLERANCE) -> int:
    """Matching distance in pixels: `tolerance` of the diagonal, rounded up (pixels when >= 1)."""
    if tolerance >= 1:
        return int(tolerance)
    height, width = shape[:2]
    # the exact integer sum, then one rounding in sqrt: the same float as numpy's norm of (h, w)
    return math.ceil(tolerance * math.sqrt(height * height + width * width))


def boundary_map(mask: np.ndarray) -> np.ndarray:
    """Pixels whose right, lower or lower-right neighbour differs; the border continues the image
    (edge padding), so it is never a boundary by itself."""
    padded = np.pad(mask.astype(bool), ((0, 1), (0, 1)), mode="edge")
    here = padded[:-1, :-1]
    return (here != padded[:-1, 1:]) | (here != padded[1:, :-1]) | (here != padded[1:, 1:])


def disk(radius: int) -> np.ndarray:
    """(2r+1)x(2r+1) uint8 structuring element of the pixels with x^2 + y^2 <= r^2."""
    y, x = np.mgrid[-radius : radius + 1, -radius : radius + 1]
    return (x * x + y * y <= radius * radius).astype(np.uint8)


def _dilate(boundary: np.ndarray, radius: int) -> np.ndarray:
    return cv2.dilate(boundary.astype(np.uint8), disk(radius)).astype(bool)


def _prepare(gt, pred, void) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    gt, pred = np.asarray(gt).astype(bool), np.asarray(pred).astype(bool)
    if gt.shape != pred.shape or gt.ndim != 2:
        raise ValueError(f"masks must be HxW arrays of one shape, got {gt.shape} and {pred.shape}")
    if void is None:
        return gt, pred, np.ones_like(gt)
    void = np.asarray(void).astype(bool)
    if void.shape != gt.shape:
        raise ValueError(f"void mask shape {void.shape} differs from the masks' {gt.shape}")
    return gt, pred, ~void


def davis_statistics(per_frame: np.ndarray) -> tuple[float, float, float]:
    """DAVIS's per-object summary of J or F over frames: mean, recall (share > 0.5) and decay
    (mean of the first quarter of the frames minus that of the last; bins overlap by one frame)."""
    values = np.asarray(per_frame, dtype=np.float64)
    bounds = (np.round(np.linspace(1, len(values), 5) + 1e-10) - 1).astype(int)
    bins = [values[bounds[i] : bounds[i + 1] + 1] for i in range(4)]
    return float(np.mean(values)), float(np.mean(values > 0.5)), float(np.mean(bins[0]) - np.mean(bins[3]))
