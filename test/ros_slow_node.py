#!/usr/bin/env python3
"""The real samwise node whose model is made deliberately slow, for the load and start-up tests:

    ros_slow_node.py --min-period 0.1 --ros-args ...   (at most 10 frames per second)
    ros_slow_node.py --load-delay 600 --ros-args ...   (the model takes 10 minutes to load)

Only the tracker's loading and its push are slowed (as a bigger checkpoint or a slower model would
be); everything else is the node of `samwise_node`.
"""

import argparse
import sys
import time

from samwise_ros.ros.node import LoadedTracker, load_tracker, main

LOADING = "ros_slow_node: loading the model"  # printed when the slowed loading starts


class SlowTracker:
    def __init__(self, tracker, min_period: float):
        self._tracker = tracker
        self._min_period = min_period

    def push(self, frame, stamp=None):
        started = time.monotonic()
        results = self._tracker.push(frame, stamp=stamp)
        time.sleep(max(0.0, self._min_period - (time.monotonic() - started)))  # the slow model's time
        return results

    @property
    def mask_threshold(self):
        return self._tracker.mask_threshold

    @mask_threshold.setter
    def mask_threshold(self, value):
        self._tracker.mask_threshold = value

    def __getattr__(self, name):  # set_query, reset, pending_frames, query: as the real tracker
        return getattr(self._tracker, name)


def slow_factory(min_period: float, load_delay: float):
    def factory(settings) -> LoadedTracker:
        print(LOADING, flush=True)
        time.sleep(load_delay)
        loaded = load_tracker(settings)
        loaded.tracker = SlowTracker(loaded.tracker, min_period)
        loaded.model += f" (slowed to {1 / min_period:g} Hz at most)" if min_period else ""
        return loaded

    return factory


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--min-period", type=float, default=0.0, help="seconds per frame at least")
    parser.add_argument("--load-delay", type=float, default=0.0, help="seconds added to loading the model")
    split = sys.argv.index("--ros-args") if "--ros-args" in sys.argv else len(sys.argv)
    options = parser.parse_args(sys.argv[1:split])
    sys.exit(main([sys.argv[0], *sys.argv[split:]],
                  tracker_factory=slow_factory(options.min_period, options.load_delay)))
