#!/usr/bin/env python3
"""Linear probes on a model's image features: which attributes of the synthetic shapes they encode.

For the first frame of held-out synthetic appearance scenes, every cell of one backbone level (after the
text fusion and the neck; level 2 is the stride-16 embedding the mask decoder attends to) is labelled
with the shape covering most of it (at least 30%) or background. Linear probes trained on 70% of the
cells and scored on the rest say whether a cell's features tell foreground, colour, shape, size and
"is the referred shape" (a majority-class baseline beside each).

    python -m research.probe_image_features samwise_ros/weights/demo --scenes 150 --level 2
"""

from __future__ import annotations

import argparse

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from samwise_ros.data.synthetic import ATTRIBUTE_CLASSES, HELD_OUT_SEED_OFFSET, SyntheticReferringVideos
from samwise_ros.model import Samwise
from samwise_ros.training.batches import clip_tensors

MIN_COVER = 0.3
TRAIN_SHARE = 0.7


def cell_labels(scene, image_size: int, resized_hw: tuple[int, int], cells: int) -> np.ndarray:
    """[cells, cells, 5]: foreground, colour, shape, size, is-target per cell; -1 for a cell to skip."""
    _, shape_index = scene.render_labelled(0)
    shape_index = cv2.resize(shape_index.astype(np.float32), resized_hw[::-1], interpolation=cv2.INTER_NEAREST)
    padded = np.full((image_size, image_size), -1, np.int64)
    padded[: resized_hw[0], : resized_hw[1]] = shape_index
    attributes = np.concatenate([scene.attribute_maps(padded[None])[0], (padded == scene.target)[None]])
    step = image_size // cells
    labels = np.full((cells, cells, 5), -1, np.int64)
    for y in range(cells):
        for x in range(cells):
            if y * step >= resized_hw[0] or x * step >= resized_hw[1]:
                continue  # padding
            block = padded[y * step : (y + 1) * step, x * step : (x + 1) * step]
            ids, counts = np.unique(block[block >= 0], return_counts=True)
            if not len(ids):
                labels[y, x, 0] = 0
            elif counts.max() >= MIN_COVER * block.size:
                cy, cx = np.argwhere(block == ids[counts.argmax()])[0] + (y * step, x * step)
                labels[y, x] = [1, *attributes[:, cy, cx]]
    return labels


def features_and_labels(model: Samwise, scenes: int, level: int) -> tuple[torch.Tensor, torch.Tensor]:
    clips = SyntheticReferringVideos(length=scenes, frames=3, kinds=("appearance",), seed=HELD_OUT_SEED_OFFSET)
    features, labels = [], []
    for index in range(scenes):
        clip = clips[index]
        tensors = clip_tensors(clip.frames[:1], clip.masks[:1], clip.expression, model.image_size, model.device)
        with torch.no_grad():
            encoded = model.encode_clip(tensors.frames, model.tokenize(clip.expression))
        cells = encoded.feat_sizes[level][0]
        features.append(encoded.vision_feats[level][:, 0].reshape(cells * cells, -1).float())
        labels.append(torch.from_numpy(cell_labels(clips.scene(index), model.image_size,
                                                   tuple(tensors.frames.shape[-2:]), cells)).reshape(-1, 5))
    features, labels = torch.cat(features), torch.cat(labels)
    kept = labels[:, 0] >= 0
    features = features[kept]
    return (features - features.mean(0)) / (features.std(0) + 1e-6), labels[kept]


def probe_accuracy(features: torch.Tensor, targets: torch.Tensor, steps: int = 300) -> tuple[float, float]:
    """(test accuracy of a linear probe, majority-class share of the test cells)."""
    split = int(TRAIN_SHARE * len(features))
    torch.manual_seed(0)
    probe = torch.nn.Linear(features.shape[1], int(targets.max()) + 1)
    optimizer = torch.optim.Adam(probe.parameters(), lr=1e-2, weight_decay=1e-3)
    for _ in range(steps):
        loss = F.cross_entropy(probe(features[:split]), targets[:split])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    test = targets[split:]
    with torch.no_grad():
        accuracy = (probe(features[split:]).argmax(1) == test).float().mean().item()
    return accuracy, torch.bincount(test).max().item() / len(test)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="a saved model directory")
    parser.add_argument("--scenes", type=int, default=150)
    parser.add_argument("--level", type=int, default=2, help="backbone level: 0 stride 4, 1 stride 8, 2 stride 16")
    args = parser.parse_args()
    model = Samwise.load(args.model).eval()
    features, labels = features_and_labels(model, args.scenes, args.level)
    shapes = labels[:, 0] == 1
    print(f"{args.model}: level {args.level}, {len(labels)} cells, {int(shapes.sum())} on shapes")
    names = ["foreground", *ATTRIBUTE_CLASSES, "referred shape"]
    for column, name in enumerate(names):
        rows = slice(None) if column == 0 else shapes
        accuracy, majority = probe_accuracy(features[rows], labels[rows, column])
        print(f"  {name:15s} probe accuracy {accuracy:.3f}   majority class {majority:.3f}")


if __name__ == "__main__":
    main()
