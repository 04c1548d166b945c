"""Choices shared by the node and the tools: which device and which precision `auto` means."""

from __future__ import annotations

import torch


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
