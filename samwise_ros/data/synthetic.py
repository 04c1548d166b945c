"""Synthetic referring videos: coloured shapes moving over a textured background, with the mask of
the object an expression refers to. Deterministic for a given seed.

`SyntheticReferringVideos` makes scenes whose expression needs one kind of reasoning:
- appearance: "the small green square" (distractors share the shape, the colour, or both);
- motion: "the ball moving to the left" (a distractor that looks the same moves another way);
- time: "the triangle that appears later" (the target pops in partway through while a look-alike is
  visible from the first frame);
- switch: the same expression, but the look-alike pops in first and the target in the second half of
  the video: a memory that locked onto the first match must switch, the CME's job.
In every scene a shape of another kind passes over the target, so the masks are its visible pixels.
"""

from __future__ import annotations

import itertools
from dataclasses import asdict, astuple, dataclass, replace
from typing import NamedTuple

import cv2
import numpy as np
from torch.utils.data import Dataset

from .clips import ReferringClip

COLOURS = {  # RGB
    "red": (220, 40, 40),
    "green": (40, 180, 60),
    "blue": (50, 80, 220),
    "yellow": (230, 210, 40),
}
SHAPES = ("ball", "square", "triangle")
SIZES = {"small": (0.05, 0.07), "large": (0.10, 0.13)}  # radius range, as a fraction of min(H, W)
LARGE_FROM = 0.085  # a radius of at least this fraction of min(H, W) is "large"
DIRECTIONS = ("left", "right", "up", "down")
KINDS = ("appearance", "motion", "time", "switch")
DEFAULT_KINDS = ("appearance", "motion", "time")  # switch is asked for by name (it needs 4 frames or more)
# per-pixel attribute maps of training clips: the classes of each attribute a look-alike differs in
ATTRIBUTE_CLASSES = {"colour": tuple(COLOURS), "shape": SHAPES, "size": tuple(SIZES)}
HELD_OUT_SEED_OFFSET = 1_000_003  # held-out scenes: another seed than any training run's

NOUNS = {"ball": ("ball", "circle"), "square": ("square",), "triangle": ("triangle",)}
MOTION_PHRASES = {
    "left": ("moving left", "moving to the left"),
    "right": ("moving right", "moving to the right"),
    "up": ("moving up",),
    "down": ("moving down",),
}
ROLLING_PHRASES = {"left": "rolling to the left", "right": "rolling to the right"}  # only a ball rolls
TIME_PHRASES = ("that appears later", "that shows up later")


@dataclass(frozen=True)
class MovingShape:
    shape: str  # one of SHAPES
    colour: str  # a key of COLOURS
    radius: float  # pixels
    start: tuple[float, float]  # (x, y) at frame 0
    velocity: tuple[float, float]  # pixels per frame
    first_frame: int = 0  # drawn from this frame on

    def centre(self, frame: int) -> tuple[float, float]:
        return self.start[0] + self.velocity[0] * frame, self.start[1] + self.velocity[1] * frame

    @property
    def direction(self) -> str:
        """The dominant direction of motion (image y grows downwards)."""
        vx, vy = self.velocity
        if abs(vx) >= abs(vy):
            return "left" if vx < 0 else "right"
        return "up" if vy < 0 else "down"

    def draw(self, canvas: np.ndarray, frame: int, value) -> None:
        if frame < self.first_frame:
            return
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
class Description:
    """What an expression says about its object; None means not said."""

    shape: str
    colour: str | None = None
    size: str | None = None  # "small" / "large"
    direction: str | None = None  # one of DIRECTIONS
    appears_later: bool | None = None  # only True is ever said

    def covers(self, facts: Description) -> bool:
        """Whether an object with these (complete) facts satisfies the description."""
        return all(said is None or said == fact for said, fact in zip(astuple(self), astuple(facts)))

    def phrasings(self) -> list[str]:
        """Every way the generator may put this description into words."""
        adjectives = [word for word in (self.size, self.colour) if word]
        motions = ("",)
        if self.direction:
            motions = MOTION_PHRASES[self.direction]
            if self.shape == "ball" and self.direction in ROLLING_PHRASES:
                motions += (ROLLING_PHRASES[self.direction],)
        times = TIME_PHRASES if self.appears_later else ("",)
        return [" ".join(word for word in ("the", *adjectives, noun, motion, time) if word)
                for noun, motion, time in itertools.product(NOUNS[self.shape], motions, times)]


