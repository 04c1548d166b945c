"""samwise-synthetic: write synthetic referring videos as a MeViS-layout split for samwise-eval.

    samwise-synthetic data/held_out_time --kinds time --count 30      # held out: samwise-train's eval seed
    samwise-eval video data/held_out_time --dataset mevis --checkpoint MODEL --output out/time [--no-cme]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..data.export import write_mevis_split
from ..data.synthetic import DEFAULT_KINDS, HELD_OUT_SEED_OFFSET, KINDS, SyntheticReferringVideos


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="samwise-synthetic", description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("root", type=Path, help="dataset root to create")
    parser.add_argument("--split", default="valid_u")
    parser.add_argument("--kinds", nargs="+", choices=KINDS, default=list(DEFAULT_KINDS),
                        help="expression kinds")
    parser.add_argument("--count", type=int, default=30, help="videos")
    parser.add_argument("--frames", type=int, default=8, help="frames per video")
    parser.add_argument("--size", type=int, nargs=2, default=(240, 320), metavar=("H", "W"))
    parser.add_argument("--seed", type=int, default=HELD_OUT_SEED_OFFSET,
                        help="scene seed (default: the held-out seed samwise-train scores on, never trained on)")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if (args.root / args.split).exists():
        raise SystemExit(f"samwise-synthetic: {args.root / args.split} exists already")
    clips = SyntheticReferringVideos(length=args.count, frames=args.frames, size=tuple(args.size),
                                     kinds=tuple(args.kinds), seed=args.seed)
    directory = write_mevis_split((clips[index] for index in range(len(clips))), args.root, args.split)
    print(f"{len(clips)} videos ({', '.join(args.kinds)}) written to {directory}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
