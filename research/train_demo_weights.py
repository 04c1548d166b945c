"""samwise-train plus the stand-ins the demo weights were trained with (from scratch, synthetic data).

A tiny model built from scratch lacks what the release starts from: its SAM2 and text encoder are first
pre-trained on stand-in tasks, and auxiliary losses keep its features telling the synthetic shapes apart.
Every samwise-train option applies; run from the repository root:

    python -m research.train_demo_weights --data synthetic --config demo --from-scratch --pretrain-text 1500 \\
        --prompt-attribute-loss --shape-attribute-loss --kinds appearance appearance motion time \\
        --clip-length 5 --epochs 40 --lr 1e-4 --warmup-steps 100 --cosine --output runs/demo
    torchrun --nproc_per_node 2 -m research.train_demo_weights ...
"""

from __future__ import annotations

import argparse

import torch

from samwise_ros.model import Samwise
from samwise_ros.tools import train as samwise_train
from samwise_ros.training.trainer import init_distributed

from .sam2_pretraining import pretrain_sam2
from .shape_attributes import ShapeAttributeLoss
from .text_pretraining import AttributeProbes, pretrain_text_encoder

SAM2_PRETRAINING_SEED_OFFSET = 500_009  # its scenes: neither the training run's nor the held-out ones


def parse_args(argv=None) -> argparse.Namespace:
    parser = samwise_train.build_parser(prog="python -m research.train_demo_weights", doc=__doc__)
    stand_ins = parser.add_argument_group("stand-ins (--from-scratch on --data synthetic)")
    stand_ins.add_argument("--pretrain-text", type=int, default=0, metavar="STEPS",
                           help="first pre-train the text encoder on the synthetic expressions' attributes (a "
                                "stand-in for a pre-trained RoBERTa)")
    stand_ins.add_argument("--pretrain-sam2", type=int, default=0, metavar="STEPS",
                           help="first pre-train SAM2 on its own task, box-prompted tracking of the synthetic "
                                "shapes (a stand-in for a pre-trained SAM2)")
    stand_ins.add_argument("--prompt-attribute-loss", action="store_true",
                           help="keep the decoder's text prompt telling the synthetic attributes apart")
    stand_ins.add_argument("--shape-attribute-loss", action="store_true",
                           help="linear heads must read each pixel's colour, shape and size from the decoder's "
                                "image embedding (training-only heads)")
    args = samwise_train.checked_args(parser, parser.parse_args(argv))
    for flag, used in (("--pretrain-text", args.pretrain_text), ("--pretrain-sam2", args.pretrain_sam2),
                       ("--prompt-attribute-loss", args.prompt_attribute_loss),
                       ("--shape-attribute-loss", args.shape_attribute_loss)):
        if used and (args.data != "synthetic" or not args.from_scratch):  # they know the synthetic expressions only
            parser.error(f"{flag} is for --from-scratch training on --data synthetic")
    return args


def pretrain(args: argparse.Namespace, model: Samwise) -> None:
    """The pre-training stand-ins asked for: SAM2 on prompted tracking, then the text encoder."""
    rank, _ = init_distributed()
    if args.pretrain_sam2:
        iou = pretrain_sam2(model, args.pretrain_sam2, args.clip_length, tuple(args.frame_size), args.batch_size,
                            lr=args.lr, seed=args.seed + SAM2_PRETRAINING_SEED_OFFSET, show_progress=rank == 0)
        print(f"SAM2 pre-trained for {args.pretrain_sam2} steps: tracked-frame IoU {iou:.3f} (last tenth)")
    if args.pretrain_text:
        accuracy = pretrain_text_encoder(model, args.pretrain_text, seed=args.seed)
        print(f"text encoder pre-trained for {args.pretrain_text} steps: attribute accuracy {accuracy:.3f}")


def main(argv=None) -> int:
    args = parse_args(argv)
    device = samwise_train.process_device(args)
    model = samwise_train.build_model(args, device)
    pretrain(args, model)
    torch.manual_seed(args.seed)  # the auxiliary heads' initialisation: the same on every DDP rank
    text_loss = AttributeProbes(model, on_prompt=True).to(device) if args.prompt_attribute_loss else None
    clip_losses = {"shape_attributes": ShapeAttributeLoss(model).to(device)} if args.shape_attribute_loss else {}
    return samwise_train.train(args, model, text_loss, clip_losses)


if __name__ == "__main__":
    raise SystemExit(main())
