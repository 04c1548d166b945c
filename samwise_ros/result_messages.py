"""A tracker's result as the node's output messages (the plain mirrors of samwise_ros/messages.py), without
ROS: what the node publishes and the replay writes to its bag for one result."""

from __future__ import annotations

import math

from .messages import (CmeSwitch, ColorRGBA, Duration, Header, Image, Marker, MarkerArray, Point, PointStamped,
                       Pose, RegionOfInterest, Segmentation, Vector3)
from .overlay import MASK_BGR
from .tracker import TrackResult

# the topics published for each result, with the message each carries
OUTPUT_TOPICS = {"mask": Image, "result": Segmentation, "centroid": PointStamped, "markers": MarkerArray,
                 "cme_switch": CmeSwitch}
MARKER_LIFETIME_S = 1.0  # a target lost for this long loses its markers in rviz
MARKER_NAMESPACE = "samwise"
SPHERE_DIAMETER_M = 0.1
TEXT_HEIGHT_M = 0.08
SPHERE_COLOUR = ColorRGBA(*(channel / 255 for channel in reversed(MASK_BGR)), a=0.8)  # the overlay's mask colour
TEXT_COLOUR = ColorRGBA(1.0, 1.0, 1.0)


def segmentation(result: TrackResult, header: Header, point: tuple[float, float, float] | None,
                 latency: float) -> Segmentation:
    return Segmentation(
        header=header, query=result.query, frame_index=result.frame_index, detected=result.detected,
        object_score=result.object_score, bbox=region(result.bbox), area_px=result.area,
        centroid_px=Point.of(result.centroid), has_centroid_3d=point is not None, centroid_3d=Point.of(point),
        cme_switched=result.cme_switched,
        # NaN: the CME did not decide on this frame
        cme_probability=math.nan if result.cme_probability is None else result.cme_probability,
        latency_ms=1000.0 * latency)


def region(bbox: tuple[int, int, int, int] | None) -> RegionOfInterest:
    """An inclusive (x0, y0, x1, y1) box as a RegionOfInterest; all zero for None (nothing detected)."""
    if bbox is None:
        return RegionOfInterest()
    x0, y0, x1, y1 = bbox
    return RegionOfInterest(x_offset=x0, y_offset=y0, height=y1 - y0 + 1, width=x1 - x0 + 1)


def cme_switch(result: TrackResult, header: Header, centroid_before: tuple[float, float] | None) -> CmeSwitch:
    return CmeSwitch(header=header, query=result.query, frame_index=result.frame_index,
                     cme_probability=result.cme_probability or 0.0, centroid_px_before=Point.of(centroid_before),
                     centroid_px_after=Point.of(result.centroid))


def markers(header: Header, point: tuple[float, float, float], query: str) -> MarkerArray:
    """For rviz: a sphere at the 3-D centroid and the query above it, which vanish MARKER_LIFETIME_S
    after the last ones (the target is lost)."""
    lifetime = Duration.from_ns(round(MARKER_LIFETIME_S * 1e9))
    centre = Point.of(point)
    above = Point(centre.x, centre.y - SPHERE_DIAMETER_M, centre.z)  # y points down in an optical frame
    diameter = Vector3(SPHERE_DIAMETER_M, SPHERE_DIAMETER_M, SPHERE_DIAMETER_M)
    return MarkerArray([
        Marker(header, MARKER_NAMESPACE, 0, Marker.SPHERE, Pose(centre), diameter, SPHERE_COLOUR, lifetime),
        Marker(header, MARKER_NAMESPACE, 1, Marker.TEXT_VIEW_FACING, Pose(above), Vector3(z=TEXT_HEIGHT_M),
               TEXT_COLOUR, lifetime, text=query),
    ])

