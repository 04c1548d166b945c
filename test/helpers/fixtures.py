"""Test fixtures that stand in for files this world cannot download.

* a tiny byte-level BPE tokenizer with ``roberta-base``'s special-token ids, trained on a fixed corpus
  by the package's own trainer (samwise_ros.model.tokenizer),
* the ``args`` namespace of the official SAMWISE ``opts.py`` parser,
* random state dicts with exactly the names / shapes / dtypes of the released SAMWISE
  checkpoints (schemas in ``test/data``), written in the format of the official ``main.py``,
* broken / hostile checkpoint files for the loader's error paths.

Everything is deterministic: the same arguments give the same files and tensors.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import functools
import hashlib
import json
import os
import random
from pathlib import Path

import torch

__all__ = [
    "DATA_DIR",
    "SCHEMA_FILES",
    "TOKENIZER_CORPUS",
    "CHECKPOINT_SAFE_GLOBALS",
    "OBJ_SCORE_KEYS",
    "MISSING_KEYS",
    "WRONG_SHAPE_KEY",
    "WRONG_SHAPE",
    "EXTRA_KEY",
    "write_roberta_tokenizer",
    "official_args",
    "load_schema",
    "schema_entries",
    "official_state_dict",
    "official_optimizer_state",
    "write_official_checkpoint",
    "write_corrupt_files",
    "save_tiny_model",
    "fixed_cme_decision",
]

DATA_DIR = Path(__file__).resolve().parent.parent / "data"
SCHEMA_FILES = {
    "video": DATA_DIR / "samwise_official_state_dict_schema.json",
    "image": DATA_DIR / "samwise_official_state_dict_schema.json",
    "motion": DATA_DIR / "samwise_official_state_dict_schema_motion_prompt.json",
}

# Globals to allow for ``torch.load(..., weights_only=True)`` of a checkpoint written by
# write_official_checkpoint (i.e. by the official main.py): ``args`` is an argparse.Namespace
# (refused by default) and ``lr_scheduler['milestones']`` (MultiStepLR) is a collections.Counter
# (already on torch 2.13's default allowlist, listed for older torch). Nothing else is needed,
# in either the legacy or the zip format.
CHECKPOINT_SAFE_GLOBALS = (argparse.Namespace, collections.Counter)


# --------------------------------------------------------------------------------------------
# 1. tokenizer
# --------------------------------------------------------------------------------------------

TOKENIZER_CORPUS = (
    "the red ball rolling to the left",
    "the red ball rolling to the right",
    "a small green square on the table",
    "the person picking up the mug",
    "the person walking to the left",
    "the man on the right holding a red cup",
    "the woman in the blue shirt walking away",
    "a black dog running across the field",
    "the white cat sitting on the sofa",
    "the yellow car moving to the left",
    "the blue car parked on the right",
    "the green box on the left side of the table",
    "the person sitting on the chair",
    "the small red ball next to the green square",
    "a brown horse running in the field",
    "the orange cube moving forward",
    "the purple cylinder on the right",
    "the person picking up the red box",
    "the person putting down the blue mug",
    "the black bike on the left",
    "the white bird flying to the right",
    "the large green ball rolling away",
    "the red square and the blue circle",
    "a person in a red shirt walking to the right",
    "the cat jumping onto the table",
    "the dog turning around and walking back",
    "the second car from the left",
    "the first person on the right",
    "the gray mug on the table",
    "the small yellow ball in the middle",
    "the robot arm moving the green cube to the left",
    "the person holding the white cup",
    "move the red ball to the left",
    "pick up the blue mug on the right",
    "the moving object on the left",
    "the object that is not moving",
    "the tallest person in the group",
    "the man riding a black bike",
    "the woman walking with a white dog",
    "the two people standing on the right",
)


def write_roberta_tokenizer(directory) -> Path:
    """Train the package's byte-level BPE tokenizer on TOKENIZER_CORPUS into ``directory``; return it.

    A few hundred tokens with roberta-base's special ids (<s>=0, <pad>=1, </s>=2, <unk>=3);
    ``RobertaTokenizerFast.from_pretrained(directory)`` and ``AutoTokenizer.from_pretrained(directory)``
    load it offline.
    """
    from samwise_ros.model.tokenizer import train_roberta_tokenizer

    directory = Path(directory)
    train_roberta_tokenizer(TOKENIZER_CORPUS, directory)
    return directory


# --------------------------------------------------------------------------------------------
# 2. args
# --------------------------------------------------------------------------------------------


def official_args(**overrides) -> argparse.Namespace:
    """The ``args`` the official main.py saves in a checkpoint of the video (MeViS) model.

    Every option of opts.get_args_parser() (ClaudiaCuttano/SAMWISE @ dad43ab) with the values of
    the released video model, plus what main.py / util.misc.init_distributed_mode add at run time.
    ``overrides`` replace or add attributes.
    """
    values = dict(
        # training hyperparameters
        lr=1e-5,
        batch_size=2,
        batch_size_val=1,
        num_frames=8,
        weight_decay=0,
        epochs=6,
        lr_drop=[60000],
        clip_max_norm=1,
        # SAM2
        sam2_version="base",
        disable_pred_obj_score=False,
        motion_prompt=False,
        # cross-modal temporal adapter
        HSA=True,
        HSA_patch_size=[8, 4, 2],
        adapter_dim=256,
        fusion_stages_txt=[4, 8, 12],
        fusion_stages=[1, 2, 3],
        # conditional memory encoder
        use_cme_head=True,
        switch_mem="reweight",
        cme_decision_window=4,
        # datasets
        dataset_file="mevis",
        coco_path="data/coco",
        ytvos_path="data/ref-youtube-vos",
        davis_path="data/ref-davis",
        mevis_path="data/MeViS_release",
        max_size=1024,
        augm_resize=False,
        # general
        output_dir="output",
        name_exp="default",
        device="cuda",
        seed=0,
        resume="",
        resume_optimizer=False,
        start_epoch=0,
        eval=False,
        num_workers=4,
        no_distributed=False,
        # testing / evaluation
        threshold=0.5,
        split="valid",
        visualize=False,
        eval_clip_window=8,
        set="val",
        task="unsupervised",
        results_path=None,
        # added at run time by main.py / util.misc.init_distributed_mode
        log_file="output/log.txt",
        distributed=True,
        ngpu=1,
        rank=0,
        world_size=1,
        gpu=0,
        dist_url="env://",
        dist_backend="nccl",
    )
    values.update(overrides)
    return argparse.Namespace(**values)


# --------------------------------------------------------------------------------------------
# 3. state dicts
# --------------------------------------------------------------------------------------------

# Entries absent from the image-level release (trained with --disable_pred_obj_score).
OBJ_SCORE_KEYS = (
    "sam.sam_mask_decoder.obj_score_token.weight",
    "sam.sam_mask_decoder.pred_obj_score_head.layers.0.weight",
    "sam.sam_mask_decoder.pred_obj_score_head.layers.0.bias",
    "sam.sam_mask_decoder.pred_obj_score_head.layers.1.weight",
    "sam.sam_mask_decoder.pred_obj_score_head.layers.1.bias",
    "sam.sam_mask_decoder.pred_obj_score_head.layers.2.weight",
    "sam.sam_mask_decoder.pred_obj_score_head.layers.2.bias",
    "sam.no_obj_ptr",
)

_DTYPES = {
    "float32": torch.float32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "float64": torch.float64,
    "int64": torch.int64,
    "int32": torch.int32,
    "bool": torch.bool,
}

_VARIANTS = ("video", "image", "motion")


def _check_variant(variant: str) -> None:
    if variant not in _VARIANTS:
        raise ValueError(f"variant must be one of {_VARIANTS}, got {variant!r}")


@functools.lru_cache(maxsize=None)
def _schema_json(path: str) -> dict:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def load_schema(variant: str = "video") -> dict:
    """The schema JSON (``{"config": ..., "keys": [...]}``) behind ``variant`` (a fresh copy)."""
    _check_variant(variant)
    schema = json.loads(json.dumps(_schema_json(str(SCHEMA_FILES[variant]))))
    if variant == "image":
        drop = set(OBJ_SCORE_KEYS)
        schema["keys"] = [k for k in schema["keys"] if k["name"] not in drop]
        for k in schema["keys"]:
            if "tied_with" in k:
                k["tied_with"] = [n for n in k["tied_with"] if n not in drop]
        schema["config"]["disable_pred_obj_score"] = True
    return schema


def schema_entries(variant: str = "video") -> list[dict]:
    """The schema's key entries for ``variant`` in state_dict order."""
    return load_schema(variant)["keys"]


