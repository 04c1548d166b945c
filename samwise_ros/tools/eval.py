"""samwise-eval: J&F (DAVIS 2017 definitions) of predicted masks, or of a model run on a benchmark.

  samwise-eval masks PRED GT            predicted PNGs against ground truth (DAVIS, per-expression or MeViS)
  samwise-eval video ROOT --dataset ... run a model over Ref-DAVIS17 / MeViS and score it
  samwise-eval image ANNOTATIONS ...    referring image segmentation (RefCOCO/+/g): overall and mean IoU
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np

from ..eval.datasets import Mevis, RefCoco
from ..eval.inference import DATASETS, CmeActivity, EvalJob, evaluate_refcoco, run_videos
from ..eval.scoring import (ObjectScore, score_davis_sequence, score_expression_folders, score_mevis_folder,
                            summarize_davis, summarize_expressions)
from ..model import Samwise
from ..model.checkpoint import CheckpointError
from ..runtime import resolve_device, resolve_precision

LAYOUTS = ("davis", "expressions", "mevis")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="samwise-eval", description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n".join(__doc__.splitlines()[2:]))
    commands = parser.add_subparsers(dest="command", required=True)

    masks = commands.add_parser("masks", help="score predicted PNG masks against ground truth")
    masks.add_argument("predictions", type=Path,
                       help="DAVIS: <seq>/<frame>.png indexed; otherwise <video>/<exp_id>/<frame>.png binary")
    masks.add_argument("ground_truth", type=Path,
                       help="DAVIS Annotations(_unsupervised)/480p, <video>/<exp_id>/<frame>.png, or a MeViS split")
    masks.add_argument("--layout", choices=LAYOUTS, help="default: guessed from the ground truth folder")
    masks.add_argument("--sequences", type=Path, help="DAVIS: a list of sequences (ImageSets/2017/val.txt); "
                                                      "default: the prediction folder's")
    masks.add_argument("--json", type=Path, help="write the scores here")

    video = commands.add_parser("video", help="run a model over a video benchmark and score it")
    video.add_argument("root", type=Path, help="dataset root (Ref-DAVIS17: data/ref-davis, MeViS: data/MeViS_release)")
    video.add_argument("--dataset", choices=sorted(DATASETS), required=True)
    video.add_argument("--split", help="default: valid (Ref-DAVIS17), valid_u (MeViS)")
    video.add_argument("--output", type=Path, required=True, help="folder for the predicted masks and results.json")
    video.add_argument("--workers", type=int, default=1, help="processes, each with its own model (GPUs in turn)")
    add_model_arguments(video)

    image = commands.add_parser("image", help="referring image segmentation on a RefCOCO-style annotation file")
    image.add_argument("annotations", type=Path, help="e.g. refcoco/instances_refcoco_val.json")
    image.add_argument("--images", type=Path, required=True, help="the COCO image folder (train2014)")
    image.add_argument("--json", type=Path, help="write the scores here")
    add_model_arguments(image)
    return parser.parse_args(argv)


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, help="a model directory saved by this package, or a released .pth")
    parser.add_argument("--tokenizer", help="tokenizer directory for a released .pth")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--clip-length", type=int, default=8, help="frames per clip (the release's eval window)")
    parser.add_argument("--threshold", type=float, default=0.5, help="on the mask probability")
    parser.add_argument("--no-cme", dest="use_cme", action="store_false",
                        help="never switch the memory (to measure what the Conditional Memory Encoder adds)")


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        report = {"masks": score_masks, "video": score_video, "image": score_image}[args.command](args)
    except (CheckpointError, FileNotFoundError, ValueError) as err:
        print(f"samwise-eval: error: {err}", file=sys.stderr)
        return 2
    json_path = args.output / "results.json" if args.command == "video" else args.json
    if json_path:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        print(f"scores written to {json_path}")
    return 0


# ---- samwise-eval masks ------------------------------------------------------------------------

def score_masks(args) -> dict:
    layout = args.layout or guess_layout(args.ground_truth)
    if layout == "davis":
        objects = score_davis_folders(args.predictions, args.ground_truth, args.sequences)
        summary = summarize_davis(objects)
        print_davis(objects, summary)
        return {"layout": layout, "overall": summary, "objects": [asdict(o) for o in objects]}
    if layout == "mevis":
        scores = score_mevis_folder(args.predictions, Mevis(args.ground_truth.parent, args.ground_truth.name))
    else:
        scores = score_expression_folders(args.predictions, args.ground_truth)
    summary = summarize_expressions(scores)
    print_expressions(scores, summary)
    return {"layout": layout, "overall": summary, "expressions": [asdict(s) for s in scores]}


def guess_layout(ground_truth: Path) -> str:
    if (ground_truth / "mask_dict.json").is_file():
        return "mevis"
    if any(p.is_dir() for p in ground_truth.glob("*/*")):
        return "expressions"
    return "davis"


def score_davis_folders(pred_root: Path, gt_root: Path, sequence_list: Path | None) -> list[ObjectScore]:
    if sequence_list is not None:
        sequences = [line.strip() for line in sequence_list.read_text().splitlines() if line.strip()]
    else:
        sequences = sorted(p.name for p in pred_root.iterdir() if p.is_dir())
    if not sequences:
        raise FileNotFoundError(f"no sequence folders in {pred_root}")
    return [score for sequence in sequences
            for score in score_davis_sequence(sequence, gt_root / sequence, pred_root / sequence)]


# ---- samwise-eval video ------------------------------------------------------------------------

def score_video(args) -> dict:
    job = EvalJob(args.dataset, args.root, args.split or DATASETS[args.dataset][1], args.output,
                  str(args.checkpoint), args.tokenizer, args.device, args.precision, args.clip_length, args.threshold,
                  args.use_cme)
    dataset, per_video = run_videos(job, args.workers)
    if args.dataset == "ref-davis17":
        return report_ref_davis(per_video)
    scores = [score for video_scores, _ in per_video for score in video_scores]
    cme = sum((activity for _, activity in per_video), CmeActivity())
    print(f"CME: decided on {cme.decided} frames, switched the memory on {cme.switched}"
          + ("" if job.use_cme else " (--no-cme)"))
    if not dataset.has_ground_truth:
        print(f"{job.split} has no ground truth: masks written to {args.output / 'Annotations'}")
        return {"dataset": args.dataset, "split": job.split, "cme": asdict(cme), "expressions": []}
    summary = summarize_expressions(scores)
    print_expressions(scores, summary)
    return {"dataset": args.dataset, "split": job.split, "overall": summary, "cme": asdict(cme),
            "expressions": [asdict(s) for s in scores]}


def report_ref_davis(per_video: list[dict[int, list[ObjectScore]]]) -> dict:
    """Each annotator's expressions are a separate DAVIS evaluation; the benchmark reports their mean."""
    annotators = sorted({annotator for video in per_video for annotator in video})
    summaries = []
    for annotator in annotators:
        objects = [score for video in per_video for score in video[annotator]]
        print(f"\nannotator {annotator}")
        summaries.append(summarize_davis(objects))
        print_davis(objects, summaries[-1])
    overall = {key: float(np.mean([s[key] for s in summaries])) for key in summaries[0] if key != "objects"}
    print(f"\nmean of the {len(annotators)} annotators: " + "  ".join(f"{k} {v:.4f}" for k, v in overall.items()))
    return {"dataset": "ref-davis17", "overall": overall,
            "annotators": [{"annotator": a, "overall": s,
                            "objects": [asdict(o) for video in per_video for o in video[a]]}
                           for a, s in zip(annotators, summaries)]}


