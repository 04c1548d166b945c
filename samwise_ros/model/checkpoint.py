"""Loading and saving weights: the released SAMWISE `.pth` files and this package's own directories.

The release stores `model.state_dict()` of its SAMWISE module (fairseq RoBERTa, a vendored SAM 2.0,
the adapters, the CME) under `checkpoint['model']` and its argparse options under `checkpoint['args']`.
`OFFICIAL_NAME_RULES` maps every released name onto this package's modules; `UNUSED_OFFICIAL_KEYS`
lists the only released entries that have no place (nothing in the forward pass reads them), and
`SYNTHESISED_KEYS` the only model tensors the release does not carry.
"""

from __future__ import annotations

import argparse
import collections
import pickle
import re
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from .config import SAM2_HIERA_B_PLUS, SamwiseConfig, roberta_base_config

# Released entries nothing reads: fairseq's masked-LM head and two bookkeeping buffers.
UNUSED_OFFICIAL_KEYS = (
    re.compile(r"text_encoder\.model\.encoder\.lm_head\..*"),
    re.compile(r"text_encoder\._float_tensor"),
    re.compile(r"text_encoder\.model\.encoder\.sentence_encoder\.version"),
)

# Model tensors with no released counterpart, and why their value is fixed.
SYNTHESISED_KEYS = {
    # fairseq RoBERTa has no token-type embedding; zero makes transformers' embedding sum equal fairseq's.
    "text_encoder.model.embeddings.token_type_embeddings.weight": "zeros",
}

_FAIRSEQ = r"text_encoder\.model\.encoder\.sentence_encoder\."
_HF = "text_encoder.model."
_HF_LAYER = _HF + r"encoder.layer.\1."
OFFICIAL_NAME_RULES: tuple[tuple[str, str], ...] = (
    # fairseq RoBERTa -> transformers RobertaModel
    (_FAIRSEQ + r"embed_tokens\.", _HF + "embeddings.word_embeddings."),
    (_FAIRSEQ + r"embed_positions\.", _HF + "embeddings.position_embeddings."),
    (_FAIRSEQ + r"layernorm_embedding\.", _HF + "embeddings.LayerNorm."),
    (_FAIRSEQ + r"layers\.(\d+)\.self_attn\.q_proj\.", _HF_LAYER + "attention.self.query."),
    (_FAIRSEQ + r"layers\.(\d+)\.self_attn\.k_proj\.", _HF_LAYER + "attention.self.key."),
    (_FAIRSEQ + r"layers\.(\d+)\.self_attn\.v_proj\.", _HF_LAYER + "attention.self.value."),
    (_FAIRSEQ + r"layers\.(\d+)\.self_attn\.out_proj\.", _HF_LAYER + "attention.output.dense."),
    (_FAIRSEQ + r"layers\.(\d+)\.self_attn_layer_norm\.", _HF_LAYER + "attention.output.LayerNorm."),
    (_FAIRSEQ + r"layers\.(\d+)\.fc1\.", _HF_LAYER + "intermediate.dense."),
    (_FAIRSEQ + r"layers\.(\d+)\.fc2\.", _HF_LAYER + "output.dense."),
    (_FAIRSEQ + r"layers\.(\d+)\.final_layer_norm\.", _HF_LAYER + "output.LayerNorm."),
    # the prompt MLPs the release keeps inside its vendored prompt encoder
    (r"sam\.sam_prompt_encoder\.project_text\.", "text_prompt."),
    (r"sam\.sam_prompt_encoder\.project_motion_prompts\.", "motion_prompt."),
    # everything else of SAM 2.0 has sam2's own names
    (r"sam\.", "sam."),
    # CME
    (r"conditional_memory_encoder\.transformerBlock\.", "cme.block."),
    (r"conditional_memory_encoder\.decision_token\.", "cme.decision_token."),
    (r"conditional_memory_encoder\.decision_class_head\.", "cme.decision_head."),
    # CMT adapters
    (r"cmt_adapters\.(\d+)\.proj_vis_down\.", r"adapters.\1.vis_down."),
    (r"cmt_adapters\.(\d+)\.proj_vis_up\.", r"adapters.\1.vis_up."),
    (r"cmt_adapters\.(\d+)\.proj_text_down\.0\.", r"adapters.\1.text_down."),
    (r"cmt_adapters\.(\d+)\.proj_text_up\.0\.", r"adapters.\1.text_up."),
    (r"cmt_adapters\.(\d+)\.ca_V2T\.multihead_attn\.", r"adapters.\1.vis_to_text.attn."),
    (r"cmt_adapters\.(\d+)\.ca_T2V\.multihead_attn\.", r"adapters.\1.text_to_vis.attn."),
    (r"cmt_adapters\.(\d+)\.hsa\.self_attn\.", r"adapters.\1.hsa.attn."),
    (r"cmt_adapters\.(\d+)\.hsa\.linear\.", r"adapters.\1.hsa.out."),
    (r"cmt_adapters\.(\d+)\.spatial_pos_embed$", r"adapters.\1.hsa.spatial_pos_embed"),
    (r"cmt_adapters\.(\d+)\.norm_pre_HSA\.", r"adapters.\1.hsa.norm."),
)
_COMPILED_RULES = tuple((re.compile(pattern), replacement) for pattern, replacement in OFFICIAL_NAME_RULES)

