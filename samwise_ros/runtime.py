"""What the node and the tools build alike: which device and which precision `auto` means, and the model
and tracker that the node's parameters (samwise_ros/params.py) describe."""

from __future__ import annotations

from pathlib import Path

import torch

from .model import Samwise
from .tracker import StreamTracker
from .weights import demo_weights


def resolve_device(name: str) -> torch.device:
    """`auto` (CUDA when present), `cpu` or `cuda:N`; a CUDA device that is not there is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} requested but CUDA is not available")
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"device must be auto, cpu or cuda:N, got {name!r}")
    return device


def resolve_precision(name: str, device: torch.device) -> str:
    """`auto` is bf16 on CUDA and fp32 on the CPU."""
    if name == "auto":
        return "bf16" if device.type == "cuda" else "fp32"
    if name not in ("fp32", "bf16", "fp16"):
        raise ValueError(f"precision must be auto, fp32, bf16 or fp16, got {name!r}")
    return name


def model_from_parameters(parameters: dict) -> Samwise:
    """The model the node loads: `checkpoint` (empty: the bundled demo weights) with `tokenizer`, on
    `device` in `precision`. A released .pth carries no tokenizer: without the `tokenizer` parameter it is
    refused before anything is read."""
    checkpoint = parameters["checkpoint"] or demo_weights()
    device = resolve_device(parameters["device"])
    precision = resolve_precision(parameters["precision"], device)
    if Path(checkpoint).is_file() and not parameters["tokenizer"]:
        raise ValueError(f"checkpoint {checkpoint}: a released .pth carries no tokenizer: set the tokenizer "
                         "parameter to a directory with its tokenizer files (e.g. roberta-base)")
    model = Samwise.from_path(checkpoint, parameters["tokenizer"] or None, device, precision)
    if model.tokenizer is None:
        raise ValueError(f"checkpoint {checkpoint}: no tokenizer in it: set the tokenizer parameter to a directory "
                         "with the tokenizer files")
    return model


def tracker_from_parameters(model: Samwise, parameters: dict) -> StreamTracker:
    """A StreamTracker with the node's settings."""
    return StreamTracker(model, clip_length=parameters["clip_length"], mode=parameters["mode"],
                         frame_window=parameters["frame_window"] or None,  # 0: clip_length
                         mask_threshold=parameters["mask_threshold"], use_cme=parameters["use_cme"],
                         cme_window=parameters["cme_window"],
                         precision=model.precision, compile=parameters["compile"])