@dataclass(frozen=True)
class Scene:
    """Shapes drawn in order (later ones occlude earlier ones); `target` indexes the referred shape."""

    shapes: tuple[MovingShape, ...]
    target: int
    expression: str
    height: int = 240
    width: int = 320
    seed: int = 0
    description: Description | None = None  # what `expression` says, when the generator made it

    def render(self, frame: int) -> tuple[np.ndarray, np.ndarray]:
        """(HxWx3 uint8 RGB image, HxW bool mask of the target's visible pixels) of one frame."""
        image, labels = self.render_labelled(frame)
        return image, labels == self.target

    def render_labelled(self, frame: int) -> tuple[np.ndarray, np.ndarray]:
        """(HxWx3 uint8 RGB image, HxW int16 index of the shape visible at each pixel, -1 on background)."""
        image = self.background(frame)
        labels = np.full((self.height, self.width), -1, dtype=np.int16)
        for index, shape in enumerate(self.shapes):
            shape.draw(image, frame, COLOURS[shape.colour])
            shape.draw(labels, frame, index)
        return image, labels

    def attribute_maps(self, labels: np.ndarray) -> np.ndarray:
        """Shape-index maps [..., H, W] (of `render_labelled`) -> [..., 3, H, W] int8: the visible shape's
        class of each of ATTRIBUTE_CLASSES (colour, shape, size) at every pixel, -1 on background."""
        rows = [[values.index(getattr(self.describe(index), name)) for name, values in ATTRIBUTE_CLASSES.items()]
                for index in range(len(self.shapes))]
        table = np.array([*rows, [-1] * len(ATTRIBUTE_CLASSES)], dtype=np.int8)
        return np.moveaxis(table[labels], -1, -3)  # label -1 picks the background row

    def background(self, frame: int) -> np.ndarray:
        """Grey blotches fixed for the scene plus sensor-like noise that changes every frame."""
        coarse = np.random.default_rng([self.seed, 0]).uniform(80, 150, (5, 7)).astype(np.float32)
        texture = cv2.resize(coarse, (self.width, self.height), interpolation=cv2.INTER_CUBIC)
        noise = np.random.default_rng([self.seed, 1, frame]).integers(0, 30, (self.height, self.width, 3))
        return np.clip(texture[..., None] + noise, 0, 255).astype(np.uint8)

    def footprint(self, index: int, frame: int) -> np.ndarray:
        """HxW bool: the pixels shape `index` covers in `frame`, ignoring the shapes drawn over it."""
        canvas = np.zeros((self.height, self.width), dtype=np.uint8)
        self.shapes[index].draw(canvas, frame, 1)
        return canvas.astype(bool)

    def describe(self, index: int) -> Description:
        """Everything an expression could say about shape `index`."""
        shape = self.shapes[index]
        size = "large" if shape.radius >= LARGE_FROM * min(self.height, self.width) else "small"
        return Description(shape.shape, shape.colour, size, shape.direction, self.appears_later(index))

    def appears_later(self, index: int) -> bool:
        """Shape `index` pops in after the first frame and after every other shape of its kind."""
        first = self.shapes[index].first_frame
        return first > 0 and all(first > other.first_frame for i, other in enumerate(self.shapes)
                                 if i != index and other.shape == self.shapes[index].shape)

    def frames(self, count: int):
        for frame in range(count):
            yield self.render(frame)

    def referring_clip(self, count: int, source: str = "") -> ReferringClip:
        """The first `count` frames as a clip: images, the target's masks, the expression, attribute maps."""
        images, labels = (np.stack(item) for item in zip(*(self.render_labelled(t) for t in range(count))))
        return ReferringClip(images, labels == self.target, self.expression, source,
                             attributes=self.attribute_maps(labels))


