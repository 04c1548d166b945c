"""samwise_ros: streaming SAMWISE text-driven video segmentation, as a library and a ROS 2 node."""

import importlib

# The generated ROS messages (samwise_ros.msg) may be installed in another directory of the same
# package name (a colcon install, or the venv's site-packages): merge them into this package.
__path__ = __import__("pkgutil").extend_path(__path__, __name__)

# Imported when first used, so that what needs no torch (the parameter table a launch file reads, the
# messages) loads without it.
_EXPORTS = {"Samwise": ".model", "SamwiseConfig": ".model", "StreamTracker": ".tracker", "TrackResult": ".tracker"}
__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name], __name__), name)
