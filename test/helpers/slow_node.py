#!/usr/bin/env python3
"""The real samwise node whose model is made slow, for the load and start-up tests:

    slow_node.py --hold-file PATH --ros-args ...   (each frame waits while PATH exists)
    slow_node.py --load-delay 600 --ros-args ...   (the model takes 10 minutes to load)

Only the tracker's loading and its push are slowed (as a bigger checkpoint or a slower model would
be); everything else is the node of `samwise_node`. The hold file makes the model busy for exactly as
long as a test wants, whatever the machine's speed.
"""

import argparse
import sys
import time
from pathlib import Path

from samwise_ros.ros.node import LoadedTracker, load_tracker, main

LOADING = "slow_node: loading the model"  # printed when the slowed loading starts
HOLD_POLL_S = 0.01


class HeldTracker:
    """The node's tracker, whose push waits while the hold file exists."""

    def __init__(self, tracker, hold_file: Path):
        self._tracker = tracker
        self._hold_file = hold_file

    def push(self, frame, stamp=None):
        while self._hold_file.exists():
            time.sleep(HOLD_POLL_S)
        return self._tracker.push(frame, stamp=stamp)

    @property
    def mask_threshold(self):
        return self._tracker.mask_threshold

    @mask_threshold.setter
    def mask_threshold(self, value):
        self._tracker.mask_threshold = value

    def __getattr__(self, name):  # set_query, reset, pending_frames, query: as the real tracker
        return getattr(self._tracker, name)


def slow_factory(hold_file: Path | None, load_delay: float):
    def factory(settings) -> LoadedTracker:
        print(LOADING, flush=True)
        time.sleep(load_delay)
        loaded = load_tracker(settings)
        if hold_file is not None:
            loaded.tracker = HeldTracker(loaded.tracker, hold_file)
            loaded.model += f" (held while {hold_file} exists)"
        return loaded

    return factory


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hold-file", type=Path, help="every frame waits while this file exists")
    parser.add_argument("--load-delay", type=float, default=0.0, help="seconds added to loading the model")
    split = sys.argv.index("--ros-args") if "--ros-args" in sys.argv else len(sys.argv)
    options = parser.parse_args(sys.argv[1:split])
    sys.exit(main([sys.argv[0], *sys.argv[split:]],
                  tracker_factory=slow_factory(options.hold_file, options.load_delay)))
