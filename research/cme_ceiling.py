#!/usr/bin/env python3
"""How much a CME could help a model: held-out synthetic scenes through the tracker (8-frame clips, the
release's window) with the CME replaced by a decision rule, and with a memory written from the truth.

- never: no switch (the CME off);
- label: switch where the release's training label says 1 (the memory-path and memory-less masks
  overlap under 10% of the smaller one): a CME that learned its labels perfectly;
- oracle: switch where the memory-less mask matches the truth clearly better than the memory path's
  (IoU higher by ORACLE_MARGIN): the best decisions any CME could take;
- truth-memory: no switch, but every frame's memory written from its true mask: the most that the mask
  in the memory can give.
Where even oracle and truth-memory leave J&F where never has it, the model's memory does not read the
mask written into it, and the CME, which only rewrites that mask, cannot help this model. The script
also measures that directly: how far frame 1's mask logits move between an all-object and an empty mask
in frame 0's memory (on held-out appearance scenes, whose target is in view from the first frame).

    python -m research.cme_ceiling samwise_ros/weights/demo --kind switch --scenes 30 --frames 16
"""

from __future__ import annotations

import argparse

import cv2
import numpy as np
import torch
from torch import nn

from samwise_ros.data.synthetic import HELD_OUT_SEED_OFFSET, KINDS, SyntheticReferringVideos
from samwise_ros.model import Samwise
from samwise_ros.model.cme import same_object_labels
from samwise_ros.preprocess import resized_shape
from samwise_ros.training.batches import clip_tensors
from samwise_ros.training.evaluation import clip_scores, summarize

RULES = ("never", "label", "oracle", "truth-memory")
ORACLE_MARGIN = 0.2
CLIP_LENGTH = 8


class RuleDecisions(nn.Module):
    """Stands in for the model's CME: records the frame's decodings on their way and decides by `rule`."""

    def __init__(self, model: Samwise, rule: str):
        super().__init__()
        self.model, self.rule = [model], rule  # a list: not a submodule of the module it is installed in
        self.truth: np.ndarray | None = None  # [T, H, W] bool of the clip being segmented
        self.resized_hw: tuple[int, int] = (0, 0)  # its frames' size in the model
        self.frame = -1  # the clip's frame being decoded: the tracker decodes each once, in order
        self.decided = self.switched = 0
        self._with_memory = model.decode_with_memory
        model.decode_with_memory = self.decode_with_memory
        self._encode_memory = model.encode_memory
        if rule == "truth-memory":
            model.encode_memory = self.encode_true_memory
        model.cme = self

    def start(self, clip) -> None:
        """Decide on `clip` next (its true masks and frame size)."""
        self.truth, self.frame = clip.masks, -1
        self.resized_hw = resized_shape(*clip.frames.shape[1:3], self.model[0].image_size)

    def decode_with_memory(self, features, index, memory):
        self.frame += 1
        self.memory_path = self._with_memory(features, index, memory)
        # the model decodes the memory-less mask only on a switch; the rules compare it on every frame
        self.memoryless = self.model[0].decode_without_memory(features, index)
        return self.memory_path

    def encode_true_memory(self, features, index, high_res_logits, decoded):
        h, w = self.resized_hw
        logits = torch.full_like(high_res_logits, -10.0)  # the release writes sigmoid(logits) * 20 - 10
        logits[..., :h, :w] = torch.from_numpy(np.where(self.true_mask(), 10.0, -10.0))
        return self._encode_memory(features, index, logits, decoded)

    def true_mask(self) -> np.ndarray:
        h, w = self.resized_hw
        return cv2.resize(self.truth[self.frame].astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST) > 0

    def mask_logits(self, decoding) -> torch.Tensor:
        """[H, W] logits of a decoding at the resized frame size, empty where its object score says absent."""
        logits = self.model[0].postprocess_logits(decoding.low_res_logits, self.resized_hw, self.resized_hw)[0, 0]
        present = decoding.object_score_logits.view(()) > 0
        return torch.where(present, logits, torch.full_like(logits, -1024.0))

    def forward(self, obj_ptr: torch.Tensor, early_obj_ptr: torch.Tensor) -> torch.Tensor:
        switch = self.decide(self.mask_logits(self.memory_path), self.mask_logits(self.memoryless))
        self.decided += 1
        self.switched += switch
        return torch.tensor([[0.0, 1.0] if switch else [1.0, 0.0]], device=obj_ptr.device)

    def decide(self, memory_logits: torch.Tensor, memoryless_logits: torch.Tensor) -> bool:
        if self.rule == "label":
            score = self.memoryless.object_score_logits.view(1)
            return same_object_labels(memory_logits[None], memoryless_logits[None], score).item() == 1
        if self.rule == "oracle":
            truth = torch.from_numpy(self.true_mask())
            memory_iou, memoryless_iou = iou(memory_logits > 0, truth), iou(memoryless_logits > 0, truth)
            return memoryless_iou > memory_iou + ORACLE_MARGIN
        return False


