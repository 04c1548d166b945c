"""StreamTracker: the state of one video stream on top of the SAMWISE network (no ROS here).

Frames go in one at a time with a stamp; results come out per frame. `mode="clip"` buffers
`clip_length` frames and runs them through the backbone together, as the release does on stored
video (results arrive when a clip completes). `mode="frame"` returns a result for every frame as it
arrives: the backbone runs on the new frame alone and the adapters' space-time attention sees the
cached down-projected adapter features of the previous `frame_window - 1` frames (a causal window; see docs/model.md).
Everything the tracker keeps is bounded, so memory and time per frame stay flat for any stream.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import time
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch
from torch import Tensor

from .geometry import mask_stats
from .model import Samwise
from .model.cme import RELEASE_DECISION_WINDOW
from .model.memory import StreamMemory
from .model.samwise import FrameOutput, TextQuery
from .preprocess import preprocess_frame, validate_frame

MODES = ("clip", "frame")
AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
SHORTEST_TOKEN_BUCKET = 16  # a compiled step's queries are padded to 16, 32, 64, ... tokens
COMPILE_WARM_UP_TEXT = "the object"  # the query of the blank stream that compiles the step


@dataclass
class TrackResult:
    """What the tracker says about one frame."""

    frame_index: int  # position in the stream since the last reset
    stamp: float | None
    query: str
    mask: np.ndarray  # HxW bool at the frame's own resolution
    object_score: float  # sigmoid of the object-score logit, in [0, 1]
    detected: bool  # the mask is not empty
    bbox: tuple[int, int, int, int] | None  # (x0, y0, x1, y1), inclusive
    area: int
    centroid: tuple[float, float] | None  # (x, y) pixels
    cme_probability: float | None  # switch probability, None when the CME did not decide on this frame
    cme_switched: bool
    stream_reset: bool = False  # this frame started a new stream (its stamp went backwards)
    probability: np.ndarray | None = None  # HxW float32 mask probability, only when the tracker keeps it


@dataclass
class _PendingFrame:
    pixels: Tensor  # [3, h, w] normalised, on the model's device
    resized_hw: tuple[int, int]
    frame_hw: tuple[int, int]
    stamp: float | None
    stream_reset: bool


class Tracker(Protocol):
    """What a stream session (samwise_ros/session.py) drives: StreamTracker, or a stand-in with its
    interface (tests and benchmarks slow one down or replace the model)."""

    mask_threshold: float
    compile: bool

    @property
    def query(self) -> str: ...

    def set_query(self, text: str) -> None: ...

    def reset(self) -> None: ...

    def push(self, frame: np.ndarray, stamp: float | None = None) -> list[TrackResult]: ...

    def flush(self) -> list[TrackResult]: ...

    @property
    def pending_frames(self) -> int: ...

    @property
    def compiled_step_active(self) -> bool: ...


def token_buckets(max_tokens: int) -> tuple[int, ...]:
    """The lengths a compiled step's queries are padded to: powers of two from SHORTEST_TOKEN_BUCKET, up to
    `max_tokens` (the text encoder's limit, itself the last)."""
    buckets = []
    length = SHORTEST_TOKEN_BUCKET
    while length < max_tokens:
        buckets.append(length)
        length *= 2
    return (*buckets, max_tokens)


class StreamTracker:
    """One stream's state on the model (see the module's docstring).

    With `compile=True` the constructor compiles the steady step (on CUDA it also records its CUDA graphs)
    for every query length the text encoder accepts, queries then being padded to a few token lengths
    (`token_buckets`), so that no frame of any stream ever waits for a compilation: the constructor takes
    what the compilation takes (minutes on a CPU)."""

    def __init__(self, model: Samwise, clip_length: int = 8, mode: str = "clip", frame_window: int | None = None,
                 mask_threshold: float = 0.5, use_cme: bool | None = None, cme_window: int = RELEASE_DECISION_WINDOW,
                 precision: str | None = None, keep_probability: bool = False, compile: bool = False):
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if clip_length < 1:
            raise ValueError(f"clip_length must be at least 1, got {clip_length}")
        if not 0.0 < mask_threshold < 1.0:
            raise ValueError(f"mask_threshold must be in (0, 1), got {mask_threshold}")
        self.model = model
        self.mode = mode
        self.clip_length = clip_length
        self.frame_window = frame_window or clip_length
        self.mask_threshold = mask_threshold
        self.keep_probability = keep_probability  # evaluation needs it (the DAVIS protocol argmaxes objects)
        if cme_window < 1:
            raise ValueError(f"cme_window must be at least 1, got {cme_window}")
        self.use_cme = model.config.cme_trained if use_cme is None else use_cme
        self.cme_window = cme_window
        self.precision = precision or model.precision
        if self.precision not in ("fp32", *AUTOCAST_DTYPES):
            raise ValueError(f"precision must be fp32, bf16 or fp16, got {self.precision!r}")
        self._query: TextQuery | None = None
        self._memory = model.new_stream_memory(self.frame_window if mode == "frame" else None)
        # Past the warm-up, the stream's state keeps its shapes: full clips (one frame in frame mode)
        # then go through the model's steady step, compiled when asked for.
        self._warm_up_frames = model.warm_up_frames(self.frame_window if mode == "frame" else None, cme_window)
        self._steady_clip_length = 1 if mode == "frame" else clip_length
        self.compile = compile
        self._last_step_steady = False
        self._pending: list[_PendingFrame] = []
        self._next_index = 0
        self._last_stamp: float | None = None
        self.token_lengths = token_buckets(model.max_query_tokens) if compile else ()
        self.compile_seconds = 0.0
        self._steady_step = model.forward_steady
        if compile:
            self._steady_step = compile_steady_step(model)
            self._compile_for_every_query_length()

    # ---- query and state -------------------------------------------------------------------

    @property
    def query(self) -> str:
        return "" if self._query is None else self._query.text

    def set_query(self, text: str) -> None:
        """Start tracking `text` from a clean state; an empty text stops output until the next query.
        Frames still buffered for the previous query are dropped with its state."""
        if not isinstance(text, str):
            raise ValueError(f"the query must be a string, got {type(text).__name__}")
        text = text.strip()
        self._query = self._encode_query(text) if text else None
        self.reset()

    def _encode_query(self, text: str) -> TextQuery:
        pad_to = None
        if self.compile:
            length = self.model.tokenize(text).input_ids.shape[1]
            pad_to = next(bucket for bucket in self.token_lengths if bucket >= length)
        with torch.inference_mode(), self._autocast():
            query = self.model.encode_query(self.model.tokenize(text, pad_to))
        if self.compile:
            mark_token_axis_dynamic(query)
        return query

    def _compile_for_every_query_length(self) -> None:
        """Run a blank stream into the steady state, then the steady step with a query of each token
        length: the first steady call compiles (the token axis symbolic: one compilation for every length);
        on CUDA each length's CUDA graph is recorded on its second call and replayed from its third."""
        started = time.perf_counter()
        size = self.model.image_size
        blank = np.zeros((size, size, 3), dtype=np.uint8)
        self.set_query(COMPILE_WARM_UP_TEXT)
        while self._next_index < self._warm_up_frames:
            self.push(blank)
        for length in self.token_lengths:
            with torch.inference_mode(), self._autocast():
                query = self.model.encode_query(self.model.tokenize(COMPILE_WARM_UP_TEXT, length))
            mark_token_axis_dynamic(query)
            self._query = query
            for _ in range(3 * self._steady_clip_length):
                self.push(blank)
        self._query = None
        self.reset()
        # the compiler leaves its tracing state (which holds the model) in reference cycles: collected now,
        # the model is freed as soon as its last user lets it go
        gc.collect()
        self.compile_seconds = time.perf_counter() - started

    def reset(self) -> None:
        """Clear the memory, the clip buffer and the frame count; keep the query."""
        self._memory.clear()
        self._pending.clear()
        self._next_index = 0
        self._last_stamp = None
        self._last_step_steady = False

    @property
    def memory_size(self) -> int:
        """Frames held in the memory bank (bounded by the memory attention's reach)."""
        return len(self._memory.bank)

    @property
    def compiled_step_active(self) -> bool:
        """The last frames went through the compiled steady step."""
        return self.compile and self._last_step_steady

    @property
    def pending_frames(self) -> int:
        return len(self._pending)

    # ---- frames ---------------------------------------------------------------------------------

    def push(self, frame: np.ndarray, stamp: float | None = None) -> list[TrackResult]:
        """Add one HxWx3 uint8 RGB frame. Returns the results that became ready (maybe none)."""
        validate_frame(frame)
        if self._query is None:
            return []
        results = []
        stream_reset = stamp is not None and self._last_stamp is not None and stamp < self._last_stamp
        if stream_reset:  # a bag loop or clock jump: finish the old stream, start a new one
            results = self.flush()
            self.reset()
        if stamp is not None:
            self._last_stamp = stamp
        pixels, resized_hw = preprocess_frame(frame, self.model.image_size, self.model.device)
        self._pending.append(_PendingFrame(pixels, resized_hw, frame.shape[:2], stamp, stream_reset))
        if self.mode == "frame" or len(self._pending) == self.clip_length:
            results += self._run_pending()
        return results

    def flush(self) -> list[TrackResult]:
        """Process a partial clip at the end of a stream (no memory wipe, unlike the release's T=1 clips)."""
        return self._run_pending() if self._pending and self._query is not None else []

    def _run_pending(self) -> list[TrackResult]:
        pending, self._pending = self._pending, []
        indices = list(range(self._next_index, self._next_index + len(pending)))
        self._next_index += len(pending)
        with torch.inference_mode(), self._autocast():
            outputs = self._forward(pending, indices)
            return [self._result(frame, out) for frame, out in zip(pending, outputs)]

    def _forward(self, pending: list[_PendingFrame], indices: list[int]) -> list[FrameOutput]:
        # frames go in padded to the model's input size (as the model would pad them), so that their
        # shape never changes
        size = self.model.image_size
        frames = pending[0].pixels.new_zeros(len(pending), 3, size, size)
        for slot, frame in zip(frames, pending):
            slot[:, : frame.resized_hw[0], : frame.resized_hw[1]] = frame.pixels
        self._last_step_steady = indices[0] >= self._warm_up_frames and len(pending) == self._steady_clip_length
        if not self._last_step_steady:
            return self.model.forward_clip(frames, self._query, indices, self._memory, self.use_cme, self.cme_window)
        first_index = torch.tensor(indices[0], device=frames.device)
        outputs = self._steady_step(frames, self._query, first_index, self._memory, self.use_cme, self.cme_window)
        return [dataclasses.replace(out, frame_index=index) for out, index in zip(outputs, indices)]

    def _autocast(self):
        dtype = AUTOCAST_DTYPES.get(self.precision)
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.model.device.type, dtype=dtype)

    def _result(self, frame: _PendingFrame, out: FrameOutput, row: int = 0) -> TrackResult:
        logits = self.model.postprocess_logits(out.low_res_logits[row : row + 1], frame.resized_hw,
                                               frame.frame_hw)[0, 0]
        score = out.object_score_logits[row, 0].float().sigmoid()
        cme_probability = out.cme_logits[row].float().softmax(-1)[1] if out.cme_logits is not None else score * 0
        scalars = torch.stack([score, cme_probability, out.cme_ran[row].float(), out.cme_switched[row].float()])
        # sigmoid first, as the release does (x > logit(t) differs where sigmoid rounds to exactly t)
        mask_probability = logits.sigmoid()
        mask = (mask_probability > self.mask_threshold).cpu().numpy()  # the one device-to-host copy, with:
        score, probability, ran, switched = scalars.cpu().tolist()
        stats = mask_stats(mask)
        return TrackResult(
            frame_index=out.frame_index, stamp=frame.stamp, query=self._query.text, mask=mask,
            object_score=score, detected=stats.area > 0, bbox=stats.bbox, area=stats.area,
            centroid=stats.centroid, cme_probability=probability if ran else None,
            cme_switched=bool(switched), stream_reset=frame.stream_reset,
            probability=mask_probability.cpu().numpy() if self.keep_probability else None,
        )


