"""Weights shipped inside the package: the demo model, trained by `samwise-train` on this package's
synthetic referring videos (see demo/MODEL_CARD.md). An empty `checkpoint` parameter means these."""

from __future__ import annotations

from pathlib import Path

DEMO_WEIGHTS = Path(__file__).resolve().parent / "demo"


def demo_weights() -> Path:
    """The demo model directory (model.safetensors, samwise_config.json, tokenizer files)."""
    if not (DEMO_WEIGHTS / "model.safetensors").is_file():
        raise FileNotFoundError(f"the bundled demo weights are missing from {DEMO_WEIGHTS} (a damaged install?): "
                                "reinstall samwise_ros, or set the checkpoint parameter")
    return DEMO_WEIGHTS
