"""The debug picture: the frame with the mask, its box, centroid, the query and CME switches drawn."""

from __future__ import annotations

import cv2
import numpy as np

MASK_BGR = (255, 120, 0)
SWITCH_BGR = (0, 0, 255)


def draw_overlay(frame_rgb: np.ndarray, mask: np.ndarray, query: str, centroid=None, bbox=None,
                 cme_switched: bool = False, object_score: float | None = None) -> np.ndarray:
    """HxWx3 RGB frame -> HxWx3 BGR picture (OpenCV's and ROS bgr8's channel order)."""
    picture = cv2.cvtColor(frame_rgb, cv2.COLOR_RGB2BGR)
    if mask.any():
        tint = picture.copy()
        tint[mask] = MASK_BGR
        picture = cv2.addWeighted(picture, 0.5, tint, 0.5, 0)
        contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(picture, contours, -1, MASK_BGR, 1)
    if bbox is not None:
        cv2.rectangle(picture, bbox[:2], bbox[2:], (0, 255, 255), 1)
    if centroid is not None:
        cv2.drawMarker(picture, (round(centroid[0]), round(centroid[1])), (0, 255, 0), cv2.MARKER_CROSS, 12, 2)
    label = query if object_score is None else f"{query}  ({object_score:.2f})"
    _text(picture, label, (4, 16))
    if cme_switched:
        cv2.rectangle(picture, (0, 0), (picture.shape[1] - 1, picture.shape[0] - 1), SWITCH_BGR, 3)
        _text(picture, "CME switch", (4, 34), SWITCH_BGR)
    return picture


def _text(picture: np.ndarray, text: str, origin: tuple[int, int], colour=(255, 255, 255)) -> None:
    cv2.putText(picture, text, origin, cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 3, cv2.LINE_AA)
    cv2.putText(picture, text, origin, cv2.FONT_HERSHEY_SIMPLEX, 0.45, colour, 1, cv2.LINE_AA)
