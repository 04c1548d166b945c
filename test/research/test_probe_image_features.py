"""research/probe_image_features.py: the cell labels it probes for, and a run on a tiny model."""

import numpy as np
import torch

from research import probe_image_features as probe
from samwise_ros.data.synthetic import ATTRIBUTE_CLASSES, demo_scene


def test_cells_are_labelled_with_the_shape_covering_them():
    scene = demo_scene()  # 240x320: a red ball (the target), a green square, a blue triangle
    labels = probe.cell_labels(scene, image_size=320, resized_hw=(240, 320), cells=20)  # 16 px cells
    ball = scene.shapes[scene.target]
    x, y = ball.centre(0)
    centre = labels[int(y) // 16, int(x) // 16]
    expected = [ATTRIBUTE_CLASSES["colour"].index("red"), ATTRIBUTE_CLASSES["shape"].index("ball"),
                ATTRIBUTE_CLASSES["size"].index(scene.describe(scene.target).size)]
    assert list(centre) == [1, *expected, 1]
    assert list(labels[0, 0]) == [0, -1, -1, -1, -1]  # background, far from every shape
    assert (labels[15:] == -1).all()  # padding below the 240 rows: skipped
    on_shapes = labels[labels[..., 0] == 1]
    assert (on_shapes[:, 4] == 1).sum() >= 4 and (on_shapes[:, 4] == 0).sum() >= 8  # the ball, the others


def test_probes_run_on_a_model_and_report_against_the_majority_class(tiny_model):
    features, labels = probe.features_and_labels(tiny_model, scenes=4, level=2)
    assert features.shape[0] == labels.shape[0] > 0 and labels.shape[1] == 5
    assert torch.allclose(features.mean(0), torch.zeros(features.shape[1]), atol=1e-4)
    separable = torch.cat([torch.randn(50, 4) + 3, torch.randn(50, 4) - 3])[torch.randperm(100)]
    accuracy, majority = probe.probe_accuracy(separable, (separable[:, 0] > 0).long())
    assert accuracy > 0.95 and 0.3 < majority < 0.7
    noise = torch.randn(200, 16)
    accuracy, majority = probe.probe_accuracy(noise, torch.from_numpy(np.arange(200) % 2))
    assert accuracy < 0.75