# The release saves args as argparse.Namespace and an lr-scheduler state holding a Counter: the only
# globals the safe unpickler is allowed to build.
SAFE_CHECKPOINT_GLOBALS = [argparse.Namespace, collections.Counter]

SAM2_CONFIG_BY_VERSION = {
    "tiny": "configs/sam2/sam2_hiera_t.yaml",
    "small": "configs/sam2/sam2_hiera_s.yaml",
    "base": SAM2_HIERA_B_PLUS,
    "large": "configs/sam2/sam2_hiera_l.yaml",
}


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used, with the one-line reason."""


def check_verb_tagger(config: SamwiseConfig, verb_tagger, source: str) -> None:
    """A motion-prompt model reads the verbs of every query: refuse to load one that could not."""
    if config.motion_prompt and verb_tagger is None:
        raise CheckpointError(f"{source}: a motion prompt model needs a verb tagger (verb_tagger=, text -> the "
                              "character spans of its verbs) to read queries")


def is_unused_official_key(name: str) -> bool:
    return any(pattern.fullmatch(name) for pattern in UNUSED_OFFICIAL_KEYS)


def official_to_package_name(name: str) -> str | None:
    """This package's parameter name for a released one; None for the documented unused entries."""
    if is_unused_official_key(name):
        return None
    for pattern, replacement in _COMPILED_RULES:
        match = pattern.match(name)
        if match:
            return match.expand(replacement) + name[match.end():]
    return name  # unknown: kept as is, so loading reports it as unexpected


# ---- reading files safely ------------------------------------------------------------------------

def read_checkpoint_file(path: str | Path) -> dict[str, Any]:
    """torch.load with weights_only=True, allowing only the globals the release needs."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint {path}: file not found")
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path}: not a file")
    try:
        with torch.serialization.safe_globals(SAFE_CHECKPOINT_GLOBALS):
            data = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        unsafe = re.search(r"GLOBAL ([\w.]+)", str(error))
        if unsafe:
            raise CheckpointError(f"checkpoint {path}: refused, loading it would run pickled code "
                                  f"(global {unsafe.group(1)})") from None
        raise CheckpointError(f"checkpoint {path}: not a PyTorch checkpoint ({_unpickler_detail(error)})") from None
    except (RuntimeError, EOFError, KeyError, zipfile.BadZipFile, ValueError, OSError) as error:
        raise CheckpointError(f"checkpoint {path}: truncated or not a PyTorch checkpoint "
                              f"({type(error).__name__}: {_first_line(error)})") from None
    if not isinstance(data, dict) or not isinstance(data.get("model"), dict):
        raise CheckpointError(f"checkpoint {path}: no 'model' state dict (keys: {_describe_keys(data)})")
    return data


def _first_line(error: Exception) -> str:
    lines = [line for line in str(error).strip().splitlines() if line.strip()]
    return lines[0] if lines else "no detail"


def _unpickler_detail(error: Exception) -> str:
    """The specific line of torch's long weights-only message (e.g. 'Unsupported operand 66')."""
    boilerplate = ("Weights only load failed", "Check the documentation", "Please file an issue")
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    specific = [line for line in lines if not line.startswith(boilerplate)]
    return specific[-1] if specific else _first_line(error)


