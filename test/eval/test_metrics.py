"""J and F on hand-made masks, with the expected values worked out by hand (DAVIS 2017 definitions).

Boundary facts used below (a boundary pixel differs from its right, lower or lower-right neighbour; the
image border is no boundary):
- an n x n square away from the border has 4n boundary pixels: the outline of the (n+1) x (n+1) box
  from one pixel above-left of the square to its bottom-right pixel;
- a mask of the columns x < c over the full height has one boundary column, x = c - 1 (H pixels).
"""

import numpy as np
import pytest

from samwise_ros.eval import boundary_radius, contour_accuracy, davis_statistics, j_and_f, region_similarity
from samwise_ros.eval.metrics import boundary_map, disk


def square(shape, top, left, size):
    mask = np.zeros(shape, bool)
    mask[top : top + size, left : left + size] = True
    return mask


def columns_before(shape, column):
    mask = np.zeros(shape, bool)
    mask[:, :column] = True
    return mask


def test_identical_masks():
    mask = square((60, 80), 10, 10, 20)
    assert region_similarity(mask, mask) == 1.0
    assert contour_accuracy(mask, mask) == 1.0
    assert j_and_f(mask, mask) == 1.0


def test_disjoint_masks():
    """Squares 40 px apart on a 60x80 image (tolerance 1 px): no shared pixel, no matched boundary."""
    gt, pred = square((60, 80), 10, 5, 10), square((60, 80), 10, 55, 10)
    assert region_similarity(gt, pred) == 0.0
    assert contour_accuracy(gt, pred) == 0.0


def test_square_shifted_within_tolerance():
    """20x20 square moved 3 px right on 180x240 (r = 3): J = 20*17 / (20*23) = 17/23; every boundary
    pixel of either is within 3 px (horizontally) of the other's, so P = R = F = 1."""
    gt, pred = square((180, 240), 50, 50, 20), square((180, 240), 50, 53, 20)
    assert region_similarity(gt, pred) == pytest.approx(17 / 23)
    assert contour_accuracy(gt, pred) == 1.0


@pytest.mark.parametrize("shift", [1, 2, 3, 4, 5])
def test_edge_shifted_by_k_pixels(shift):
    """Columns x < 100 against x < 100 + k on 180x240: J = 180*100 / (180*(100+k)) = 100 / (100+k).
    The boundaries are two columns k apart; r = ceil(0.008 * 300) = ceil(2.4) = 3, so F = 1 for k <= 3
    and F = 0 (no pixel matched, P = R = 0) beyond."""
    gt, pred = columns_before((180, 240), 100), columns_before((180, 240), 100 + shift)
    assert region_similarity(gt, pred) == pytest.approx(100 / (100 + shift))
    assert contour_accuracy(gt, pred) == (1.0 if shift <= 3 else 0.0)


def test_tolerance_is_0008_of_the_diagonal_rounded_up():
    """60x80: diagonal 100, 0.8 -> 1 px; 180x240: 300, 2.4 -> 3 px; DAVIS 480p 480x854: 979.65, 7.84 -> 8 px.
    On 60x80 an edge 1 px off is within tolerance, 2 px off is not."""
    assert boundary_radius((60, 80)) == 1
    assert boundary_radius((180, 240)) == 3
    assert boundary_radius((480, 854)) == 8
    assert boundary_radius((480, 854), tolerance=5) == 5  # >= 1: pixels, as DAVIS's bound_th
    gt = columns_before((60, 80), 40)
    assert contour_accuracy(gt, columns_before((60, 80), 41)) == 1.0
    assert contour_accuracy(gt, columns_before((60, 80), 42)) == 0.0