# ---- samwise-eval image ------------------------------------------------------------------------

def score_image(args) -> dict:
    dataset = RefCoco(args.annotations, args.images)
    if not dataset.samples:
        raise ValueError(f"{args.annotations} has no annotated sentences")
    device = resolve_device(args.device)
    model = Samwise.from_path(args.checkpoint, args.tokenizer, device, resolve_precision(args.precision, device))
    summary = evaluate_refcoco(model, dataset, args.threshold)
    print("  ".join(f"{key} {value:.4f}" if isinstance(value, float) else f"{key} {value}"
                    for key, value in summary.items()))
    return {"annotations": str(args.annotations), "overall": summary}


# ---- tables --------------------------------------------------------------------------------------

def print_davis(objects: list[ObjectScore], summary: dict) -> None:
    print(f"{'sequence_object':<32} {'J-Mean':>8} {'F-Mean':>8}")
    for o in objects:
        print(f"{o.sequence + '_' + str(o.object_id):<32} {o.j[0]:8.4f} {o.f[0]:8.4f}")
    print("  ".join(f"{key} {value:.4f}" if isinstance(value, float) else f"{key} {value}"
                    for key, value in summary.items()))


def print_expressions(scores, summary: dict) -> None:
    print(f"{'video/expression':<40} {'J':>8} {'F':>8} {'J&F':>8}")
    for s in scores:
        print(f"{s.video + '/' + s.exp_id:<40} {s.j:8.4f} {s.f:8.4f} {(s.j + s.f) / 2:8.4f}")
    print(f"{'overall (' + str(summary['expressions']) + ' expressions)':<40} "
          f"{summary['J']:8.4f} {summary['F']:8.4f} {summary['J&F']:8.4f}")


if __name__ == "__main__":
    raise SystemExit(main())
