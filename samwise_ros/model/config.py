"""SamwiseConfig: every size of the network in one explicit, serialisable object."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SAM2_HIERA_B_PLUS = "configs/sam2/sam2_hiera_b+.yaml"  # SAM 2.0, as in the release
SAM2_HIERA_T = "configs/sam2/sam2_hiera_t.yaml"

TEXT_ENCODER_TYPES = ("roberta", "clip")
SWITCH_MEMORY_RULES = ("reweight", "all_mask", "avg")


def roberta_base_config() -> dict[str, Any]:
    """transformers RobertaConfig fields equal to fairseq's roberta_base architecture."""
    return dict(
        vocab_size=50265,
        hidden_size=768,
        num_hidden_layers=12,
        num_attention_heads=12,
        intermediate_size=3072,
        hidden_act="gelu",
        max_position_embeddings=514,
        type_vocab_size=1,
        layer_norm_eps=1e-5,
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=2,
    )


@dataclass
class SamwiseConfig:
    """Configuration of the SAMWISE network.

    `sam2_config` names a config shipped inside the `sam2` package; `sam2_overrides` are extra
    hydra overrides (sizes of the Hiera trunk, image size, ...). The text encoder is described by
    the keyword arguments of its transformers config class.
    """

    sam2_config: str = SAM2_HIERA_B_PLUS
    sam2_overrides: list[str] = field(default_factory=list)
    image_size: int = 1024
    text_encoder_type: str = "roberta"
    text_encoder: dict[str, Any] = field(default_factory=roberta_base_config)
    # Text layer index after which fusion segment k ends (the release's fusion_stages_txt).
    text_fusion_layers: list[int] = field(default_factory=lambda: [4, 8, 12])
    # Trunk segments (between Hiera stage ends) that get a CMT adapter (the release's fusion_stages).
    fusion_stages: list[int] = field(default_factory=lambda: [1, 2, 3])
    hsa_patch_sizes: list[int] = field(default_factory=lambda: [8, 4, 2])
    adapter_dim: int = 256
    adapter_heads: int = 8
    use_hsa: bool = True
    motion_prompt: bool = False
    # False for the image-level release (trained with --disable_pred_obj_score).
    pred_obj_scores: bool = True
    # The weights hold a trained CME head (the release's use_cme_head); whether and how often it runs
    # is the tracker's choice (StreamTracker use_cme, cme_window), which defaults to running a trained one.
    cme_trained: bool = True
    # How a CME switch rewrites the memory's mask (the release's switch_mem).
    switch_memory: str = "reweight"

    def __post_init__(self) -> None:
        if self.text_encoder_type not in TEXT_ENCODER_TYPES:
            raise ValueError(f"text_encoder_type must be one of {TEXT_ENCODER_TYPES}, got {self.text_encoder_type!r}")
        if self.switch_memory not in SWITCH_MEMORY_RULES:
            raise ValueError(f"switch_memory must be one of {SWITCH_MEMORY_RULES}, got {self.switch_memory!r}")
        if len(self.hsa_patch_sizes) not in (1, len(self.fusion_stages)):
            raise ValueError("hsa_patch_sizes needs one entry, or one per fusion stage")
        if self.image_size % 32:
            raise ValueError(f"image_size must be a multiple of 32 (Hiera's total stride), got {self.image_size}")

    @property
    def text_layer_boundaries(self) -> list[int]:
        """Text layers run per trunk segment: [0, 1, *text_fusion_layers] (layer 0 runs with blocks 0-1)."""
        return [0, 1, *self.text_fusion_layers]

    def hsa_patch_size(self, adapter_index: int) -> int:
        sizes = self.hsa_patch_sizes
        return sizes[adapter_index] if len(sizes) > 1 else sizes[0]

    def hydra_overrides(self) -> list[str]:
        """Overrides applied to `sam2_config`: the release's options, then the configured sizes."""
        flag = str(self.pred_obj_scores).lower()
        return [
            f"++model.image_size={self.image_size}",
            f"++model.pred_obj_scores={flag}",
            f"++model.pred_obj_scores_mlp={flag}",
            f"++model.fixed_no_obj_ptr={flag}",
            *self.sam2_overrides,
        ]

    # ---- presets -------------------------------------------------------------------------

    @classmethod
    def official(cls, **changes: Any) -> "SamwiseConfig":
        """The released SAMWISE: SAM 2.0 Hiera-B+, RoBERTa-base, 1024 px, HSA, CME."""
        return dataclasses.replace(cls(), **changes)

    @classmethod
    def tiny(cls, vocab_size: int = 1024, **changes: Any) -> "SamwiseConfig":
        """A small Hiera, a 4-layer text encoder and 128 px images: fast on a CPU (tests, demo)."""
        base = cls(
            sam2_config=SAM2_HIERA_T,
            sam2_overrides=[
                "++model.image_encoder.trunk.embed_dim=32",
                "++model.image_encoder.trunk.num_heads=1",
                "++model.image_encoder.trunk.stages=[1,1,2,1]",
                "++model.image_encoder.trunk.global_att_blocks=[3]",
                "++model.image_encoder.trunk.window_spec=[8,4,4,2]",
                "++model.image_encoder.trunk.window_pos_embed_bkg_spatial_size=[4,4]",
                "++model.image_encoder.neck.backbone_channel_list=[256,128,64,32]",
                "++model.memory_attention.num_layers=2",
            ],
            image_size=128,
            text_encoder=dict(
                roberta_base_config(),
                vocab_size=vocab_size,
                hidden_size=32,
                num_hidden_layers=4,
                num_attention_heads=2,
                intermediate_size=64,
                max_position_embeddings=130,
            ),
            text_fusion_layers=[2, 3, 4],
            hsa_patch_sizes=[8, 4, 2],
            adapter_dim=32,
        )
        return dataclasses.replace(base, **changes)

    @classmethod
    def demo(cls, vocab_size: int = 1024, **changes: Any) -> "SamwiseConfig":
        """The bundled demo model: `tiny` at 256 px input with one memory-attention layer and one
        memory-fuser block (8.6 M parameters: 17 MB stored in float16, within the package's 20 MB
        budget). 256 px because SAM2's quarter-resolution masks cap J near 0.83 at 128 px."""
        tiny = cls.tiny(vocab_size)
        overrides = [*tiny.sam2_overrides, "++model.memory_attention.num_layers=1",
                     "++model.memory_encoder.fuser.num_layers=1"]
        return dataclasses.replace(tiny, sam2_overrides=overrides, **({"image_size": 256} | changes))

    # ---- serialisation -------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "SamwiseConfig":
        data = _without_runtime_fields(data)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown SamwiseConfig fields: {unknown}")
        return cls(**data)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> "SamwiseConfig":
        return cls.from_dict(json.loads(Path(path).read_text()))


def _without_runtime_fields(data: dict[str, Any]) -> dict[str, Any]:
    """Files saved before the runtime choices left the configuration: `use_cme` said whether the CME
    head is trained and run (now `cme_trained`); `cme_decision_window` is the tracker's `cme_window`."""
    data = {key: value for key, value in data.items() if key != "cme_decision_window"}
    if "use_cme" in data:
        data.setdefault("cme_trained", data.pop("use_cme"))
    return data