def mark_token_axis_dynamic(query: TextQuery) -> None:
    """Compile the steady step for any query length: its token axis is symbolic in the graph."""
    import torch._dynamo  # loaded only by a tracker that compiles

    for tensor in (query.input_ids, query.attention_mask, query.verb_tokens, query.unfused_states):
        if tensor is not None:
            torch._dynamo.mark_dynamic(tensor, 1)


# On the CPU: the weights folded into the graph as constants (prepacked for the matrix libraries) and a
# C++ wrapper calling the kernels (a small model's compiled step spends much of its time in Python calls).
CPU_COMPILE_OPTIONS = {"freezing": True, "cpp_wrapper": True, "cpp_wrapper_build_separate": True}


def compile_steady_step(model: Samwise):
    """`model.forward_steady` through torch.compile with static shapes; on CUDA with CUDA graphs, since a
    step at batch one waits on kernel launches rather than on arithmetic. On the CPU the compiled step
    holds the weights as constants: it is for a model whose weights no longer change."""
    if model.device.type != "cuda":
        return torch.compile(model.forward_steady, dynamic=False, options=CPU_COMPILE_OPTIONS)
    compiled = torch.compile(model.forward_steady, dynamic=False, mode="reduce-overhead")

    def step(frames: Tensor, query: TextQuery, first_index: Tensor, memory: StreamMemory, use_cme: bool,
             cme_window: int):
        torch.compiler.cudagraph_mark_step_begin()  # the previous step's outputs have been read
        outputs = compiled(frames, query, first_index, memory, use_cme, cme_window)
        memory.own_tensors()  # the stream keeps them past the next replay
        return outputs

    return step


def release_compiled_steps() -> None:
    """Forget every compiled step of this process: their graphs (on the CPU with the weights frozen into
    them) and on CUDA their CUDA graphs and memory pool. For a process that owns its trackers (the node
    at cleanup): a tracker still in use compiles again on its next steady step."""
    import torch._dynamo

    torch._dynamo.reset()
