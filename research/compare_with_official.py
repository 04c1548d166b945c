#!/usr/bin/env python3
"""Compare this package's network with the official SAMWISE code on the same weights and frames.

Usage: python research/compare_with_official.py --official PATH_TO_SAMWISE_CHECKOUT [--frames 20] [--image-size 1024]

The official repository (ClaudiaCuttano/SAMWISE) is imported from PATH at run time, nothing of it is
part of this package. Its hard-coded `.cuda()` calls are redirected to the CPU, its download and NLP
imports are stubbed, and its fairseq text encoder is replaced by a shim that runs this package's
(transformers) RoBERTa layers in fairseq's sequence-first layout: the text path is therefore shared,
and what is compared is everything else — adapters, HSA, FPN, memory attention and selection, mask
decoding with the text prompt, object scores, the CME decisions and the memory it writes.
The official code hard-codes 64x64 image embeddings, so the image size stays 1024 (with a small
Hiera so that the CPU run takes minutes, not hours). Choose a frame count whose last clip is not a
single frame: the release wipes its memory on one-frame clips, a quirk this package does not keep.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import types
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "test"))

from samwise_ros.model import Samwise, SamwiseConfig  # noqa: E402
from samwise_ros.model.checkpoint import official_to_package_name  # noqa: E402
from samwise_ros.model.cme import RELEASE_DECISION_WINDOW  # noqa: E402


def stub_official_imports(redirect_cuda: bool = True) -> None:
    for name in ("fairseq", "fairseq.models", "fairseq.models.roberta", "spacy", "py3_wget", "torchvision"):
        sys.modules.setdefault(name, types.ModuleType(name))
    sys.modules["fairseq.models.roberta"].RobertaModel = object
    sys.modules["torchvision"].__version__ = "0.20.0"
    if redirect_cuda:  # the official code calls .cuda() unconditionally
        torch.Tensor.cuda = lambda self, *args, **kwargs: self


class FairseqLayerShim:
    """A transformers RoBERTa layer called like fairseq's (x: [L, B, C], encoder_padding_mask)."""

    def __init__(self, encoder, index):
        self.encoder, self.index = encoder, index

    def __call__(self, x, encoder_padding_mask=None):
        keep = (~encoder_padding_mask).long()
        return self.encoder.run_layers(x.transpose(0, 1), self.index, self.index + 1, keep).transpose(0, 1)


def official_text_encoder(encoder):
    """An object with the attributes the official SAMWISE reads from its fairseq RoBERTa hub."""
    sentence = types.SimpleNamespace(
        layers=[FairseqLayerShim(encoder, i) for i in range(encoder.num_layers)],
        forward_embedding=lambda ids, _tokens: (encoder.model.embeddings(input_ids=ids), None),
    )
    return types.SimpleNamespace(model=types.SimpleNamespace(encoder=types.SimpleNamespace(sentence_encoder=sentence)))


def build_official(official_root: Path, config: SamwiseConfig, ours: Samwise, tokenizer, redirect_cuda: bool = True):
    """The official SAMWISE with `ours`' weights; `redirect_cuda`: its .cuda() calls do nothing (a CPU run)."""
    sys.path.insert(0, str(official_root))
    stub_official_imports(redirect_cuda)
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    import models.samwise as official
    from models.conditional_memory_encoder import ConditionalMemoryEncoder

    official.RobertaTokenizerFast = types.SimpleNamespace(from_pretrained=lambda *_: tokenizer)
    GlobalHydra.instance().clear()
    config_dir = official_root / "models" / "sam2" / "sam2_configs"
    with initialize_config_dir(config_dir=str(config_dir), version_base=None):
        name = Path(config.sam2_config).name
        overrides = [o for o in config.hydra_overrides() if "pred_obj" not in o and "fixed_no_obj" not in o]
        overrides += [f"++model.text_encoder_embed_dim={ours.text_encoder.hidden_size}", "++model.motion_prompt=false"]
        cfg = compose(config_name=name, overrides=overrides)
        OmegaConf.resolve(cfg)
        sam = instantiate(cfg.model, _recursive_=True)
    GlobalHydra.instance().clear()
    args = argparse.Namespace(
        motion_prompt=False, HSA=True, HSA_patch_size=config.hsa_patch_sizes, use_cme_head=True,
        cme_decision_window=RELEASE_DECISION_WINDOW, switch_mem=config.switch_memory,
    )
    model = official.SAMWISE(
        image_encoder_embed_dim=cfg.model.image_encoder.neck.backbone_channel_list[::-1][1:],
        text_encoder=official_text_encoder(ours.text_encoder),
        text_encoder_embed_dim=ours.text_encoder.hidden_size,
        fusion_stages_txt=config.text_fusion_layers,
        fusion_stages=config.fusion_stages,
        image_size=sam.image_size,
        sam=sam,
        conditional_memory_encoder=ConditionalMemoryEncoder(sam.hidden_dim),
        adapter_dim=config.adapter_dim,
        args=args,
    )
    ours_state = ours.state_dict()
    official_state = {name: ours_state[official_to_package_name(name)] for name in model.state_dict()}
    model.load_state_dict(official_state, strict=True)
    return model.eval()


