"""The tools' console scripts: each starts its tool only once the pip extra the tool needs is installed.

A tool started without its extra says which one to install and exits 2, instead of a traceback at import
or, for samwise-train, a failure at the end of a run (it plots its curves with matplotlib then). The
check looks the packages up without importing them, and the tool's module is imported only after it.

EXTRAS is the one list of the tools' optional packages: setup.py reads it from this file (which must
therefore import nothing outside the standard library).
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from typing import Callable

# extra -> the packages it installs (each imports under its own name)
EXTRAS = {
    "replay": ["rosbags"],  # reading and writing bags
    "eval": ["pycocotools", "scipy"],  # the datasets' RLE masks; DAVIS's one-to-one object matching
    "train": ["matplotlib", "pycocotools"],  # training curves; RefCOCO and the MeViS-format export
}


def missing_packages(extra: str) -> list[str]:
    return [name for name in EXTRAS[extra] if importlib.util.find_spec(name) is None]


def launcher(tool: str, module: str, extra: str) -> Callable[[list[str] | None], int]:
    """The console script `tool`: samwise_ros.tools.<module>.main, once `extra` is installed."""

    def start(argv: list[str] | None = None) -> int:
        missing = missing_packages(extra)
        if missing:
            print(f"{tool} needs the {extra} extra: pip install 'samwise_ros[{extra}]' "
                  f"(missing: {', '.join(missing)})", file=sys.stderr)
            return 2
        return importlib.import_module(f"samwise_ros.tools.{module}").main(argv)

    return start


demo = launcher("samwise-demo", "demo", "eval")  # it scores its masks as samwise-eval does
replay = launcher("samwise-replay", "replay", "replay")
evaluate = launcher("samwise-eval", "eval", "eval")
train = launcher("samwise-train", "train", "train")
synthetic = launcher("samwise-synthetic", "synthetic", "train")  # it writes training data
