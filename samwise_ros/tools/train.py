"""samwise-train: train SAMWISE's adapters, prompt MLP and CME (SAM2 and the text encoder frozen),
or a whole tiny model from scratch; resumable; runs under torchrun for several GPUs or processes.
(The stand-in pre-training and auxiliary losses the demo weights were trained with: research/.)

    samwise-train --data synthetic --config tiny --from-scratch --epochs 10 --output runs/demo
    samwise-train --data mevis --data-root MeViS_release --init final_model_mevis.pth --tokenizer roberta-base/
    samwise-train --data ytvos --data-root ref-youtube-vos --sam2-checkpoint sam2_hiera_base_plus.pt \\
                  --text-encoder roberta-base/ --lr 1e-5
    torchrun --nproc_per_node 2 -m samwise_ros.tools.train ...
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from ..data.synthetic import DEFAULT_KINDS, HELD_OUT_SEED_OFFSET, KINDS, SyntheticReferringVideos, scene_corpus
from ..model import Samwise, SamwiseConfig
from ..model.samwise import TRAINABLE_MODULES
from ..model.tokenizer import train_roberta_tokenizer
from ..runtime import resolve_device
from ..training.evaluation import clip_scores, decoder_input_scales, summarize
from ..training.trainer import LAST, Trainer, TrainSettings, init_distributed


PRESETS = ("tiny", "demo", "official")


def build_parser(prog: str = "samwise-train", doc: str = __doc__) -> argparse.ArgumentParser:
    """samwise-train's options; `prog` and `doc` name a tool that adds its own (research/)."""
    parser = argparse.ArgumentParser(prog=prog, description=doc.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=doc)
    data = parser.add_argument_group("data")
    data.add_argument("--data", choices=("synthetic", "ytvos", "mevis", "refcoco"), default="synthetic")
    data.add_argument("--data-root", type=Path, help="dataset folder (not for synthetic)")
    data.add_argument("--refcoco-dataset", default="refcoco", help="refcoco, refcoco+ or refcocog")
    data.add_argument("--clip-length", type=int, default=8, help="T frames per training clip")
    data.add_argument("--history-clips", type=int, default=0, metavar="K",
                      help="train on streams: K earlier clips fill the memory (no gradients), the losses "
                           "are on the clip after them (video data)")
    data.add_argument("--train-size", type=int, default=2000, help="synthetic clips per epoch")
    data.add_argument("--eval-size", type=int, default=24, help="held-out synthetic clips scored each epoch")
    data.add_argument("--kinds", nargs="+", choices=KINDS, default=list(DEFAULT_KINDS),
                      help="synthetic expression kinds")
    data.add_argument("--expressions-per-scene", type=int, default=1, metavar="N",
                      help="synthetic training clips: N consecutive clips share a scene and refer to different shapes")
    data.add_argument("--frame-size", type=int, nargs=2, default=(120, 160), metavar=("H", "W"))
    model = parser.add_argument_group("model (one of)")
    model.add_argument("--init", type=Path, help="a saved model directory or a released .pth to fine-tune")
    model.add_argument("--tokenizer", type=Path, help="tokenizer directory for a released .pth")
    model.add_argument("--sam2-checkpoint", type=Path, help="SAM2 .pt (with --text-encoder): fresh adapters")
    model.add_argument("--text-encoder", type=Path, help="transformers RoBERTa or CLIP directory")
    model.add_argument("--config", choices=PRESETS, default="tiny", help="random weights of a preset")
    training = parser.add_argument_group("training")
    training.add_argument("--from-scratch", action="store_true", help="train every parameter (tiny models)")
    training.add_argument("--train-only", nargs="+", choices=TRAINABLE_MODULES, metavar="MODULE",
                          help=f"train only these of the release's modules ({', '.join(TRAINABLE_MODULES)}), "
                               "e.g. cme on streams where the memory must switch")
    training.add_argument("--memoryless-mask-loss", action="store_true",
                          help="also train the memory-less decodings the CME compares against (focal + dice)")
    training.add_argument("--epochs", type=int, default=1)
    training.add_argument("--batch-size", type=int, default=2)
    training.add_argument("--lr", type=float, default=1e-5, help="the paper: 1e-4 pre-training, 1e-5 on video")
    training.add_argument("--lr-scale", nargs="+", default=[], metavar="PREFIX=FACTOR",
                          help="learning-rate multipliers of the parameters whose names start with PREFIX, "
                               "e.g. sam.memory_encoder=20")
    training.add_argument("--warmup-steps", type=int, default=0, help="linear learning-rate warm-up")
    training.add_argument("--cosine", action="store_true", help="cosine learning-rate decay to 0 at the end")
    training.add_argument("--clip-max-norm", type=float, default=1.0)
    training.add_argument("--workers", type=int, default=0, help="data-loading processes")
    training.add_argument("--device", default="auto")
    training.add_argument("--precision", choices=("bf16", "fp32"), default="bf16",
                          help="on CUDA: bf16 autocast (the release's) or plain float32")
    training.add_argument("--seed", type=int, default=0)
    training.add_argument("--output", type=Path, default=Path("runs/samwise"))
    training.add_argument("--resume", action="store_true", help="continue from OUTPUT/last")
    return parser


def parse_args(argv=None) -> argparse.Namespace:
    parser = build_parser()
    return checked_args(parser, parser.parse_args(argv))