def randomise(model: Samwise, seed: int) -> None:
    """Random weights everywhere, BatchNorm statistics included, so no path is trivially zero."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if tensor.dtype.is_floating_point:
                noise = torch.randn(tensor.shape, generator=generator) * 0.05
                tensor.copy_(noise.abs() + 0.5 if "running_var" in name else tensor + noise)


def run_official(model, frames, caption, clip_length):
    scores, cme_logits = [], []
    heads = model.sam._forward_sam_heads

    def record_heads(*args, **kwargs):
        out = heads(*args, **kwargs)
        scores.append(out.object_score_logits.clone())
        return out

    model.sam._forward_sam_heads = record_heads
    hook = model.conditional_memory_encoder.register_forward_hook(lambda m, i, o: cme_logits.append(o.clone()))
    masks = []
    for start in range(0, len(frames), clip_length):
        clip = frames[start : start + clip_length]
        target = {"frame_ids": list(range(start, start + len(clip)))}
        with torch.no_grad():
            masks.append(model([clip], [caption], [target])["pred_masks"])
    hook.remove()
    return torch.cat(masks), scores, cme_logits


def run_ours(model, frames, query, clip_length):
    memory = model.new_stream_memory()
    logits, scores, cme_logits, switched, cme_ran = [], [], [], [], []
    resized = tuple(frames.shape[-2:])
    for start in range(0, len(frames), clip_length):
        clip = frames[start : start + clip_length]
        with torch.no_grad():
            outputs = model.forward_clip(clip, query, list(range(start, start + len(clip))), memory)
        for out in outputs:
            logits.append(model.postprocess_logits(out.low_res_logits, resized, resized)[:, 0])
            scores.append(out.object_score_logits)
            if out.cme_ran:
                cme_logits.append(out.cme_logits)
            cme_ran.append(bool(out.cme_ran))
            switched.append(bool(out.cme_switched))
    return torch.cat(logits), scores, cme_logits, switched, cme_ran


def compare(name, ours, theirs):
    diff = (ours - theirs).abs().max().item()
    print(f"{name:34s} max |diff| {diff:.3e}   (scale {theirs.abs().max().item():.3e})")
    return diff


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--official", type=Path, required=True, help="a checkout of ClaudiaCuttano/SAMWISE")
    parser.add_argument("--frames", type=int, default=20)
    parser.add_argument("--clip-length", type=int, default=8)
    parser.add_argument("--height", type=int, default=768, help="resized frame height (width 1024)")
    parser.add_argument("--force-switch", action="store_true", help="bias the CME so that it always switches")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    from helpers.fixtures import write_roberta_tokenizer
    from transformers import RobertaTokenizerFast

    tokenizer = RobertaTokenizerFast.from_pretrained(str(write_roberta_tokenizer(Path(tempfile.mkdtemp()))))
    config = SamwiseConfig.tiny(vocab_size=len(tokenizer), image_size=1024)
    torch.manual_seed(args.seed)
    ours = Samwise(config, tokenizer=tokenizer).eval()
    randomise(ours, args.seed)
    if args.force_switch:
        with torch.no_grad():
            ours.cme.decision_head.bias.copy_(torch.tensor([0.0, 100.0]))
    official = build_official(args.official, config, ours, tokenizer)

    generator = torch.Generator().manual_seed(args.seed + 1)
    frames = torch.randn(args.frames, 3, args.height, 1024, generator=generator)
    caption = "the red ball rolling to the left"
    their_masks, their_scores, their_cme = run_official(official, frames, caption, args.clip_length)
    our_masks, our_scores, our_cme, switched, cme_ran = run_ours(ours, frames, ours.tokenize(caption),
                                                                 args.clip_length)
    # the official records every decoder call: per frame the memory path, then the CME's memory-less pass
    calls_per_frame = [2 if ran else 1 for ran in cme_ran]
    starts = [sum(calls_per_frame[:i]) for i in range(len(calls_per_frame))]
    their_scores = [their_scores[i] for i in starts]
    print(f"frames {args.frames}, clip {args.clip_length}, CME ran on {len(our_cme)} frames, switched on "
          f"{[i for i, s in enumerate(switched) if s]}")
    worst = compare("mask logits", our_masks, their_masks)
    worst = max(worst, compare("object score logits", torch.cat(our_scores), torch.cat(their_scores)))
    worst = max(worst, compare("CME logits", torch.cat(our_cme), torch.cat(their_cme)) if our_cme else 0.0)
    decisions_equal = [int(x.argmax()) for x in our_cme] == [int(x.argmax()) for x in their_cme]
    flipped = (our_masks > 0) != (their_masks > 0)
    masks = "equal" if not flipped.any() else (
        f"{int(flipped.sum())} of {flipped.numel()} pixels differ, each within "
        f"{float(torch.maximum(our_masks.abs(), their_masks.abs())[flipped].max()):.1e} of the threshold")
    print(f"CME decisions equal: {decisions_equal}; thresholded masks {masks}")
    return 0 if decisions_equal and worst < 1e-3 else 1


if __name__ == "__main__":
    sys.exit(main())