def _describe_keys(data: Any) -> str:
    return ", ".join(map(str, data)) if isinstance(data, dict) else type(data).__name__


# ---- configuration from the release's options -----------------------------------------------------

def config_from_official(args: argparse.Namespace | None, state: dict[str, Tensor]) -> SamwiseConfig:
    """The SamwiseConfig a released checkpoint was trained with: from `args`, or from its keys."""
    options = vars(args) if isinstance(args, argparse.Namespace) else {}
    version = options.get("sam2_version", "base")
    if version not in SAM2_CONFIG_BY_VERSION:
        raise CheckpointError(f"unknown sam2_version {version!r} in checkpoint args")
    has_obj_score = "sam.sam_mask_decoder.obj_score_token.weight" in state
    pred_obj_scores = not options.get("disable_pred_obj_score", not has_obj_score)
    if pred_obj_scores != has_obj_score:
        raise CheckpointError(
            f"checkpoint args say disable_pred_obj_score={not pred_obj_scores} but the weights "
            f"{'have' if has_obj_score else 'lack'} the object-score head"
        )
    motion = options.get("motion_prompt", any(".project_motion_prompts." in key for key in state))
    if not options.get("HSA", any(".hsa." in key for key in state)):
        raise CheckpointError("checkpoint trained without HSA: only HSA adapters are supported")
    text = roberta_base_config()
    vocab = state.get("text_encoder.model.encoder.sentence_encoder.embed_tokens.weight")
    if vocab is not None:
        text["vocab_size"] = int(vocab.shape[0])
    return SamwiseConfig(
        sam2_config=SAM2_CONFIG_BY_VERSION[version],
        image_size=1024,
        text_encoder=text,
        text_fusion_layers=list(options.get("fusion_stages_txt", [4, 8, 12])),
        fusion_stages=list(options.get("fusion_stages", [1, 2, 3])),
        hsa_patch_sizes=list(options.get("HSA_patch_size", [8, 4, 2])),
        adapter_dim=int(options.get("adapter_dim", 256)),
        motion_prompt=bool(motion),
        pred_obj_scores=pred_obj_scores,
        cme_trained=bool(options.get("use_cme_head", True)),
        switch_memory=options.get("switch_mem", "reweight"),
    )


# ---- mapping and loading ------------------------------------------------------------------------

def convert_official_state_dict(official: dict[str, Tensor]) -> dict[str, Tensor]:
    """Released names -> this package's names (unused entries dropped, synthesised ones added)."""
    converted = {}
    for name, tensor in official.items():
        target = official_to_package_name(name)
        if target is not None:
            converted[target] = tensor
    words = converted.get("text_encoder.model.embeddings.word_embeddings.weight")
    if words is not None:
        converted.setdefault("text_encoder.model.embeddings.token_type_embeddings.weight",
                             torch.zeros(1, words.shape[1], dtype=words.dtype))
    return converted


