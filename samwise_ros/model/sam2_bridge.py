"""SAM2 from the `sam2` package, with the two hooks SAMWISE needs.

- `PromptTokenHook` appends the text (and motion) prompt tokens to the sparse prompt that
  `sam2`'s prompt encoder returns, so `SAM2Base._forward_sam_heads` runs unchanged.
- `RawMaskHook` keeps the mask decoder's logits before `sam2` hard-gates them with the object score:
  the release trains on the ungated logits (its copy of SAM2 gates only at inference), so it keeps
  them only while the model trains (an inference step then writes no Python state).
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
from torch import Tensor, nn

from .config import SamwiseConfig


def build_sam2_base(config: SamwiseConfig) -> nn.Module:
    """SAM2Base from a config shipped in `sam2`, without the video predictor's post-processing options."""
    from sam2.build_sam import build_sam2  # importing sam2 initialises its hydra config module

    # apply_postprocessing=False: the release does not use dynamic multimask-via-stability.
    sam = build_sam2(
        config.sam2_config,
        ckpt_path=None,
        device="cpu",
        mode="eval",
        hydra_overrides_extra=config.hydra_overrides(),
        apply_postprocessing=False,
    )
    fit_rotary_tables(sam, config.image_size // sam.backbone_stride)
    return sam


def fit_rotary_tables(sam: nn.Module, side: int) -> None:
    """Size the memory attention's rotary tables for `side` x `side` features now.

    `sam2` builds them for 1024 px inputs and rebuilds them lazily on the first forward at another
    size; when that forward runs under `torch.inference_mode` (a tracker) the cached table is an
    inference tensor and any later training step fails on it."""
    from sam2.modeling.sam.transformer import RoPEAttention

    for module in sam.modules():
        if isinstance(module, RoPEAttention) and module.freqs_cis.shape[0] != side * side:
            module.freqs_cis = module.compute_cis(end_x=side, end_y=side).to(module.freqs_cis.device)


class PromptTokenHook:
    """Forward hook on the prompt encoder: sparse [B, N, C] -> [B, N + k, C] with the extra tokens."""

    def __init__(self, prompt_encoder: nn.Module):
        self._tokens: Tensor | None = None
        self._handle = prompt_encoder.register_forward_hook(self._append)

    @contextmanager
    def appended(self, tokens: Tensor) -> Iterator[None]:
        """Within the block, every prompt-encoder call returns `tokens` ([B, k, C]) after its own."""
        self._tokens = tokens
        try:
            yield
        finally:
            self._tokens = None

    def _append(self, module: nn.Module, inputs: tuple, output: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        if self._tokens is None:
            return output
        sparse, dense = output
        return torch.cat([sparse, self._tokens.to(sparse.dtype)], dim=1), dense

    def remove(self) -> None:
        self._handle.remove()


class RawMaskHook:
    """Forward hook on the mask decoder: its low-res mask logits before the object-score gating, kept
    while `keeping` is set (the model sets it with its training mode).

    The model sets the flag rather than the hook asking the model: a reference to the model here would make
    a cycle (model -> decoder -> hook -> model) that only Python's cyclic collector frees, and the model's
    memory (GPU memory on a GPU) with it."""

    def __init__(self, mask_decoder: nn.Module, keeping: bool):
        self.low_res_logits: Tensor | None = None
        self.keeping = keeping
        self._handle = mask_decoder.register_forward_hook(self._capture)

    def _capture(self, module: nn.Module, inputs: tuple, output: tuple) -> None:
        if self.keeping:
            self.low_res_logits = output[0]  # [B, 1, S/4, S/4] with multimask_output=False

    def pop(self) -> Tensor:
        value, self.low_res_logits = self.low_res_logits, None
        return value

    def remove(self) -> None:
        self._handle.remove()