def _name_seed(seed: int, name: str) -> int:
    digest = hashlib.sha256(f"{seed}:{name}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def _make_tensor(name: str, shape: list[int], dtype: torch.dtype, seed: int, scale: float) -> torch.Tensor:
    gen = torch.Generator().manual_seed(_name_seed(seed, name))
    leaf = name.rsplit(".", 1)[-1]
    if leaf == "num_batches_tracked":
        return torch.tensor(60000, dtype=torch.int64).reshape(shape)
    if not dtype.is_floating_point:
        return torch.zeros(shape, dtype=dtype)
    if name == "text_encoder._float_tensor":  # RobertaHubInterface buffer: torch.tensor([0.])
        return torch.zeros(shape, dtype=dtype)
    if name.endswith("sentence_encoder.version"):  # fairseq TransformerEncoder buffer: Tensor([3])
        return torch.full(shape, 3.0, dtype=dtype)
    t = torch.empty(shape, dtype=torch.float32)
    if leaf == "running_var":  # BatchNorm: strictly positive, around 1
        t.uniform_(0.5, 1.5, generator=gen)
    elif leaf == "running_mean":
        t.normal_(0.0, 0.01, generator=gen)
    elif leaf == "positional_encoding_gaussian_matrix":  # SAM2 PositionEmbeddingRandom: randn * 1.0
        t.normal_(0.0, 1.0, generator=gen)
    elif leaf == "weight" and len(shape) == 1:  # LayerNorm / LayerNorm2d / BatchNorm affine weight
        t.normal_(1.0, min(scale, 0.02), generator=gen)
    else:
        t.normal_(0.0, scale, generator=gen)
        if name.endswith("embed_positions.weight") and shape[0] > 1:
            t[1].zero_()  # fairseq LearnedPositionalEmbedding: padding_idx=1 row stays zero
    return t.to(dtype)


def official_state_dict(variant: str = "video", seed: int = 0, scale: float = 0.02) -> dict[str, torch.Tensor]:
    """Random tensors under exactly the names, shapes and dtypes of an official SAMWISE checkpoint.

    ``variant``: "video" (main schema), "motion" (motion-prompt schema) or "image" (main schema
    minus OBJ_SCORE_KEYS, as trained with --disable_pred_obj_score). Each tensor depends only on
    (seed, its name), so entries common to two variants are equal. Tied entries are the same
    tensor object. LayerNorm/BatchNorm weights are 1 + N(0, min(scale, .02)), BatchNorm running_var
    U(0.5, 1.5), running_mean N(0, .01), num_batches_tracked int64 scalars; others N(0, scale).
    """
    out: dict[str, torch.Tensor] = collections.OrderedDict()
    for entry in schema_entries(variant):
        name = entry["name"]
        dtype = _DTYPES[entry["dtype"]]
        shape = list(entry["shape"])
        tied = [n for n in entry.get("tied_with", ()) if n in out]
        if tied:
            src = out[tied[0]]
            if list(src.shape) != shape or src.dtype != dtype:
                raise AssertionError(f"schema ties {name} to {tied[0]} with another shape/dtype")
            out[name] = src
            continue
        out[name] = _make_tensor(name, shape, dtype, seed, scale)
    out._metadata = _state_dict_metadata(out)
    return out


def _state_dict_metadata(state_dict) -> "collections.OrderedDict[str, dict]":
    """``_metadata`` as nn.Module.state_dict() attaches it: module prefix -> {"version": _version}.

    Derived from the key names (modules without parameters or buffers are not known here);
    BatchNorm modules (those with running stats) have version 2, everything else version 1.
    """
    meta: collections.OrderedDict[str, dict] = collections.OrderedDict()
    bn = {k.rsplit(".", 1)[0] for k in state_dict if k.endswith(".running_mean")}
    for key in state_dict:
        parts = key.split(".")[:-1]
        for i in range(len(parts) + 1):
            prefix = ".".join(parts[:i])
            if prefix not in meta:
                meta[prefix] = {"version": 2 if prefix in bn else 1}
    return meta


# --------------------------------------------------------------------------------------------
# 4. checkpoint files
# --------------------------------------------------------------------------------------------


def official_optimizer_state(lr: float = 1e-5, milestones=(60000,)) -> tuple[dict, dict]:
    """(optimizer.state_dict(), lr_scheduler.state_dict()) shaped like the official main.py's.

    One AdamW param group carrying ``initial_lr`` (as main.py builds it), over two small dummy
    parameters after one step; MultiStepLR(optimizer, milestones) (its ``milestones`` is a Counter).
    """
    gen = torch.Generator().manual_seed(1234)
    params = [
        torch.nn.Parameter(torch.randn(4, 3, generator=gen)),
        torch.nn.Parameter(torch.randn(3, generator=gen)),
    ]
    optimizer = torch.optim.AdamW([{"params": params, "initial_lr": lr}], lr=lr, weight_decay=0)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, list(milestones))
    for p in params:
        p.grad = torch.randn(p.shape, generator=gen)
    optimizer.step()
    scheduler.step()
    return optimizer.state_dict(), scheduler.state_dict()