def iou(a: torch.Tensor, b: torch.Tensor) -> float:
    union = (a | b).sum().item()
    return 1.0 if union == 0 else (a & b).sum().item() / union


def ceiling(model: Samwise, rule: str, kind: str, scenes: int, frames: int) -> dict[str, float]:
    """J, F, J&F of `model` over held-out scenes of `kind` with the CME replaced by `rule`, and the
    switches taken. The model is changed: load a fresh one per rule."""
    decisions = RuleDecisions(model, rule)
    dataset = SyntheticReferringVideos(length=scenes, frames=frames, kinds=(kind,), seed=HELD_OUT_SEED_OFFSET)

    def started_clips():  # clip_scores segments each clip as it is drawn
        for index in range(scenes):
            clip = dataset[index]
            decisions.start(clip)
            yield clip

    scores = clip_scores(model, started_clips(), use_cme=True, clip_length=CLIP_LENGTH)
    return summarize(scores, prefix="") | {"switched": decisions.switched, "decided": decisions.decided}


def memory_mask_effect(model: Samwise, clip) -> tuple[float, float]:
    """(std of the change in frame 1's mask logits between an all-object and an empty mask in frame 0's
    memory, std of frame 1's mask logits): what the mask in the memory does to the next frame."""
    tensors = clip_tensors(clip.frames[:2], clip.masks[:2], clip.expression, model.image_size, model.device)
    with torch.no_grad():
        features = model.encode_clip(tensors.frames, model.tokenize(clip.expression))
        first = model.decode_with_memory(features, 0, model.new_stream_memory())
        logits = []
        for value in (10.0, -10.0):  # the memory encoder's input range (sigmoid(logits) * 20 - 10)
            memory = model.new_stream_memory()
            memory.bank.add(model.encode_memory(features, 0, torch.full_like(first.high_res_logits, value), first))
            logits.append(model.decode_with_memory(features, 1, memory).high_res_logits)
    return (logits[0] - logits[1]).std().item(), logits[1].std().item()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", help="a model directory")
    parser.add_argument("--rules", nargs="+", choices=RULES, default=list(RULES))
    parser.add_argument("--kind", choices=KINDS, default="switch")
    parser.add_argument("--scenes", type=int, default=30)
    parser.add_argument("--frames", type=int, default=16)
    args = parser.parse_args(argv)
    for rule in args.rules:
        result = ceiling(Samwise.load(args.model).eval(), rule, args.kind, args.scenes, args.frames)
        print(f"{rule:13s} J {result['J']:.4f}  F {result['F']:.4f}  J&F {result['JF']:.4f}  "
              f"switched on {result['switched']} of {result['decided']} decided frames")
    model = Samwise.load(args.model).eval()
    # appearance scenes: the target is in view from frame 0 (elsewhere frame 1's logits may be all "absent")
    dataset = SyntheticReferringVideos(length=args.scenes, frames=3, kinds=("appearance",), seed=HELD_OUT_SEED_OFFSET)
    change, spread = np.mean([memory_mask_effect(model, dataset[index]) for index in range(args.scenes)], axis=0)
    print(f"the mask in frame 0's memory (all object vs. empty) moves frame 1's mask logits by std {change:.4f} "
          f"(their std: {spread:.2f}; mean over {args.scenes} held-out appearance scenes)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
