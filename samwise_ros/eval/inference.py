"""Run a model over a benchmark and score it, as SAMWISE's inference scripts do, through StreamTracker.

Each expression is segmented from a clean state in clips of `clip_length` frames (the release's
eval_clip_window, 8), the last partial clip flushed. The videos are independent, so they are spread over
a process pool (concurrent.futures with the spawn start method, one model per process; on CUDA the
processes take the GPUs in turn).
"""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from ..model import Samwise
from ..runtime import resolve_device, resolve_precision
from ..tracker import StreamTracker, TrackResult
from .datasets import Mevis, RefCoco, RefDavis17, Video, read_frame
from .metrics import region_similarity
from .scoring import ExpressionScore, ObjectScore, score_davis_sequence, score_expression

DAVIS_BACKGROUND = 0.1  # the release's background score in the per-pixel argmax over objects
DAVIS_MIN_PROBABILITY = 0.5  # probabilities below it are zeroed before the argmax
DATASETS = {"ref-davis17": (RefDavis17, "valid"), "mevis": (Mevis, "valid_u")}


@dataclass(frozen=True)
class EvalJob:
    """Everything a worker process needs, picklable."""

    dataset: str  # a key of DATASETS
    root: Path
    split: str
    output: Path
    checkpoint: str
    tokenizer: str | None = None
    device: str = "auto"
    precision: str = "auto"
    clip_length: int = 8
    mask_threshold: float = 0.5
    use_cme: bool = True

    def open_dataset(self):
        return DATASETS[self.dataset][0](self.root, self.split)


_worker: dict = {}  # per process: the job, its dataset and the model


@dataclass(frozen=True)
class CmeActivity:
    """How often the CME decided and switched: what `--no-cme` takes away."""

    decided: int = 0  # frames on which the CME ran
    switched: int = 0

    def __add__(self, other: "CmeActivity") -> "CmeActivity":
        return CmeActivity(self.decided + other.decided, self.switched + other.switched)

    @classmethod
    def of(cls, results: list[TrackResult]) -> "CmeActivity":
        return cls(sum(r.cme_probability is not None for r in results), sum(r.cme_switched for r in results))


