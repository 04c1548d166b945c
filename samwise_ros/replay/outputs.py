"""What a replay writes for each result: PNG masks, overlay videos, JSON lines (and, in bags.py, a bag).

With one stream the files sit directly at the given path; with several, each stream k gets its own
(masks in `<dir>/<k>/`, videos `<stem>_<k><suffix>`), the per-expression layout of samwise-eval."""

from __future__ import annotations

import json
from dataclasses import astuple
from pathlib import Path

import cv2
import numpy as np

from ..overlay import draw_overlay
from ..session import Publication
from ..tracker import TrackResult
from .sources import Frame


class MaskFolder:
    """One 0/255 PNG per frame, named after the input frame."""

    def __init__(self, directory: Path, streams: int):
        self.directory = directory
        self._streams = streams

    def write(self, stream: int, frame: Frame, result: TrackResult) -> None:
        folder = self.directory / str(stream) if self._streams > 1 else self.directory
        folder.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(folder / f"{frame.name}.png"), result.mask.astype(np.uint8) * 255)


class OverlayVideos:
    """An mp4 per stream of the frames with mask, box, centroid, query and CME switches drawn."""

    def __init__(self, path: Path, streams: int, fps: float):
        self.path = path
        self._streams = streams
        self._fps = fps
        self._writers: dict[int, tuple[cv2.VideoWriter, tuple[int, int]]] = {}

    def write(self, stream: int, frame: Frame, result: TrackResult) -> None:
        picture = draw_overlay(frame.rgb, result.mask, result.query, result.centroid, result.bbox,
                               result.cme_switched, result.object_score)
        if stream not in self._writers:  # the size is known at the first frame
            path = self.path
            if self._streams > 1:
                path = path.with_name(f"{path.stem}_{stream}{path.suffix}")
            path.parent.mkdir(parents=True, exist_ok=True)
            size = (picture.shape[1], picture.shape[0])
            self._writers[stream] = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), self._fps, size), size
        writer, size = self._writers[stream]
        if (picture.shape[1], picture.shape[0]) != size:  # a video keeps its first frame's size
            picture = cv2.resize(picture, size)
        writer.write(picture)

    def close(self) -> None:
        for writer, _ in self._writers.values():
            writer.release()


class ResultLog:
    """One JSON object per result and line."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._file = open(path, "w", encoding="utf-8")

    def write(self, stream: int, frame: Frame, publication: Publication) -> None:
        result = publication.track
        centroid_3d = astuple(publication.centroid.point) if publication.centroid else None
        record = {
            "stream": stream, "input_frame": frame.number, "name": frame.name, "frame_id": frame.frame_id,
            "stamp": frame.stamp_ns / 1e9, "query": result.query, "frame_index": result.frame_index,
            "detected": result.detected, "object_score": round(result.object_score, 5), "area": result.area,
            "bbox": result.bbox, "centroid": result.centroid, "centroid_3d": centroid_3d,
            "cme_probability": result.cme_probability, "cme_switched": result.cme_switched,
            "stream_reset": result.stream_reset, "latency_ms": round(1000.0 * publication.latency_s, 2),
        }
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()  # a crash later keeps every line written so far

    def close(self) -> None:
        self._file.close()
