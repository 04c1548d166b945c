"""Synthetic referring videos: coloured shapes moving over a textured background, with the mask of
the object an expression refers to. Deterministic for a given seed."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

COLOURS = {  # RGB
    "red": (220, 40, 40),
    "green": (40, 180, 60),
    "blue": (50, 80, 220),
    "yellow": (230, 210, 40),
}
SHAPES = ("ball", "square", "triangle")


@dataclass(frozen=True)
class MovingShape:
    shape: str  # one of SHAPES
    colour: str  # a key of COLOURS
    radius: float  # pixels
    start: tuple[float, float]  # (x, y) at frame 0
    velocity: tuple[float, float]  # pixels per frame

    def centre(self, frame: int) -> tuple[float, float]:
        return self.start[0] + self.velocity[0] * frame, self.start[1] + self.velocity[1] * frame

    def draw(self, canvas: np.ndarray, frame: int, value) -> None:
        x, y = self.centre(frame)
        r = self.radius
        if self.shape == "ball":
            cv2.circle(canvas, (round(x), round(y)), round(r), value, thickness=-1, lineType=cv2.LINE_8)
        elif self.shape == "square":
            cv2.rectangle(canvas, (round(x - r), round(y - r)), (round(x + r), round(y + r)), value, thickness=-1)
        else:
            corners = np.array([[x, y - r], [x - r, y + r], [x + r, y + r]]).round().astype(np.int32)
            cv2.fillPoly(canvas, [corners], value)


@dataclass(frozen=True)
class Scene:
    """Shapes drawn in order (later ones occlude earlier ones); `target` indexes the referred shape."""

    shapes: tuple[MovingShape, ...]
    target: int
    expression: str
    height: int = 240
    width: int = 320
    seed: int = 0

    def render(self, frame: int) -> tuple[np.ndarray, np.ndarray]:
        """(HxWx3 uint8 RGB image, HxW bool mask of the target's visible pixels) of one frame."""
        rng = np.random.default_rng((self.seed, frame))
        image = np.full((self.height, self.width, 3), 110, dtype=np.uint8)
        image += rng.integers(0, 30, image.shape, dtype=np.uint8)  # sensor-like noise background
        labels = np.full((self.height, self.width), -1, dtype=np.int16)
        for index, shape in enumerate(self.shapes):
            shape.draw(image, frame, COLOURS[shape.colour])
            shape.draw(labels, frame, index)
        return image, labels == self.target

    def frames(self, count: int):
        for frame in range(count):
            yield self.render(frame)


def demo_scene(seed: int = 0) -> Scene:
    """A red ball rolling left past a green square and a blue triangle moving right."""
    shapes = (
        MovingShape("square", "green", 28, (90, 150), (0.8, -0.3)),
        MovingShape("triangle", "blue", 30, (40, 70), (2.5, 0.2)),
        MovingShape("ball", "red", 24, (290, 120), (-3.0, 0.4)),
    )
    return Scene(shapes, target=2, expression="the red ball rolling to the left", seed=seed)


def scene_corpus() -> list[str]:
    """Expressions over the synthetic vocabulary (for training a small tokenizer)."""
    sizes, motions = ("small", "large"), ("moving left", "moving right", "rolling to the left", "that appears later")
    return [
        f"the {size} {colour} {shape} {motion}"
        for size in sizes for colour in COLOURS for shape in SHAPES for motion in motions
    ] + [f"the {colour} {shape}" for colour in COLOURS for shape in SHAPES]