def checked_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> argparse.Namespace:
    """`args` with --lr-scale parsed; the parser's error on options that do not go together."""
    try:
        args.lr_scale = {prefix: float(factor) for prefix, factor in (item.split("=") for item in args.lr_scale)}
    except ValueError:
        parser.error(f"--lr-scale takes PREFIX=FACTOR items, got {args.lr_scale}")
    if args.train_only and args.from_scratch:
        parser.error("--train-only picks among the release's modules; --from-scratch trains every parameter")
    if args.history_clips < 0 or (args.history_clips and args.data == "refcoco"):
        parser.error("--history-clips takes K >= 0 earlier clips of video data (not refcoco's images)")
    return args


def stream_length(args: argparse.Namespace) -> int:
    """Frames per training sample: the trained clip and the clips before it."""
    return args.clip_length * (args.history_clips + 1)


def build_dataset(args: argparse.Namespace, seed: int, length: int, expressions_per_scene: int = 1):
    if args.data == "synthetic":
        return SyntheticReferringVideos(length=length, frames=stream_length(args), size=tuple(args.frame_size),
                                        kinds=tuple(args.kinds), seed=seed, expressions_per_scene=expressions_per_scene)
    if args.data_root is None:
        raise SystemExit(f"--data {args.data} needs --data-root")
    if args.data == "ytvos":
        from ..data.refvos import RefYouTubeVOS

        return RefYouTubeVOS(args.data_root, frames=stream_length(args), seed=seed)
    if args.data == "mevis":
        from ..data.refvos import MeViS

        return MeViS(args.data_root, frames=stream_length(args), seed=seed)
    from ..data.refcoco import RefCOCO

    return RefCOCO.from_root(args.data_root, dataset=args.refcoco_dataset, split="train")


def build_model(args: argparse.Namespace, device: torch.device) -> Samwise:
    if args.init is not None:
        return Samwise.from_path(args.init, args.tokenizer, device)
    if args.sam2_checkpoint is not None or args.text_encoder is not None:
        if args.sam2_checkpoint is None or args.text_encoder is None:
            raise SystemExit("--sam2-checkpoint and --text-encoder go together")
        return Samwise.from_pretrained(args.sam2_checkpoint, args.text_encoder, device=device)
    tokenizer = train_roberta_tokenizer(scene_corpus(), args.output / "tokenizer", vocab_size=512)
    torch.manual_seed(args.seed)
    config = (SamwiseConfig.official() if args.config == "official"
              else getattr(SamwiseConfig, args.config)(vocab_size=len(tokenizer)))
    return Samwise(config, tokenizer=tokenizer).prepare(device)


def scores_by_kind(model: Samwise, held_out: SyntheticReferringVideos) -> dict[str, float]:
    """J, F, J&F over all held-out clips, J&F per expression kind (appearance, motion, time), and the
    scales of the decoder's inputs on the first clip."""
    scores = clip_scores(model, (held_out[index] for index in range(len(held_out))))
    overall = summarize(scores)
    for kind in held_out.kinds:
        of_kind = [score for index, score in enumerate(scores) if held_out.kind(index) == kind]
        if of_kind:  # fewer held-out clips than kinds leaves some out
            overall[f"eval_JF_{kind}"] = summarize(of_kind)["eval_JF"]
    return overall | {f"eval_{name}": value for name, value in decoder_input_scales(model, held_out[0]).items()}


def process_device(args: argparse.Namespace) -> torch.device:
    """This process's device (under torchrun, each rank's own GPU); the output directory created."""
    rank, _ = init_distributed()
    device = resolve_device(args.device)
    if device.type == "cuda" and rank:
        device = torch.device("cuda", rank % torch.cuda.device_count())
    args.output.mkdir(parents=True, exist_ok=True)
    return device


def main(argv=None) -> int:
    args = parse_args(argv)
    return train(args, build_model(args, process_device(args)))


def train(args: argparse.Namespace, model: Samwise, text_loss: torch.nn.Module | None = None,
          clip_losses: dict[str, torch.nn.Module] | None = None) -> int:
    """Train `model` as `args` say, with the Trainer's auxiliary losses if given (research/); `--init`
    with a run directory also brings the auxiliary heads saved there."""
    torch.manual_seed(args.seed)  # training's random draws (dropout): the same on every DDP rank and every run
    evaluate = None
    if args.data == "synthetic" and args.eval_size > 0:
        held_out = build_dataset(args, seed=args.seed + HELD_OUT_SEED_OFFSET, length=args.eval_size)
        evaluate = lambda m: scores_by_kind(m, held_out)  # noqa: E731

    settings = TrainSettings(output=args.output, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                             clip_max_norm=args.clip_max_norm, from_scratch=args.from_scratch,
                             modules=tuple(args.train_only or TRAINABLE_MODULES), lr_scales=args.lr_scale,
                             seed=args.seed,
                             workers=args.workers, warmup_steps=args.warmup_steps, cosine=args.cosine,
                             memoryless_mask_loss=args.memoryless_mask_loss, precision=args.precision,
                             history_clips=args.history_clips)
    training_set = build_dataset(args, args.seed, args.train_size, args.expressions_per_scene)
    trainer = Trainer(model, training_set, settings, evaluate, text_loss, clip_losses)
    if args.resume:
        trainer.resume(args.output / LAST)
    elif args.init is not None and args.init.is_dir():
        if trainer.warm_start_auxiliary(args.init) and trainer.is_main:
            print(f"auxiliary heads from {args.init}")
    progress = trainer.fit()
    if trainer.is_main:
        last = progress.history[-1] if progress.history else {}
        print(f"trained {progress.epoch} epochs, {progress.step} steps; last epoch: "
              + ", ".join(f"{k} {v:.4f}" for k, v in last.items() if isinstance(v, float)))
        print(f"model: {args.output / LAST}   logs: {args.output / 'epochs.csv'}   curves: {args.output / 'curves.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
