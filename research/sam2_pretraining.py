"""Pre-training the SAM2 of a model built from scratch on SAM2's own task, before SAMWISE's training.

SAMWISE starts from a pre-trained SAM2 that already segments objects and tracks them through its
memory. A tiny model trained from scratch on referring expressions alone has to learn what an object
is, where its edges are and which of several look-alikes is meant all at once, from one expression per
clip, and its memory learns nothing (the expression on every frame makes it unnecessary). This stage
gives it what SAM2's pre-training gives: promptable video segmentation of every shape in the synthetic
scenes, a box on the first frame and the memory alone after it (SAM2's image encoder, memory and heads;
no text, no adapters). The expressions then only have to say which object.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm

from samwise_ros.data.synthetic import Scene, SyntheticReferringVideos
from samwise_ros.model import Samwise
from samwise_ros.model.samwise import ClipFeatures, TrainFrameOutput
from samwise_ros.training.batches import clip_tensors
from samwise_ros.training.losses import mask_losses
from samwise_ros.training.trainer import lr_factor, presence_loss

MIN_PROMPT_PIXELS = 40  # an object gets a box on the first frame only when this much of it shows
BOX_JITTER = 0.1  # each box side moves by up to this fraction of the box's size (SAM2 trains on noisy boxes)
BOX_LABELS = (2, 3)  # SAM2's point labels of a box's top-left and bottom-right corners


@dataclass
class PromptedTrack:
    frames: np.ndarray  # [T, H, W, 3] uint8
    masks: np.ndarray  # [T, H, W] bool: the visible pixels of the tracked shape
    box: np.ndarray  # [4] float (x0, y0, x1, y1) around the shape on frame 0, in pixels, jittered


def prompted_track(scene: Scene, num_frames: int, rng: np.random.Generator) -> PromptedTrack | None:
    """One shape of `scene` that shows on the first frame, with its masks and a box; None if none shows."""
    _, labels = scene.render_labelled(0)
    visible = [index for index in range(len(scene.shapes)) if (labels == index).sum() >= MIN_PROMPT_PIXELS]
    if not visible:
        return None
    tracked = replace(scene, target=int(rng.choice(visible)))
    frames, masks = map(np.stack, zip(*tracked.frames(num_frames)))
    rows, cols = np.nonzero(masks[0])
    box = np.array([cols.min(), rows.min(), cols.max() + 1, rows.max() + 1], dtype=np.float32)
    side = np.tile(box[2:] - box[:2], 2)
    box = box + rng.uniform(-BOX_JITTER, BOX_JITTER, 4) * side
    return PromptedTrack(frames, masks, box)


def encode_frames_without_text(model: Samwise, frames: Tensor) -> ClipFeatures:
    """frames: [T, 3, h, w] normalised, through SAM2's own image encoder: no adapters, no text (one row
    whose sentence state is empty, [1, T, 0])."""
    frames = model._pad_to_input(frames)
    vision_feats, vision_pos, feat_sizes = model._forward_neck(model.sam.image_encoder.trunk(frames))
    return ClipFeatures(vision_feats, vision_pos, feat_sizes, frames.new_zeros(1, frames.shape[0], 0), None)


def forward_prompted(model: Samwise, frames: Tensor, points: Tensor, labels: Tensor) -> list[TrainFrameOutput]:
    """SAM2's own task, promptable video segmentation, without text or adapters: the prompt on the
    first frame, the memory alone after it. points [1, P, 2] (x, y) in pixels of the resized frames,
    labels [1, P] as SAM2 takes them (1 positive, 0 negative, 2 and 3 a box's corners)."""
    features = encode_frames_without_text(model, frames)
    memory = model.new_stream_memory()
    resized_hw = tuple(frames.shape[-2:])
    outputs = []
    for index in range(frames.shape[0]):
        pix_feat = model._condition_on_memory(features, index, memory)
        prompt = {"point_coords": points, "point_labels": labels} if index == 0 else None
        decoded = model._run_sam_heads(pix_feat, features.high_res_feats(index), prompt)
        memory.bank.add(model.encode_memory(features, index, decoded.high_res_logits, decoded))
        masks = model.postprocess_logits(decoded.low_res_logits, resized_hw, resized_hw)
        outputs.append(TrainFrameOutput(masks, decoded.object_score_logits, None, None))
    return outputs


def track_loss(model: Samwise, track: PromptedTrack) -> tuple[Tensor, float]:
    """Focal + dice over the clip and SAM2's object-score loss; also the mean IoU of the frames after the
    first (what the memory alone tracked)."""
    tensors = clip_tensors(track.frames, track.masks, "", model.image_size, model.device)
    (height, width), (resized_height, resized_width) = track.frames.shape[1:3], tensors.frames.shape[-2:]
    scale = np.array([resized_width / width, resized_height / height] * 2)  # x0, y0, x1, y1
    points = torch.as_tensor(track.box * scale, dtype=torch.float32, device=model.device).view(1, 2, 2)
    labels = torch.tensor([BOX_LABELS], dtype=torch.int32, device=model.device)
    outputs = forward_prompted(model, tensors.frames, points, labels)
    focal, dice = mask_losses([out.mask_logits for out in outputs], tensors.masks)
    loss = focal + dice + presence_loss(outputs, tensors.masks)
    with torch.no_grad():
        predicted = torch.cat([out.mask_logits for out in outputs[1:]])[:, 0] > 0
        truth = tensors.masks[1:] > 0.5
        union = (predicted | truth).flatten(1).sum(1)
        iou = ((predicted & truth).flatten(1).sum(1) / union.clamp(min=1)).where(union > 0, 1.0)
    return loss, iou.mean().item()


def pretrain_sam2(model: Samwise, steps: int, frames: int, size: tuple[int, int], batch_size: int = 2,
                  lr: float = 6e-4, warmup_steps: int = 100, seed: int = 0, show_progress: bool = True) -> float:
    """Train `model.sam` (every SAM2 module) for `steps` steps of `batch_size` prompted tracks on new
    synthetic scenes, Adam with warm-up and cosine decay; returns the tracked frames' mean IoU over the
    last tenth of the steps."""
    torch.manual_seed(seed)
    scenes = SyntheticReferringVideos(length=steps * batch_size, frames=frames, size=size, seed=seed)
    rng = np.random.default_rng(seed)
    parameters = list(model.sam.parameters())
    optimizer = torch.optim.AdamW(parameters, lr=lr, weight_decay=0.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, steps, warmup_steps, True))
    model.train()
    last_ious, tail = [], max(1, math.ceil(steps / 10))
    bar = tqdm(range(steps), desc="SAM2 pre-training", disable=not show_progress)
    for step in bar:
        tracks = [prompted_track(scenes.scene(step * batch_size + k), frames, rng) for k in range(batch_size)]
        results = [track_loss(model, track) for track in tracks if track is not None]
        if not results:
            continue
        loss = torch.stack([loss for loss, _ in results]).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(parameters, 1.0)
        optimizer.step()
        scheduler.step()
        iou = float(np.mean([iou for _, iou in results]))
        if step >= steps - tail:
            last_ious.append(iou)
        bar.set_postfix(loss=f"{loss.item():.4f}", tracked_iou=f"{iou:.3f}")
    model.eval()
    return float(np.mean(last_ious)) if last_ious else float("nan")