class SyntheticReferringVideos(Dataset):
    """`length` clips of `frames` frames; scene `index` depends only on (seed, epoch, index), so a
    held-out split is the same class with another seed, and training sees new scenes every epoch
    (`set_epoch`). Kinds take turns: index % len(kinds).

    With `expressions_per_scene` n > 1, n consecutive clips share one scene and refer to different
    shapes in it (the scene's own target, then others that a shortest unique description picks out):
    for training, where the same pixels with another expression must give another mask, so a model
    cannot do well by segmenting every shape."""

    def __init__(self, length: int = 1000, frames: int = 8, size: tuple[int, int] = (240, 320),
                 kinds: tuple[str, ...] = DEFAULT_KINDS, seed: int = 0, expressions_per_scene: int = 1):
        if not kinds or set(kinds) - set(KINDS):
            raise ValueError(f"kinds must be a non-empty subset of {KINDS}, got {kinds}")
        needed = max(MIN_FRAMES.get(kind, 3) for kind in kinds)
        if frames < needed:
            raise ValueError(f"{', '.join(kinds)} scenes need at least {needed} frames, got {frames}"
                             " (time: a look-alike alone, then the target twice)")
        if expressions_per_scene < 1:
            raise ValueError(f"expressions_per_scene must be at least 1, got {expressions_per_scene}")
        self.length, self.frames, self.size, self.kinds, self.seed = length, frames, tuple(size), tuple(kinds), seed
        self.expressions_per_scene = expressions_per_scene
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.length

    def kind(self, index: int) -> str:
        """The kind of the scene: a clip referring to another shape in it says appearance (or motion)."""
        return self.kinds[(index // self.expressions_per_scene) % len(self.kinds)]

    def scene(self, index: int) -> Scene:
        if not 0 <= index < self.length:
            raise IndexError(index)
        scene_index, referral = divmod(index, self.expressions_per_scene)
        key = [self.seed, self.epoch, scene_index]
        if self.expressions_per_scene > 1:  # not the scenes of one expression each (held-out splits)
            key.append(self.expressions_per_scene)
        scene = build_scene(np.random.default_rng(key), self.kind(index), self.frames, *self.size)
        return refer_to_another_shape(scene, referral) if referral else scene

    def __getitem__(self, index: int) -> ReferringClip:
        return self.scene(index).referring_clip(self.frames, f"synthetic/{self.kind(index)}/{index:05d}")


class _Cast(NamedTuple):
    target: MovingShape
    below: list[MovingShape]  # drawn under the target
    above: list[MovingShape]  # drawn over the target (and over the shape passing over it)
    required: tuple[str, ...]  # Description fields the expression must say


@dataclass
class _ShapeMaker:
    """Random shapes whose paths stay inside the image for the whole clip."""

    rng: np.random.Generator
    frames: int
    height: int
    width: int

    def pick(self, options, excluding=()) -> str:
        return str(self.rng.choice([option for option in options if option not in excluding]))

    def look(self) -> tuple[str, str, str]:
        return self.pick(SHAPES), self.pick(COLOURS), self.pick(SIZES)

    def shape(self, shape: str, colour: str, size: str, direction: str, first_frame: int = 0) -> MovingShape:
        radius = self.radius(size)
        velocity = self.velocity(direction)
        start = tuple(self.start_inside(radius, v * (self.frames - 1), extent)
                      for v, extent in zip(velocity, (self.width, self.height)))
        return MovingShape(shape, colour, radius, start, velocity, first_frame)

    def radius(self, size: str) -> float:
        return float(self.rng.uniform(*SIZES[size]) * min(self.height, self.width))

    def velocity(self, direction: str) -> tuple[float, float]:
        horizontal = direction in ("left", "right")
        # over the clip a shape travels a third of the image or so: clearly moving, still inside
        speed = self.rng.uniform(0.25, 0.45) * (self.width if horizontal else self.height) / (self.frames - 1)
        drift = self.rng.uniform(-0.15, 0.15) * speed  # small enough that `direction` stays the dominant one
        signed = -speed if direction in ("left", "up") else speed
        return (float(signed), float(drift)) if horizontal else (float(drift), float(signed))

    def start_inside(self, radius: float, travel: float, extent: int) -> float:
        low, high = radius + max(0.0, -travel), extent - radius - max(0.0, travel)
        return float(self.rng.uniform(low, high)) if low < high else (low + high) / 2

    def passer(self, target: MovingShape) -> MovingShape:
        """A shape of another kind crossing over the target's centre after the target's first frame
        (which so always shows it unhidden by the passer)."""
        crossing = int(self.rng.integers(target.first_frame + 1, self.frames))
        across = ("up", "down") if target.direction in ("left", "right") else ("left", "right")
        velocity = self.velocity(self.pick(across))
        # within 0.2 radius of the centre: inside every shape, so the passer always hides some of it
        centre = np.add(target.centre(crossing), self.rng.uniform(-0.2, 0.2, 2) * target.radius)
        start = tuple(float(c) for c in centre - np.multiply(velocity, crossing))
        return MovingShape(self.pick(SHAPES, target.shape), self.pick(COLOURS), self.radius(self.pick(SIZES)),
                           start, velocity)

    def clutter(self, target_shape: str) -> list[MovingShape]:
        """0-1 shapes of other kinds: more to look at, never a candidate for the expression."""
        return [self.shape(self.pick(SHAPES, target_shape), self.pick(COLOURS), self.pick(SIZES),
                           self.pick(DIRECTIONS)) for _ in range(self.rng.integers(0, 2))]


def _appearance_cast(make: _ShapeMaker) -> _Cast:
    shape, colour, size = make.look()
    target = make.shape(shape, colour, size, make.pick(DIRECTIONS))
    same_shape = [
        make.shape(shape, make.pick(COLOURS, colour), make.pick(SIZES), make.pick(DIRECTIONS)),
        make.shape(shape, colour, make.pick(SIZES, size), make.pick(DIRECTIONS)),
    ]
    # one or both same-shape look-alikes, so the colour, the size or both must be said
    kept = [same_shape[i] for i in ((0,), (1,), (0, 1))[make.rng.integers(3)]]
    same_colour = make.shape(make.pick(SHAPES, shape), colour, make.pick(SIZES), make.pick(DIRECTIONS))
    return _Cast(target, [*kept, same_colour, *make.clutter(shape)], [], ())


def _motion_cast(make: _ShapeMaker) -> _Cast:
    shape, colour, size = make.look()
    direction = make.pick(DIRECTIONS)
    target = make.shape(shape, colour, size, direction)
    twin = make.shape(shape, colour, size, make.pick(DIRECTIONS, direction))  # same look, another motion
    distractors = [twin]
    if make.rng.random() < 0.5:  # same motion, another colour: the colour must be said as well
        distractors.append(make.shape(shape, make.pick(COLOURS, colour), make.pick(SIZES), direction))
    return _Cast(target, [*distractors, *make.clutter(shape)], [], ("direction",))


def _time_cast(make: _ShapeMaker) -> _Cast:
    shape, colour, size = make.look()
    appears = int(make.rng.integers(max(1, make.frames // 4), make.frames // 2 + 1))  # <= T-2: shown twice at least
    target = make.shape(shape, colour, size, make.pick(DIRECTIONS), first_frame=appears)
    # same look, there from the first frame, drawn on top so that it stays visible throughout
    twin = make.shape(shape, colour, size, make.pick(DIRECTIONS))
    return _Cast(target, make.clutter(shape), [twin], ("appears_later",))


def _switch_cast(make: _ShapeMaker) -> _Cast:
    shape, colour, size = make.look()
    appears = int(make.rng.integers(make.frames // 2, make.frames - 1))  # <= T-2: shown twice at least
    target = make.shape(shape, colour, size, make.pick(DIRECTIONS), first_frame=appears)
    # same look, popping in first and alone for a while: the first match of "appears later"
    direction, enters = make.pick(DIRECTIONS), int(make.rng.integers(1, appears // 2 + 1))
    twin = make.shape(shape, colour, size, direction, first_frame=enters)
    return _Cast(target, make.clutter(shape), [twin], ("appears_later",))


CASTS = {"appearance": _appearance_cast, "motion": _motion_cast, "time": _time_cast, "switch": _switch_cast}
MIN_FRAMES = {"switch": 4}  # the look-alike alone, then the target twice (other kinds: 3)


def build_scene(rng: np.random.Generator, kind: str, frames: int, height: int, width: int) -> Scene:
    """A scene of `kind` (one of KINDS) whose expression fits its target and no other shape."""
    make = _ShapeMaker(rng, frames, height, width)
    cast = CASTS[kind](make)
    below = [cast.below[i] for i in rng.permutation(len(cast.below))]
    shapes = (*below, cast.target, make.passer(cast.target), *cast.above)
    scene = Scene(shapes, target=len(below), expression="", height=height, width=width,
                  seed=int(rng.integers(2**31)))
    description = unique_description(scene, cast.required)
    return replace(scene, expression=str(rng.choice(description.phrasings())), description=description)


def unique_description(scene: Scene, required: tuple[str, ...] = ()) -> Description:
    """The shortest description of the target that says `required` and covers no other shape."""
    description = find_unique_description(scene, required)
    if description is None:
        raise RuntimeError(f"no unique description of shape {scene.target} in {scene.shapes}")  # a recipe bug
    return description


def find_unique_description(scene: Scene, required: tuple[str, ...] = ()) -> Description | None:
    """The shortest description of the target that says `required` and covers no other shape, if any."""
    facts = [scene.describe(index) for index in range(len(scene.shapes))]
    target = facts.pop(scene.target)
    for optional in ((), ("colour",), ("size",), ("colour", "size")):
        said = {"shape", *required, *optional}
        candidate = Description(**{name: value for name, value in asdict(target).items() if name in said})
        if not any(candidate.covers(other) for other in facts):
            return candidate
    return None


def refer_to_another_shape(scene: Scene, referral: int) -> Scene:
    """The scene with its `referral`-th other describable shape (cycling) as the target, under its
    shortest unique description (appearance, else with its motion); the scene itself if there is none."""
    others = []
    for index in range(len(scene.shapes)):
        candidate = replace(scene, target=index)
        description = None
        if index != scene.target:
            description = find_unique_description(candidate) or find_unique_description(candidate, ("direction",))
        if description is not None:
            others.append(replace(candidate, description=description))
    if not others:
        return scene
    chosen = others[(referral - 1) % len(others)]
    rng = np.random.default_rng([chosen.seed, referral])
    return replace(chosen, expression=str(rng.choice(chosen.description.phrasings())))


def demo_scene(seed: int = 0) -> Scene:
    """A red ball rolling left past a green square and a blue triangle moving right."""
    shapes = (
        MovingShape("square", "green", 28, (90, 150), (0.8, -0.3)),
        MovingShape("triangle", "blue", 30, (40, 70), (2.5, 0.2)),
        MovingShape("ball", "red", 24, (290, 120), (-3.0, 0.4)),
    )
    return Scene(shapes, target=2, expression="the red ball rolling to the left", seed=seed)


def scene_descriptions() -> list[Description]:
    """Every description the generator can put into words."""
    return [
        Description(shape, colour, size, direction, appears_later)
        for shape in SHAPES
        for colour in (None, *COLOURS)
        for size in (None, *SIZES)
        for direction, appears_later in ((None, None), *((d, None) for d in DIRECTIONS), (None, True))
    ]


def scene_corpus() -> list[str]:
    """Every expression the generator can produce (and the demo's), for training a small tokenizer."""
    return sorted({text for description in scene_descriptions() for text in description.phrasings()})