def _variant_args(variant: str, **overrides) -> argparse.Namespace:
    _check_variant(variant)
    extra: dict = {}
    if variant == "image":
        extra = dict(disable_pred_obj_score=True, dataset_file="refcoco", num_frames=1)
    elif variant == "motion":
        extra = dict(motion_prompt=True)
    extra.update(overrides)
    return official_args(**extra)


def _save(obj, path: Path, legacy_format: bool) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # the official util.misc.save_on_master uses torch.save(..., _use_new_zipfile_serialization=False)
    torch.save(obj, path, _use_new_zipfile_serialization=not legacy_format)


def write_official_checkpoint(
    path,
    variant: str = "video",
    seed: int = 0,
    with_training_state: bool = True,
    *,
    state_dict: dict[str, torch.Tensor] | None = None,
    scale: float = 0.02,
    legacy_format: bool = True,
    epoch: int = 5,
    args_overrides: dict | None = None,
) -> Path:
    """Write a checkpoint the way the official main.py does and return its path.

    ``{"model", "optimizer", "lr_scheduler", "epoch", "args"}`` (only "model" and "args" when
    ``with_training_state`` is False). ``state_dict`` reuses an already generated state dict.
    ``legacy_format=True`` matches the official save_on_master (old, non-zip torch format).
    """
    path = Path(path)
    args = _variant_args(variant, **(args_overrides or {}))
    if state_dict is None:
        state_dict = official_state_dict(variant, seed=seed, scale=scale)
    ckpt: dict = {"model": state_dict}
    if with_training_state:
        opt_state, sched_state = official_optimizer_state(lr=args.lr, milestones=args.lr_drop)
        ckpt.update(optimizer=opt_state, lr_scheduler=sched_state, epoch=epoch)
    ckpt["args"] = args
    _save(ckpt, path, legacy_format)
    return path