def load_state_strict(model: torch.nn.Module, state: dict[str, Tensor], source: str) -> None:
    """Load every model tensor from `state`, or raise one error naming what does not fit."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    mismatched = [
        f"{name} {tuple(state[name].shape)} vs model {tuple(tensor.shape)}"
        for name, tensor in expected.items()
        if name in state and tuple(state[name].shape) != tuple(tensor.shape)
    ]
    if missing or unexpected or mismatched:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} keys: {_preview(missing)}")
        if unexpected:
            parts.append(f"unexpected {len(unexpected)} keys: {_preview(unexpected)}")
        if mismatched:
            parts.append(f"{len(mismatched)} shapes differ: {_preview(mismatched)}")
        raise CheckpointError(f"{source}: wrong architecture; " + "; ".join(parts))
    model.load_state_dict(state, strict=True)


def _preview(items: list[str], limit: int = 5) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f", ... ({len(items) - limit} more)" if len(items) > limit else "")


# ---- tokenizers ---------------------------------------------------------------------------------

def load_tokenizer(source: Any, text_encoder_type: str):
    """A tokenizer object as given, or read from a directory (vocab.json + merges.txt or tokenizer.json)."""
    if source is None or not isinstance(source, (str, Path)):
        return source
    from transformers import CLIPTokenizerFast, RobertaTokenizerFast

    path = Path(source)
    if not path.is_dir():
        raise CheckpointError(f"tokenizer {path}: directory not found")
    tokenizer_class = RobertaTokenizerFast if text_encoder_type == "roberta" else CLIPTokenizerFast
    try:
        return tokenizer_class.from_pretrained(str(path), local_files_only=True)
    except (OSError, ValueError, TypeError) as error:
        raise CheckpointError(f"tokenizer {path}: cannot be read ({str(error).splitlines()[0]})") from None


def read_text_encoder(directory: str | Path) -> tuple[str, dict[str, Any], dict[str, Tensor]]:
    """(kind, config kwargs, state dict) of a transformers RoBERTa or CLIP text-encoder directory."""
    from transformers import AutoConfig, CLIPTextConfig, CLIPTextModel, RobertaConfig, RobertaModel

    path = Path(directory)
    if not (path / "config.json").is_file():
        raise CheckpointError(f"text encoder {path}: no config.json (expected a transformers model directory)")
    model_type = AutoConfig.from_pretrained(str(path), local_files_only=True).model_type
    if model_type == "roberta":
        kind, config = "roberta", RobertaConfig.from_pretrained(str(path), local_files_only=True)
        model = RobertaModel.from_pretrained(str(path), config=config, add_pooling_layer=False, local_files_only=True)
    elif model_type in ("clip", "clip_text_model"):
        kind, config = "clip", CLIPTextConfig.from_pretrained(str(path), local_files_only=True)
        model = CLIPTextModel.from_pretrained(str(path), config=config, local_files_only=True)
    else:
        raise CheckpointError(f"text encoder {path}: model type {model_type!r} is not RoBERTa or CLIP")
    return kind, config.to_diff_dict(), model.state_dict()


# ---- this package's own format --------------------------------------------------------------------

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "samwise_config.json"


def save_directory(model: torch.nn.Module, directory: str | Path, storage_dtype: torch.dtype | None = None) -> Path:
    """safetensors weights + configuration + tokenizer files: a self-contained model directory.
    `storage_dtype` (e.g. torch.float16) halves the file; loading casts back to the model's dtype."""
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {name: _stored(tensor, storage_dtype) for name, tensor in model.state_dict().items()}
    save_file(state, str(directory / WEIGHTS_FILE), metadata={"format": "pt", "producer": "samwise_ros"})
    model.config.save(directory / CONFIG_FILE)
    if model.tokenizer is not None:
        model.tokenizer.save_pretrained(str(directory))
    return directory


def _stored(tensor: Tensor, storage_dtype: torch.dtype | None) -> Tensor:
    tensor = tensor.detach().cpu()
    if storage_dtype is not None and tensor.is_floating_point():
        tensor = tensor.to(storage_dtype)
    return tensor.contiguous()


def read_directory(directory: str | Path) -> tuple[SamwiseConfig, dict[str, Tensor], Path]:
    """Configuration and weights of a saved model directory, with one clear error per failure."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    directory = Path(directory)
    if not directory.is_dir():
        raise CheckpointError(f"model directory {directory}: not found")
    for name in (CONFIG_FILE, WEIGHTS_FILE):
        if not (directory / name).is_file():
            raise CheckpointError(f"model directory {directory}: {name} is missing")
    try:
        config = SamwiseConfig.load(directory / CONFIG_FILE)
    except (ValueError, TypeError) as error:
        raise CheckpointError(f"model directory {directory}: invalid {CONFIG_FILE} ({error})") from None
    try:
        state = load_file(str(directory / WEIGHTS_FILE))
    except (SafetensorError, OSError) as error:
        raise CheckpointError(f"model directory {directory}: {WEIGHTS_FILE} is corrupt ({error})") from None
    return config, state, directory


def has_tokenizer_files(directory: Path) -> bool:
    return any((directory / name).is_file() for name in ("tokenizer.json", "vocab.json"))
