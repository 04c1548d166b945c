"""research/mask_picks.py: attributing a mask to a shape, and a tally on a tiny model."""

import numpy as np

from research import mask_picks as picks
from samwise_ros.data.synthetic import demo_scene


def test_a_mask_is_attributed_to_the_shape_it_covers_most():
    scene = demo_scene()  # a red ball (the target), a green square, a blue triangle; all large
    ball, square = scene.target, 0
    assert picks.picked_shape(scene, 0, scene.footprint(ball, 0)) == ball
    both = scene.footprint(square, 0) | scene.footprint(ball, 0)
    assert picks.picked_shape(scene, 0, both) == square  # the square is larger than the ball
    assert picks.picked_shape(scene, 0, np.zeros_like(both)) is None

    assert picks.attribute_difference(scene, square, ball) == "shape+colour"
    truth = scene.render(0)[1]
    assert picks.frame_outcome(scene, 0, scene.footprint(square, 0), truth) == "look-alike (shape+colour)"
    assert picks.frame_outcome(scene, 0, truth, truth) == "target"
    assert picks.frame_outcome(scene, 0, scene.footprint(square, 0), np.zeros_like(truth)) == "absent: false positive"


def test_tally_counts_every_frame_and_splits_appears_later_scenes(tiny_model):
    outcomes, target_j = picks.tally(tiny_model, "time", scenes=2, frames=4)
    assert sum(outcomes.values()) == 2 * 4
    assert all(name.startswith(("before it appears: ", "after: ")) for name in outcomes)
    assert sum(n for name, n in outcomes.items() if name.startswith("before")) >= 2  # each target appears at frame >= 1
    assert np.isnan(target_j) or 0.0 <= target_j <= 1.0