class _ExploitPayload:
    """Unpickling this (without weights_only) would run a shell command. Never load it unsafely."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"echo pwned > '{self.marker}'",))


# What the schema-violating checkpoints change (names valid for every variant).
MISSING_KEYS = (
    "conditional_memory_encoder.decision_token.weight",
    "cmt_adapters.2.hsa.linear.bias",
    "sam.sam_prompt_encoder.project_text.layers.0.weight",
)
WRONG_SHAPE_KEY = "cmt_adapters.0.proj_vis_down.0.weight"
WRONG_SHAPE = (128, 224, 1, 1)  # schema: [256, 224, 1, 1]
EXTRA_KEY = "unexpected_head.weight"

_CORRUPT_KINDS = (
    "random_bytes",
    "text",
    "truncated",
    "truncated_zip",
    "malicious",
    "malicious_legacy",
    "missing_keys",
    "wrong_shape",
    "extra_key",
)


def _copy_state_dict(sd, drop=()):
    out = collections.OrderedDict((k, v) for k, v in sd.items() if k not in drop)
    out._metadata = getattr(sd, "_metadata", collections.OrderedDict())
    return out


def write_corrupt_files(directory, variant: str = "video", seed: int = 0, which=None, *,
                        state_dict: dict[str, torch.Tensor] | None = None) -> dict[str, Path]:
    """Write bad files for the loader's error paths into ``directory``; returns name -> path.

    * ``random_bytes``: 4 KiB of (seeded) random bytes; ``text``: a plain text file.
    * ``truncated``: a valid official checkpoint (legacy format) cut to half its size;
      ``truncated_zip``: the same in the zip format (what torch.save writes by default).
    * ``malicious`` / ``malicious_legacy``: torch.save (zip / legacy format) of a checkpoint whose
      ``args`` unpickles to ``os.system("echo pwned > <marker>")``; ``malicious_marker`` is the
      marker path (a safe loader must refuse the file and the marker must not appear).
    * ``missing_keys``: ``model`` lacks MISSING_KEYS; ``wrong_shape``: ``model[WRONG_SHAPE_KEY]``
      has shape WRONG_SHAPE; ``extra_key``: ``model`` has the additional EXTRA_KEY.
      These three are otherwise complete official checkpoints of ``variant``.

    ``which`` restricts the kinds written (the full-size ones take seconds and ~0.85 GB each);
    ``state_dict`` reuses an already generated ``official_state_dict(variant, seed)``.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    kinds = _CORRUPT_KINDS if which is None else tuple(which)
    unknown = set(kinds) - set(_CORRUPT_KINDS)
    if unknown:
        raise ValueError(f"unknown kinds {sorted(unknown)}; known: {_CORRUPT_KINDS}")
    out: dict[str, Path] = {}

    if "random_bytes" in kinds:
        p = directory / "random_bytes.pth"
        p.write_bytes(random.Random(seed).randbytes(4096))
        out["random_bytes"] = p
    if "text" in kinds:
        p = directory / "not_a_checkpoint.pth"
        p.write_text("This is not a PyTorch checkpoint.\nmodel: none\n", encoding="utf-8")
        out["text"] = p

    marker = directory / "PWNED_MARKER"
    for kind, legacy in (("malicious", False), ("malicious_legacy", True)):
        if kind in kinds:
            p = directory / f"{kind}.pth"
            small = {"sam.no_mem_embed": torch.zeros(1, 1, 256)}
            _save({"model": small, "args": _ExploitPayload(marker), "epoch": 0}, p, legacy_format=legacy)
            out[kind] = p
            out["malicious_marker"] = marker

    big = [k for k in ("truncated", "truncated_zip", "missing_keys", "wrong_shape", "extra_key") if k in kinds]
    if big:
        sd = official_state_dict(variant, seed=seed) if state_dict is None else state_dict
        if "truncated" in kinds:
            p = write_official_checkpoint(directory / "truncated.pth", variant, seed, state_dict=sd)
            os.truncate(p, p.stat().st_size // 2)
            out["truncated"] = p
        if "truncated_zip" in kinds:
            p = write_official_checkpoint(
                directory / "truncated_zip.pth", variant, seed, state_dict=sd, legacy_format=False
            )
            os.truncate(p, p.stat().st_size // 2)
            out["truncated_zip"] = p
        if "missing_keys" in kinds:
            bad = _copy_state_dict(sd, drop=MISSING_KEYS)
            out["missing_keys"] = write_official_checkpoint(
                directory / "missing_keys.pth", variant, seed, state_dict=bad
            )
        if "wrong_shape" in kinds:
            bad = _copy_state_dict(sd)
            gen = torch.Generator().manual_seed(_name_seed(seed, "wrong_shape"))
            bad[WRONG_SHAPE_KEY] = torch.randn(WRONG_SHAPE, generator=gen) * 0.02
            out["wrong_shape"] = write_official_checkpoint(
                directory / "wrong_shape.pth", variant, seed, state_dict=bad
            )
        if "extra_key" in kinds:
            bad = _copy_state_dict(sd)
            bad[EXTRA_KEY] = torch.ones(8)
            out["extra_key"] = write_official_checkpoint(
                directory / "extra_key.pth", variant, seed, state_dict=bad
            )
    return out


# --------------------------------------------------------------------------------------------
# tiny models saved as checkpoint directories
# --------------------------------------------------------------------------------------------

def save_tiny_model(directory: Path, tokenizer, force_cme_switch: bool = False) -> Path:
    """A tiny random SAMWISE saved as a checkpoint directory. Its object-score head is biased so the
    object is always reported present (non-empty masks to compute centroids on); with
    force_cme_switch the CME switches whenever its window lets it (frames 5, 8, 11, ...)."""
    from samwise_ros import Samwise, SamwiseConfig

    torch.manual_seed(0)
    model = Samwise(SamwiseConfig.tiny(vocab_size=len(tokenizer)), tokenizer=tokenizer).eval()
    with torch.no_grad():
        model.sam.sam_mask_decoder.pred_obj_score_head.layers[-1].bias.fill_(10.0)
        if force_cme_switch:
            model.cme.decision_head.weight.zero_()
            model.cme.decision_head.bias.copy_(torch.tensor([0.0, 10.0]))
    return model.save(directory)


@contextlib.contextmanager
def fixed_cme_decision(model, switch: bool):
    """Within the block the model's CME decides `switch` on every frame it decides on."""
    head = model.cme.decision_head
    saved = head.weight.detach().clone(), head.bias.detach().clone()
    with torch.no_grad():
        head.weight.zero_()
        head.bias.copy_(torch.tensor([0.0, 10.0] if switch else [10.0, 0.0]))
    try:
        yield model
    finally:
        with torch.no_grad():
            head.weight.copy_(saved[0])
            head.bias.copy_(saved[1])
