"""Evaluation as the benchmarks define it: J (region similarity), F (contour accuracy), J&F; see metrics.py."""

from .metrics import boundary_radius, contour_accuracy, davis_statistics, region_similarity
from .scoring import summarize_davis, summarize_expressions


def j_and_f(gt, pred, void=None) -> float:
    """(J + F) / 2 of one frame."""
    return (region_similarity(gt, pred, void) + contour_accuracy(gt, pred, void)) / 2


__all__ = ["region_similarity", "contour_accuracy", "j_and_f", "boundary_radius", "davis_statistics",
           "summarize_davis", "summarize_expressions"]