def run_videos(job: EvalJob, workers: int = 1) -> tuple[object, list]:
    """The dataset and, per video in its order, the task's result (see process_video)."""
    dataset = job.open_dataset()
    count = len(dataset.videos)
    if workers <= 1:
        start_worker(job, None, torch.get_num_threads(), dataset)
        return dataset, [process_video(i) for i in tqdm(range(count), desc=job.dataset, unit="video")]
    context = multiprocessing.get_context("spawn")  # CUDA and threaded torch do not survive fork
    devices = context.Queue()
    for device in worker_devices(job.device, workers):
        devices.put(device)
    threads = max(1, torch.get_num_threads() // workers)  # share the cores instead of oversubscribing them
    results = [None] * count
    with ProcessPoolExecutor(workers, mp_context=context, initializer=start_worker,
                             initargs=(job, devices, threads)) as pool:
        futures = {pool.submit(process_video, index): index for index in range(count)}
        for future in tqdm(as_completed(futures), total=count, desc=job.dataset, unit="video"):
            results[futures[future]] = future.result()
    return dataset, results


def worker_devices(device: str, workers: int) -> list[str]:
    """One device per worker: the GPUs in turn when `device` is auto or cuda, else `device` for all."""
    if device in ("auto", "cuda") and torch.cuda.is_available():
        return [f"cuda:{index % torch.cuda.device_count()}" for index in range(workers)]
    return [device] * workers


def start_worker(job: EvalJob, devices, threads: int, dataset=None) -> None:
    device = resolve_device(devices.get() if devices is not None else job.device)
    if device.type == "cpu":
        torch.set_num_threads(threads)
    model = Samwise.from_path(job.checkpoint, job.tokenizer, device, resolve_precision(job.precision, device))
    _worker.update(job=job, dataset=dataset or job.open_dataset(), model=model)


def process_video(index: int):
    """Ref-DAVIS17: {annotator: [ObjectScore]}; MeViS: ([ExpressionScore] (empty without ground truth),
    CmeActivity)."""
    job, dataset, model = _worker["job"], _worker["dataset"], _worker["model"]
    video = dataset.videos[index]
    if job.dataset == "ref-davis17":
        return predict_davis_video(model, job, dataset, video)
    return predict_mevis_video(model, job, dataset, video)


def segment(tracker: StreamTracker, frame_paths: list[Path], text: str) -> Iterator[TrackResult]:
    """One expression over one video from a clean state: a result per frame, in order."""
    if not text.strip():
        raise ValueError("an empty expression cannot be segmented")
    tracker.set_query(text)
    for path in frame_paths:
        yield from tracker.push(read_frame(path))
    yield from tracker.flush()


def predict_davis_video(model: Samwise, job: EvalJob, dataset: RefDavis17, video: Video) -> dict[int, list[ObjectScore]]:
    """Per annotator: all objects' masks merged into one indexed PNG per frame, written under
    OUTPUT/anno_<k>/<video>/ (the release's layout) and scored against the DAVIS annotations."""
    tracker = StreamTracker(model, clip_length=job.clip_length, keep_probability=True, use_cme=job.use_cme)
    gt_dir = dataset.ground_truth_dir(video)
    scores = {}
    for annotator, expressions in enumerate(dataset.annotator_objects(video)):
        labels = davis_labels(tracker, video, expressions)
        out_dir = job.output / f"anno_{annotator}" / video.name
        write_pngs(out_dir, video.frame_names, labels, palette_of(gt_dir))
        scores[annotator] = score_davis_sequence(video.name, gt_dir, out_dir)
    return scores


def davis_labels(tracker: StreamTracker, video: Video, expressions) -> list[np.ndarray]:
    """The release's merge: probabilities under 0.5 become 0, then each pixel takes the argmax over
    [0.1 background, object 1, object 2, ...]; ties go to the first (torch.argmax)."""
    height, width = frame_size(video.frame_paths[0])
    best = [np.full((height, width), DAVIS_BACKGROUND, np.float32) for _ in video.frame_paths]
    labels = [np.zeros((height, width), np.uint8) for _ in video.frame_paths]
    for object_id, expression in enumerate(expressions, start=1):
        for index, result in enumerate(segment(tracker, video.frame_paths, expression.text)):
            probability = np.where(result.probability < DAVIS_MIN_PROBABILITY, 0.0, result.probability)
            wins = probability > best[index]
            best[index][wins] = probability[wins]
            labels[index][wins] = object_id
    return labels


def predict_mevis_video(model: Samwise, job: EvalJob, dataset: Mevis,
                        video: Video) -> tuple[list[ExpressionScore], CmeActivity]:
    """Binary masks per expression under OUTPUT/Annotations/<video>/<exp_id>/ (the submission layout),
    scored against mask_dict.json when the split has it; and what the CME did."""
    tracker = StreamTracker(model, clip_length=job.clip_length, mask_threshold=job.mask_threshold,
                            use_cme=job.use_cme)
    scores, activity = [], CmeActivity()
    for expression in video.expressions:
        results = list(segment(tracker, video.frame_paths, expression.text))
        activity += CmeActivity.of(results)
        masks = [result.mask for result in results]
        out_dir = job.output / "Annotations" / video.name / expression.exp_id
        write_pngs(out_dir, video.frame_names, [mask.astype(np.uint8) * 255 for mask in masks])
        if dataset.has_ground_truth:
            truth = dataset.ground_truth(video, expression, masks[0].shape)
            scores.append(score_expression(video.name, expression.exp_id, expression.text, list(truth), masks))
    return scores, activity


def evaluate_refcoco(model: Samwise, dataset: RefCoco, mask_threshold: float = 0.5) -> dict:
    """Referring image segmentation as SAMWISE reports it: overall IoU (summed intersections over summed
    unions), mean IoU, and precision at IoU thresholds (share of samples above each)."""
    tracker = StreamTracker(model, mask_threshold=mask_threshold)
    intersections, unions, ious = 0, 0, []
    for sample in tqdm(dataset.samples, desc="refcoco", unit="sample"):
        (result,) = segment(tracker, [sample.path], sample.caption)
        truth = dataset.ground_truth(sample)
        intersections += int(np.count_nonzero(truth & result.mask))
        unions += int(np.count_nonzero(truth | result.mask))
        ious.append(region_similarity(truth, result.mask))
    ious = np.array(ious)
    return {"overall_iou": intersections / unions if unions else 1.0, "mean_iou": float(ious.mean()),
            **{f"precision@{t}": float(np.mean(ious > t)) for t in (0.5, 0.6, 0.7, 0.8, 0.9)},
            "samples": len(ious)}


def frame_size(path: Path) -> tuple[int, int]:
    """(height, width) of an image file, from its header."""
    with Image.open(path) as image:
        return image.height, image.width


def palette_of(gt_dir: Path) -> list[int] | None:
    """The colours of the ground truth's indexed PNGs, for predictions that look the same."""
    first = next(iter(sorted(Path(gt_dir).glob("*.png"))), None)
    if first is None:
        return None
    with Image.open(first) as image:
        return image.getpalette()


def write_pngs(directory: Path, names: list[str], images: list[np.ndarray], palette=None) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for name, pixels in zip(names, images):
        image = Image.fromarray(pixels)
        if palette:
            image.putpalette(palette)
        image.save(directory / f"{name}.png")