def test_extra_blob_lowers_precision_only():
    """gt: a 10x10 square; pred: the same plus one far pixel. J = 100 / 101. Boundaries: gt 40 pixels,
    pred 40 + 4 (a single pixel is a 1x1 square: 4 boundary pixels). P = 40/44 = 10/11, R = 1,
    F = 2 * (10/11) / (10/11 + 1) = 20/21."""
    gt = square((100, 100), 10, 10, 10)
    pred = gt.copy()
    pred[80, 80] = True
    assert np.count_nonzero(boundary_map(gt)) == 40 and np.count_nonzero(boundary_map(pred)) == 44
    assert region_similarity(gt, pred) == pytest.approx(100 / 101)
    assert contour_accuracy(gt, pred) == pytest.approx(20 / 21)
    assert contour_accuracy(pred, gt) == pytest.approx(20 / 21)  # F is symmetric


def test_empty_masks():
    """Empty vs empty: J = 1 (no union), F = 1 (no boundary on either side). Empty vs a square: J = 0;
    one side without boundary gives P = 0 or R = 0, so F = 0, in both orders."""
    empty, mask = np.zeros((60, 80), bool), square((60, 80), 10, 10, 20)
    assert region_similarity(empty, empty) == 1.0 and contour_accuracy(empty, empty) == 1.0
    assert region_similarity(empty, mask) == 0.0 and contour_accuracy(empty, mask) == 0.0
    assert region_similarity(mask, empty) == 0.0 and contour_accuracy(mask, empty) == 0.0


def test_full_frame_has_no_contour():
    """A mask covering the whole image has no boundary (the border is none), so against an empty mask
    F = 1 although J = 0: the DAVIS convention for two boundary-free masks."""
    full, empty = np.ones((60, 80), bool), np.zeros((60, 80), bool)
    assert not boundary_map(full).any()
    assert region_similarity(full, empty) == 0.0
    assert contour_accuracy(full, empty) == 1.0


def test_object_touching_the_border():
    """A 10x10 square in the top-left corner: only its bottom row and right column are boundary
    (10 + 10 - 1 = 19 pixels); the outline above and left of it would lie outside the image."""
    assert np.count_nonzero(boundary_map(square((60, 80), 0, 0, 10))) == 19


def test_void_pixels_count_for_neither_mask():
    """The masks differ only inside the void region: J = F = 1. Without void: J = 400 / 500."""
    gt = square((60, 80), 10, 10, 20)
    pred = gt.copy()
    pred[10:30, 30:35] = True  # 100 extra pixels
    void = np.zeros_like(gt)
    void[5:35, 29:40] = True
    assert region_similarity(gt, pred) == pytest.approx(400 / 500)
    assert region_similarity(gt, pred, void) == 1.0
    assert contour_accuracy(gt, pred, void) == 1.0


def test_disk_is_x2_plus_y2_at_most_r2():
    """disk(2) as skimage.morphology.disk(2): in a 5x5 grid, the points with |x| = 2 and |y| >= 1
    (4 + 1 = 5 > 4) are out."""
    expected = np.array([[0, 0, 1, 0, 0],
                         [0, 1, 1, 1, 0],
                         [1, 1, 1, 1, 1],
                         [0, 1, 1, 1, 0],
                         [0, 0, 1, 0, 0]], np.uint8)
    assert np.array_equal(disk(2), expected)
    assert disk(3).sum() == 29  # columns x = 0, +-1, +-2, +-3 hold 7, 5, 5, 1 points: 7 + 10 + 10 + 2


def test_davis_statistics():
    """8 frames 1, 1, .8, .6, .4, .4, .4, .2: mean 4.8 / 8 = 0.6; recall 4/8 (values > 0.5);
    decay: bin bounds round(linspace(1, 8, 5)) - 1 = 0, 2, 4, 5, 7, first bin frames 0-2 (mean 2.8/3),
    last bin frames 5-7 (mean 1.0/3): 1.8/3 = 0.6."""
    mean, recall, decay = davis_statistics([1, 1, 0.8, 0.6, 0.4, 0.4, 0.4, 0.2])
    assert mean == pytest.approx(0.6)
    assert recall == 0.5
    assert decay == pytest.approx(0.6)


def test_shapes_must_match():
    with pytest.raises(ValueError):
        region_similarity(np.zeros((4, 4), bool), np.zeros((4, 5), bool))
