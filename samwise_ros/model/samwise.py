"""SAMWISE: a frozen SAM2 and a frozen text encoder fused by CMT adapters, with a CME on the memory."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from sam2.modeling.sam2_utils import MLP
from torch import Tensor, nn

from .adapter import CMTAdapter
from . import checkpoint as ckpt
from .cme import (RELEASE_DECISION_WINDOW, ConditionalMemoryEncoder, cme_window_open, reweight_memory_logits,
                  same_object_labels, spaced_from_last_switch)
from .config import SamwiseConfig
from .memory import FusionContext, MemoryBank, MemoryEntry, StreamMemory
from .sam2_bridge import PromptTokenHook, RawMaskHook, build_sam2_base
from .text_encoder import build_text_encoder

PRECISIONS = ("fp32", "bf16", "fp16")

# The modules trained on top of the frozen SAM2 and text encoder (the release's rule).
TRAINABLE_MODULES = ("adapters", "cme", "text_prompt")

VerbTagger = Callable[[str], Sequence[tuple[int, int]]]  # text -> character spans of its verbs


@dataclass
class TextQuery:
    """Tokenised referring expressions, one per row of the batch (`rows` of them), padded at the end to a
    common length where their lengths differ or a fixed length is asked for."""

    texts: tuple[str, ...]
    input_ids: Tensor  # [R, L]
    attention_mask: Tensor  # [R, L], 0 at padding
    verb_tokens: Tensor | None = None  # [R, L] bool, for the motion prompt
    # [R, L, C_text] states after the text layers that precede the first fusion (`Samwise.encode_query`)
    unfused_states: Tensor | None = None
    padded: bool = False  # some rows are padded: attention keeps the padding out (a static flag, so that
    # an unpadded query runs exactly the release's arithmetic)

    @property
    def rows(self) -> int:
        return self.input_ids.shape[0]

    @property
    def text(self) -> str:
        """The expression of a one-row query."""
        (text,) = self.texts
        return text

    @property
    def padding_mask(self) -> Tensor | None:
        """[R, L] bool, True at padding; None for an unpadded query."""
        return self.attention_mask == 0 if self.padded else None

    def to(self, device: torch.device | str) -> "TextQuery":
        verbs = None if self.verb_tokens is None else self.verb_tokens.to(device)
        states = None if self.unfused_states is None else self.unfused_states.to(device)
        return TextQuery(self.texts, self.input_ids.to(device), self.attention_mask.to(device), verbs, states,
                         self.padded)


@dataclass
class ClipFeatures:
    """Backbone output of one clip for R rows (each row a query on the clip's frames): SAM2's flattened
    feature levels plus the fused text state. Per frame, the rows are the batch of SAM2's heads."""

    vision_feats: list[Tensor]  # per level [H*W, R*T, C], highest resolution first; row r, frame t at r*T + t
    vision_pos: list[Tensor]  # per level [H*W, R*T, C]
    feat_sizes: list[tuple[int, int]]
    text_state: Tensor  # [R, T, C_text], the sentence state (repeated per frame)
    motion_state: Tensor | None  # [R, T, k, C_text] verb-token states (k = 0 or 1)

    @property
    def num_rows(self) -> int:
        return self.text_state.shape[0]

    @property
    def num_frames(self) -> int:
        return self.text_state.shape[1]

    def frame_feats(self, index: int) -> list[Tensor]:
        """Every level of one frame for all rows: [H*W, R, C]."""
        return [level.unflatten(1, (self.num_rows, -1))[:, :, index] for level in self.vision_feats]

    def frame_pos(self, index: int) -> list[Tensor]:
        return [level.unflatten(1, (self.num_rows, -1))[:, :, index] for level in self.vision_pos]

    def high_res_feats(self, index: int) -> list[Tensor]:
        """The two higher-resolution levels of one frame as [R, C, H, W] maps, for the mask decoder."""
        return [
            level.permute(1, 2, 0).reshape(self.num_rows, -1, *size)
            for level, size in zip(self.frame_feats(index)[:-1], self.feat_sizes[:-1])
        ]


@dataclass
class FrameDecoding:
    """One pass of SAM2's heads on one frame, for each row."""

    low_res_logits: Tensor  # [R, 1, S/4, S/4]; forced to -1024 when no object is predicted
    high_res_logits: Tensor  # [R, 1, S, S]
    obj_ptr: Tensor  # [R, C]
    object_score_logits: Tensor  # [R, 1]
    iou: Tensor  # [R, 1]


@dataclass
class FrameOutput:
    """What the clip forward returns for one frame, for each of its R rows."""

    frame_index: int | Tensor  # [R] device tensor from `forward_steady` (the rows' own stream positions)
    low_res_logits: Tensor  # [R, 1, S/4, S/4]
    object_score_logits: Tensor  # [R, 1]
    cme_logits: Tensor | None  # [R, 2] once the frame is past the CME's first window
    cme_ran: Tensor  # [R] bool: the window rule let the CME decide on this frame
    cme_switched: Tensor  # [R] bool: it switched, and the memory got the reweighted mask
    memory_logits: Tensor  # [R, 1, S, S], what was written to the memory


@dataclass
class TrainFrameOutput:
    """What the training forward returns for one frame."""

    mask_logits: Tensor  # [1, 1, h, w] at the clip's (resized) input size
    object_score_logits: Tensor  # [1, 1]; detached unless asked for: no loss of the release uses it
    # (SAM2's object-score head comes trained), and DDP needs every output with a graph to reach the loss
    cme_logits: Tensor | None  # [1, 2] where the CME window allows
    cme_label: Tensor | None  # [1] long: 1 switch, 0 same object, -1 ignore
    # [1, 1, h, w] of the memory-less decoding the CME compares against, where the CME window allows;
    # with its graph only when asked for (no loss of the release trains it beyond a clip's first frame)
    memoryless_mask_logits: Tensor | None = None
    image_embedding: Tensor | None = None  # [1, C, S/16, S/16] the memory-conditioned feature the decoder attends to


class Samwise(nn.Module):
    """The SAMWISE network. Pure torch: no ROS, no file formats (see checkpoint.py for those)."""

    def __init__(self, config: SamwiseConfig, tokenizer=None, verb_tagger: VerbTagger | None = None):
        super().__init__()
        self.config = config
        self.tokenizer = tokenizer
        self.verb_tagger = verb_tagger
        self.sam = build_sam2_base(config)
        self.text_encoder = build_text_encoder(config.text_encoder_type, config.text_encoder)
        trunk = self.sam.image_encoder.trunk
        self._check_segments(trunk)

        stage_dims = [trunk.blocks[end].dim_out for end in trunk.stage_ends]
        hidden = self.sam.hidden_dim
        text_dim = self.text_encoder.hidden_size
        self.adapters = nn.ModuleList(
            CMTAdapter(
                vis_dim=stage_dims[stage],
                text_dim=text_dim,
                dim=config.adapter_dim,
                num_heads=config.adapter_heads,
                patch_size=config.hsa_patch_size(k),
                use_hsa=config.use_hsa,
            )
            for k, stage in enumerate(config.fusion_stages)
        )
        # The release's 3-layer MLPs live inside its vendored prompt encoder; here they sit beside sam2's.
        self.text_prompt = MLP(text_dim, hidden, hidden, 3)
        self.motion_prompt = MLP(text_dim, hidden, hidden, 3) if config.motion_prompt else None
        # Always built (the release always has it); the caller decides whether it runs.
        self.cme = ConditionalMemoryEncoder(hidden)

        self._prompt_hook = PromptTokenHook(self.sam.sam_prompt_encoder)
        self._raw_masks = RawMaskHook(self.sam.sam_mask_decoder, keeping=self.training)
        self.precision = "fp32"  # compute precision for callers that autocast (the weights stay float32)

    # ---- construction from files ----------------------------------------------------------------

    @classmethod
    def from_official_checkpoint(cls, path, tokenizer=None, device="cpu", dtype="fp32",
                                 verb_tagger: VerbTagger | None = None) -> "Samwise":
        """A released SAMWISE `.pth` (read without executing pickled code); `tokenizer`: a directory
        with the RoBERTa tokenizer files, or a tokenizer object."""
        data = ckpt.read_checkpoint_file(path)
        config = ckpt.config_from_official(data.get("args"), data["model"])
        ckpt.check_verb_tagger(config, verb_tagger, f"checkpoint {path}")
        model = cls(config, ckpt.load_tokenizer(tokenizer, config.text_encoder_type), verb_tagger)
        ckpt.load_state_strict(model, ckpt.convert_official_state_dict(data["model"]), f"checkpoint {path}")
        return model.prepare(device, dtype)

    @classmethod
    def from_pretrained(cls, sam2_checkpoint, text_encoder, config: SamwiseConfig | None = None,
                        device="cpu", dtype="fp32", verb_tagger: VerbTagger | None = None) -> "Samwise":
        """Fresh adapters, prompt MLP and CME on a SAM2 `.pt` and a transformers text-encoder directory
        (its tokenizer files are used when present), frozen as for training."""
        kind, text_config, weights = ckpt.read_text_encoder(text_encoder)
        base = config or SamwiseConfig.official()
        config = SamwiseConfig.from_dict({**base.to_dict(), "text_encoder_type": kind, "text_encoder": text_config})
        ckpt.check_verb_tagger(config, verb_tagger, "the configuration")
        tokenizer = ckpt.load_tokenizer(text_encoder, kind) if ckpt.has_tokenizer_files(Path(text_encoder)) else None
        model = cls(config, tokenizer, verb_tagger)
        sam_state = ckpt.read_checkpoint_file(sam2_checkpoint)["model"]
        ckpt.load_state_strict(model.sam, sam_state, f"SAM2 checkpoint {sam2_checkpoint}")
        ckpt.load_state_strict(model.text_encoder.model, weights, f"text encoder {text_encoder}")
        model.freeze_for_training()
        return model.prepare(device, dtype)

    @classmethod
    def from_path(cls, path, tokenizer=None, device="cpu", dtype="fp32",
                  verb_tagger: VerbTagger | None = None) -> "Samwise":
        """A directory saved by `save`, or a released `.pth` (then `tokenizer` names its tokenizer)."""
        if Path(path).is_dir():
            return cls.load(path, device=device, dtype=dtype, verb_tagger=verb_tagger)
        return cls.from_official_checkpoint(path, tokenizer=tokenizer, device=device, dtype=dtype,
                                            verb_tagger=verb_tagger)

    def save(self, directory, storage_dtype: torch.dtype | None = None) -> Path:
        """This package's format: model.safetensors, samwise_config.json and the tokenizer files;
        `storage_dtype` stores floating weights in another dtype (float16: half the size)."""
        return ckpt.save_directory(self, directory, storage_dtype)

    @classmethod
    def load(cls, directory, device="cpu", dtype="fp32", verb_tagger: VerbTagger | None = None) -> "Samwise":
        config, state, directory = ckpt.read_directory(directory)
        ckpt.check_verb_tagger(config, verb_tagger, f"model directory {directory}")
        tokenizer = ckpt.load_tokenizer(directory, config.text_encoder_type) if ckpt.has_tokenizer_files(directory) else None
        model = cls(config, tokenizer, verb_tagger)
        ckpt.load_state_strict(model, state, f"model directory {directory}")
        return model.prepare(device, dtype)

    def train(self, mode: bool = True) -> "Samwise":
        super().train(mode)
        self._raw_masks.keeping = mode  # training runs on the ungated logits, as the release does
        return self

    def prepare(self, device="cpu", dtype="fp32") -> "Samwise":
        """Move to `device`, set the compute precision, switch to inference mode."""
        if dtype not in PRECISIONS:
            raise ValueError(f"dtype must be one of {PRECISIONS}, got {dtype!r}")
        self.precision = dtype
        return self.to(device).eval()

    def _check_segments(self, trunk: nn.Module) -> None:
        boundaries = self.config.text_layer_boundaries
        if len(boundaries) != len(trunk.stage_ends) + 1 or boundaries[-1] != self.text_encoder.num_layers:
            raise ValueError(
                f"text layer boundaries {boundaries} must give one segment per Hiera stage "
                f"({len(trunk.stage_ends)}) and end at the text encoder's {self.text_encoder.num_layers} layers"
            )
        if max(self.config.fusion_stages) >= len(trunk.stage_ends):
            raise ValueError(f"fusion_stages {self.config.fusion_stages} exceed the {len(trunk.stage_ends)} stages")

    # ---- sizes ------------------------------------------------------------------------------

    @property
    def image_size(self) -> int:
        return self.sam.image_size

    @property
    def device(self) -> torch.device:
        return self.sam.no_mem_embed.device

    def new_stream_memory(self, frame_window: int | None = None, rows: int = 1) -> StreamMemory:
        """Empty state of `rows` streams on the same frames; `frame_window` (frames) sets up frame mode's
        causal fusion context."""
        bank = MemoryBank(num_spatial=self.sam.num_maskmem - 1, num_pointers=self.sam.max_obj_ptrs_in_encoder - 1)
        context = FusionContext(frame_window) if frame_window is not None else None
        last_switch = torch.zeros(rows, dtype=torch.long, device=self.device)
        return StreamMemory(bank=bank, last_cme_switch=last_switch, fusion_context=context)

    def trainable_parameter_names(self, modules: Sequence[str] = TRAINABLE_MODULES) -> list[str]:
        """Parameters the release trains (adapters, CME, text prompt MLP), or those of `modules` among
        them; the rest stays frozen."""
        unknown = set(modules) - set(TRAINABLE_MODULES)
        if unknown:
            raise ValueError(f"not trainable modules: {sorted(unknown)}; trainable: {TRAINABLE_MODULES}")
        prefixes = tuple(f"{module}." for module in modules)
        return [name for name, _ in self.named_parameters() if name.startswith(prefixes)]

    def freeze_for_training(self, modules: Sequence[str] = TRAINABLE_MODULES) -> None:
        trainable = set(self.trainable_parameter_names(modules))
        for name, param in self.named_parameters():
            param.requires_grad_(name in trainable)

    # ---- text ---------------------------------------------------------------------------------

    @property
    def max_query_tokens(self) -> int:
        """The most tokens (with the special ones) the text encoder takes."""
        return self.text_encoder.model.config.max_position_embeddings - 2

    def tokenize(self, text: str, pad_to: int | None = None) -> TextQuery:
        """The query's tokens; `pad_to` pads them at the end to that many (a compiled step's fixed length:
        the padding changes no result)."""
        if self.tokenizer is None:
            raise RuntimeError("this model has no tokenizer: pass tokenizer= when building or loading it")
        encoding = self.tokenizer(text, add_special_tokens=True, padding=True, return_tensors="pt",
                                  return_offsets_mapping=self.motion_prompt is not None)
        input_ids, attention_mask = encoding["input_ids"], encoding["attention_mask"]
        length = input_ids.shape[1]
        if length > self.max_query_tokens:
            raise ValueError(f"the query has {length} tokens; this text encoder takes at most {self.max_query_tokens}")
        verbs = self._verb_tokens(text, encoding["offset_mapping"][0]) if self.motion_prompt is not None else None
        if pad_to is not None:
            if pad_to < length:
                raise ValueError(f"cannot pad a query of {length} tokens to {pad_to}")
            padding = (0, pad_to - length)
            input_ids = F.pad(input_ids, padding, value=self.tokenizer.pad_token_id)
            attention_mask = F.pad(attention_mask, padding, value=0)
            verbs = None if verbs is None else F.pad(verbs, padding, value=False)
        return TextQuery((text,), input_ids, attention_mask, verbs, padded=pad_to is not None).to(self.device)

    def stack_queries(self, queries: Sequence[TextQuery]) -> TextQuery:
        """One query of rows from one-row queries (each encoded, or none), padded to the longest; a row's
        results equal its own query's (padding changes no result)."""
        length = max(query.input_ids.shape[1] for query in queries)

        def padded(tensor: Tensor | None, value) -> Tensor | None:
            return None if tensor is None else F.pad(tensor, (0, 0) * (tensor.dim() - 2) + (0, length - tensor.shape[1]),
                                                    value=value)

        def stacked(name: str, value) -> Tensor | None:
            tensors = [padded(getattr(query, name), value) for query in queries]
            return None if tensors[0] is None else torch.cat(tensors)

        return TextQuery(tuple(text for query in queries for text in query.texts),
                         stacked("input_ids", self.tokenizer.pad_token_id), stacked("attention_mask", 0),
                         stacked("verb_tokens", False), stacked("unfused_states", 0.0),
                         padded=any(query.padded or query.input_ids.shape[1] < length for query in queries))

    def _verb_tokens(self, text: str, offsets: Tensor) -> Tensor:
        if self.verb_tagger is None:
            raise RuntimeError("the motion prompt needs a verb tagger (text -> verb character spans)")
        spans = list(self.verb_tagger(text))
        flags = [
            end > start and any(v_start <= start and end <= v_end for v_start, v_end in spans)
            for start, end in offsets.tolist()
        ]
        return torch.tensor([flags], dtype=torch.bool)

    def encode_query(self, query: TextQuery) -> TextQuery:
        """The query with its text states through the layers before the first fusion stage, which depend
        on the text alone: a stream computes them once per query instead of once per clip or frame."""
        return dataclasses.replace(query, unfused_states=self._unfused_text(query))

    @property
    def _unfused_text_layers(self) -> int:
        """Text layers run before the first adapter reads the text."""
        return self.config.text_layer_boundaries[min(self.config.fusion_stages) + 1]

    def _unfused_text(self, query: TextQuery) -> Tensor:
        text = self.text_encoder.embed(query.input_ids, query.attention_mask)  # [R, L, C_text]
        return self.text_encoder.run_layers(text, 0, self._unfused_text_layers, query.attention_mask)

    # ---- backbone with early fusion -----------------------------------------------------------

    def encode_clip(self, frames: Tensor, query: TextQuery, context: FusionContext | None = None) -> ClipFeatures:
        """frames: [T, 3, h, w] normalised, h and w <= image_size (padded here, bottom/right); `query`: R rows,
        each a query on these frames. The trunk runs once per frame up to the first fusion stage (it does not
        read the text), then on every row.

        With a `context` (frame mode), T must be 1: the adapters see the context's past frames and
        the new one as one clip, and the new frame's adapter inputs join the context.
        """
        num_frames = frames.shape[0]
        if context is not None and num_frames != 1:
            raise ValueError(f"frame mode encodes one frame at a time, got {num_frames}")
        frames = self._pad_to_input(frames)
        trunk = self.sam.image_encoder.trunk

        vis = trunk.patch_embed(frames)  # [T, H, W, C]
        vis = vis + trunk._get_pos_embed(vis.shape[1:3])
        text = query.unfused_states if query.unfused_states is not None else self._unfused_text(query)

        vis_bounds = [0] + [end + 1 for end in trunk.stage_ends]
        text_bounds = self.config.text_layer_boundaries
        levels = []
        for segment in range(len(trunk.stage_ends)):
            for block in trunk.blocks[vis_bounds[segment] : vis_bounds[segment + 1]]:
                vis = block(vis)
            first_layer = max(text_bounds[segment], self._unfused_text_layers)
            if first_layer < text_bounds[segment + 1]:
                text = self.text_encoder.run_layers(text, first_layer, text_bounds[segment + 1], query.attention_mask)
            if segment in self.config.fusion_stages:
                if query.rows > 1 and vis.shape[0] == num_frames:  # the frames' shared states, for every row
                    vis, levels = vis.repeat(query.rows, 1, 1, 1), [level.repeat(query.rows, 1, 1, 1) for level in levels]
                vis, text = self._fuse(segment, vis, text, num_frames, query.padding_mask, context)
            levels.append(vis.permute(0, 3, 1, 2))

        sentence = self.text_encoder.sentence_state(text, query.input_ids)  # [R, C_text]
        text_state = sentence.unsqueeze(1).expand(-1, num_frames, -1)
        motion_state = None
        if self.motion_prompt is not None:
            motion_state = self._first_verb_states(text, query).unsqueeze(1).expand(-1, num_frames, -1, -1)
        vision_feats, vision_pos, feat_sizes = self._forward_neck(levels)
        return ClipFeatures(vision_feats, vision_pos, feat_sizes, text_state, motion_state)

    @staticmethod
    def _first_verb_states(text: Tensor, query: TextQuery) -> Tensor:
        """[R, k, C_text]: each row's first verb token's state (k = 1), as the release uses, or none (k = 0)."""
        states = [row[verbs][:1] for row, verbs in zip(text, query.verb_tokens)]
        if len({len(state) for state in states}) > 1:
            raise ValueError("the motion prompt batches rows that all have a verb, or none that has")
        return torch.stack(states)

    def _pad_to_input(self, frames: Tensor) -> Tensor:
        """[T, 3, h, w] -> [T, 3, S, S], zeros at the bottom and right (h, w <= S = image_size)."""
        size = self.image_size
        return F.pad(frames, (0, size - frames.shape[-1], 0, size - frames.shape[-2]))

    def _fuse(self, segment: int, vis: Tensor, text: Tensor, num_frames: int, text_padding: Tensor | None,
              context: FusionContext | None) -> tuple[Tensor, Tensor]:
        """Add the segment's adapter residuals to the visual ([R*T, H, W, C]) and text ([R, L, C]) states;
        `text_padding` ([R, L] bool) marks padded text positions, which the visual tokens do not attend to."""
        adapter = self.adapters[self.config.fusion_stages.index(segment)]
        adapter_input = vis.permute(0, 3, 1, 2)
        if context is None:
            vis_residual, text_residual = adapter(adapter_input, text, num_frames, text_padding)
        else:
            vis_residual, text_residual, projected = adapter.forward_newest(adapter_input, text, context.past(segment),
                                                                            text_padding)
            context.push(segment, projected)
        return vis + vis_residual.permute(0, 2, 3, 1), text + text_residual

    def _forward_neck(self, levels: list[Tensor]) -> tuple[list[Tensor], list[Tensor], list[tuple[int, int]]]:
        encoder = self.sam.image_encoder
        features, pos = encoder.neck(levels)
        if encoder.scalp > 0:
            features, pos = features[: -encoder.scalp], pos[: -encoder.scalp]
        if self.sam.use_high_res_features_in_sam:
            features[0] = self.sam.sam_mask_decoder.conv_s0(features[0])
            features[1] = self.sam.sam_mask_decoder.conv_s1(features[1])
        backbone_out = {"vision_features": features[-1], "vision_pos_enc": pos, "backbone_fpn": features}
        _, vision_feats, vision_pos, feat_sizes = self.sam._prepare_backbone_features(backbone_out)
        return vision_feats, vision_pos, feat_sizes

    # ---- decoding -----------------------------------------------------------------------------

    def decode_with_memory(self, features: ClipFeatures, index: int, memory: StreamMemory) -> FrameDecoding:
        pix_feat = self._condition_on_memory(features, index, memory)
        return self._decode(features, index, pix_feat, with_motion=True)

    def decode_without_memory(self, features: ClipFeatures, index: int) -> FrameDecoding:
        return self._decode(features, index, self._without_memory(features, index), with_motion=False)

    def early_pointer_without_memory(self, features: ClipFeatures, index: int) -> Tensor:
        """What the CME reads of the memory-less decoding ([R, C]): mask token 0's state after the first
        two-way block of SAM2's mask decoder. The rest of the decoder does not run."""
        with self._prompt_hook.appended(self._prompt_tokens(features, index, with_motion=False)):
            return self._first_block_mask_token(self._without_memory(features, index))

    def _first_block_mask_token(self, pix_feat: Tensor) -> Tensor:
        """Mask token 0's state after the decoder's first two-way block, with the block's inputs laid out
        as sam2 lays them out (`_forward_sam_heads` without points: one padding point;
        `MaskDecoder.predict_masks`; `TwoWayTransformer.forward`)."""
        decoder, prompt_encoder = self.sam.sam_mask_decoder, self.sam.sam_prompt_encoder
        rows = pix_feat.shape[0]
        padding_point = (torch.zeros(rows, 1, 2, device=pix_feat.device),
                         -torch.ones(rows, 1, dtype=torch.int32, device=pix_feat.device))
        sparse, dense = prompt_encoder(points=padding_point, boxes=None, masks=None)
        learned = [decoder.iou_token.weight, decoder.mask_tokens.weight]
        if decoder.pred_obj_scores:
            learned.insert(0, decoder.obj_score_token.weight)
        tokens = torch.cat([torch.cat(learned).unsqueeze(0).expand(rows, -1, -1), sparse], dim=1)
        image = (pix_feat + dense).flatten(2).permute(0, 2, 1)
        image_pe = prompt_encoder.get_dense_pe().flatten(2).permute(0, 2, 1)
        queries, _ = decoder.transformer.layers[0](queries=tokens, keys=image, query_pe=tokens, key_pe=image_pe)
        return queries[:, len(learned) - 1]  # the mask tokens follow the one-row learned tokens

    def _without_memory(self, features: ClipFeatures, index: int) -> Tensor:
        top = features.frame_feats(index)[-1] + self.sam.no_mem_embed  # [H*W, R, C]
        return top.permute(1, 2, 0).reshape(features.num_rows, -1, *features.feat_sizes[-1])

    def _condition_on_memory(self, features: ClipFeatures, index: int, memory: StreamMemory) -> Tensor:
        """Memory attention over the previous frames' spatial memories and object pointers."""
        bank = memory.bank
        if len(bank) == 0:
            return self._without_memory(features, index)

        def frame_tokens(maps: Tensor) -> Tensor:  # [n, R, mem_dim, h, w] -> [n*h*w, R, mem_dim]
            return maps.flatten(3).permute(0, 3, 1, 2).flatten(0, 1)

        # temporal encoding by distance: the oldest of n spatial memories is n frames back
        tpos_enc = self.sam.maskmem_tpos_enc
        distances = torch.arange(bank.features.shape[0], 0, -1, device=tpos_enc.device)
        tpos = tpos_enc[(distances - 1).clamp(max=tpos_enc.shape[0] - 1)]  # [n, 1, 1, mem_dim]
        tokens = [frame_tokens(bank.features)]
        token_pos = [(bank.pos_enc.flatten(3).permute(0, 3, 1, 2) + tpos).flatten(0, 1)]
        num_ptr_tokens = 0
        if self.sam.use_obj_ptrs_in_encoder:
            hidden, mem_dim = self.sam.hidden_dim, self.sam.mem_dim
            # each C-dim pointer (newest first) becomes C/mem_dim tokens with a zero positional encoding (as released)
            ptrs = bank.pointers.reshape(len(bank), features.num_rows, hidden // mem_dim, mem_dim)
            ptrs = ptrs.permute(0, 2, 1, 3).flatten(0, 1)  # [m*C/mem_dim, R, mem_dim]
            tokens.append(ptrs)
            token_pos.append(ptrs.new_zeros(ptrs.shape))
            num_ptr_tokens = ptrs.shape[0]

        conditioned = self.sam.memory_attention(
            curr=features.frame_feats(index)[-1:],
            curr_pos=features.frame_pos(index)[-1:],
            memory=torch.cat(tokens, dim=0),
            memory_pos=torch.cat(token_pos, dim=0),
            num_obj_ptr_tokens=num_ptr_tokens,
        )
        return conditioned.permute(1, 2, 0).reshape(features.num_rows, -1, *features.feat_sizes[-1])

    def _prompt_tokens(self, features: ClipFeatures, index: int, with_motion: bool) -> Tensor:
        """Extra sparse prompt tokens [R, k, C]: the projected sentence state, then the motion token."""
        tokens = [self.text_prompt(features.text_state[:, index]).unsqueeze(1)]
        if with_motion and self.motion_prompt is not None:
            tokens.append(self.motion_prompt(features.motion_state[:, index]))
        return torch.cat(tokens, dim=1)

    def _decode(self, features: ClipFeatures, index: int, pix_feat: Tensor, with_motion: bool) -> FrameDecoding:
        with self._prompt_hook.appended(self._prompt_tokens(features, index, with_motion)):
            return self._run_sam_heads(pix_feat, features.high_res_feats(index))

    def _run_sam_heads(self, pix_feat: Tensor, high_res_feats: list[Tensor],
                       point_inputs: dict[str, Tensor] | None = None) -> FrameDecoding:
        _, _, iou, low_res, high_res, obj_ptr, object_score = self.sam._forward_sam_heads(
            backbone_features=pix_feat,
            point_inputs=point_inputs,
            high_res_features=high_res_feats,
            multimask_output=False,
        )
        if self.training:  # train on the ungated logits, as the release does
            low_res = self._raw_masks.pop().float()
            high_res = F.interpolate(low_res, size=high_res.shape[-2:], mode="bilinear", align_corners=False)
        return FrameDecoding(low_res, high_res, obj_ptr, object_score, iou)

    def encode_memory(self, features: ClipFeatures, index: int, high_res_logits: Tensor,
                      decoded: FrameDecoding) -> MemoryEntry:
        """Memory of one frame from its un-conditioned top-level feature, the chosen mask logits and
        the object pointer of its memory-conditioned decoding."""
        mem_features, mem_pos = self.sam._encode_new_memory(
            current_vision_feats=features.frame_feats(index),
            feat_sizes=features.feat_sizes,
            pred_masks_high_res=high_res_logits,
            object_score_logits=decoded.object_score_logits,
            is_mask_from_pts=False,
        )
        return MemoryEntry(features=mem_features, pos_enc=mem_pos[-1], obj_ptr=decoded.obj_ptr)

    # ---- the clip forward ---------------------------------------------------------------------

    def forward_clip(self, frames: Tensor, query: TextQuery, frame_indices: Sequence[int],
                     memory: StreamMemory, use_cme: bool | None = None,
                     cme_window: int = RELEASE_DECISION_WINDOW) -> list[FrameOutput]:
        """The release's inference forward over one clip: joint backbone, then frame-by-frame decoding,
        the CME on the frames its window allows, and the new memories written into `memory`.

        Past the CME's first window every frame runs the memory-less decoding's first decoder block (the
        rest of the window rule applies on the device); the memory-less mask is decoded only on a switch,
        for which the host waits on the device's decision (the compiled `forward_steady` branches in its
        graph instead).
        In frame mode (`memory.fusion_context` set) `frames` holds the one new frame.
        `use_cme` (default: when the weights hold a trained CME) and `cme_window` are the caller's choice.
        """
        use_cme = self.config.cme_trained if use_cme is None else use_cme
        features = self.encode_clip(frames, query, memory.fusion_context)
        return [
            self._track_frame(features, index, frame_index, memory,
                              use_cme and cme_window_open(frame_index, memory.last_cme_switch, cme_window))
            for index, frame_index in enumerate(frame_indices)
        ]

    forward = forward_clip  # the module's forward is inference; training has `forward_train`

    def forward_steady(self, frames: Tensor, query: TextQuery, first_index: Tensor, memory: StreamMemory,
                       use_cme: bool, cme_window: int = RELEASE_DECISION_WINDOW) -> list[FrameOutput]:
        """`forward_clip` for streams past their warm-up (`warm_up_frames`): every frame past the CME's first
        window, the memory bank and the fusion context full. Then every input is a tensor whose shape stays
        the same from call to call (`first_index`: each row's first frame index, a [R] device tensor: the
        rows may be at different positions of their streams), so that `torch.compile` compiles it once;
        the outputs' frame indices are device tensors."""
        features = self.encode_clip(frames, query, memory.fusion_context)
        outputs = []
        for index in range(frames.shape[0]):
            frame_index = first_index + index
            window_open = use_cme and spaced_from_last_switch(frame_index, memory.last_cme_switch, cme_window)
            outputs.append(self._track_frame(features, index, frame_index, memory, window_open))
        return outputs

    def warm_up_frames(self, frame_window: int | None = None, cme_window: int = RELEASE_DECISION_WINDOW) -> int:
        """Frames after which a stream's state keeps its size (see `forward_steady`)."""
        bank = self.new_stream_memory().bank
        return max(bank.num_pointers, bank.num_spatial, (frame_window or 1) - 1, cme_window + 1)

    def _track_frame(self, features: ClipFeatures, index: int, frame_index: int | Tensor, memory: StreamMemory,
                     window_open: bool | Tensor) -> FrameOutput:
        """Decode one frame of a clip with the memory, let the CME decide where `window_open` (False, or a
        device bool per row), and write the frame's memory."""
        decoded = self.decode_with_memory(features, index, memory)
        memory_logits, cme_logits = decoded.high_res_logits, None
        ran = switched = torch.zeros(features.num_rows, dtype=torch.bool, device=memory_logits.device)
        if window_open is not False:
            ran = torch.as_tensor(window_open, device=memory_logits.device).expand(features.num_rows)
            cme_logits, switched, memory_logits = self._let_cme_decide(features, index, decoded, ran)
            memory.last_cme_switch = torch.where(switched, frame_index, memory.last_cme_switch)
        memory.bank.add(self.encode_memory(features, index, memory_logits, decoded))
        return FrameOutput(frame_index, decoded.low_res_logits, decoded.object_score_logits, cme_logits, ran, switched,
                           memory_logits)

    def _let_cme_decide(self, features: ClipFeatures, index: int, decoded: FrameDecoding,
                        window_open: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """The CME's logits and whether it switched, per row, and the high-res logits the memory gets: the
        memory path's, or where it switched those reweighted by the memory-less mask, which is decoded
        only when some row switched."""
        # the hook's tokens are set outside the branch: a branch of a compiled graph keeps no Python state
        with self._prompt_hook.appended(self._prompt_tokens(features, index, with_motion=False)):
            pix_feat = self._without_memory(features, index)
            cme_logits = self.cme(decoded.obj_ptr.detach(), self._first_block_mask_token(pix_feat).detach())
            switched = window_open & (cme_logits.argmax(-1) == 1)  # [R]

            def reweighted(memory_logits: Tensor, switched: Tensor, pix_feat: Tensor, *high_res_feats: Tensor) -> Tensor:
                memoryless = self._run_sam_heads(pix_feat, list(high_res_feats)).high_res_logits
                reweighted = reweight_memory_logits(memory_logits, memoryless, self.config.switch_memory)
                return torch.where(switched.view(-1, 1, 1, 1), reweighted, memory_logits)

            memory_logits = branch(switched.any(), reweighted, lambda logits, *_: logits,
                                   (decoded.high_res_logits, switched, pix_feat, *features.high_res_feats(index)))
            return cme_logits, switched, memory_logits

    def forward_train(self, frames: Tensor, query: TextQuery, train_object_scores: bool = False,
                      train_memoryless: bool = False, memory: StreamMemory | None = None,
                      first_index: int = 0) -> list[TrainFrameOutput]:
        """The release's training forward on one clip: a fresh memory and clip-relative frame indices,
        the CME evaluated where its window allows but never applied, with its self-supervised label
        (1: the memory path and the memory-less path segment different objects). `train_object_scores`
        keeps the object scores' graph, for a model whose SAM2 is trained too (from scratch);
        `train_memoryless` the memory-less masks' graph, for a loss on them. A `memory` filled by
        `forward_clip` with the stream's earlier frames continues that stream from `first_index`."""
        features = self.encode_clip(frames, query)
        memory = self.new_stream_memory() if memory is None else memory
        resized_hw = tuple(frames.shape[-2:])
        outputs = []
        for index in range(frames.shape[0]):
            frame_index = first_index + index
            pix_feat = self._condition_on_memory(features, index, memory)
            decoded = self._decode(features, index, pix_feat, with_motion=True)
            masks = self.postprocess_logits(decoded.low_res_logits, resized_hw, resized_hw)
            cme_logits = cme_label = memoryless_masks = None
            if self.config.cme_trained and cme_window_open(frame_index, 0, RELEASE_DECISION_WINDOW):
                early_obj_ptr = self.early_pointer_without_memory(features, index)
                cme_logits = self.cme(decoded.obj_ptr.detach(), early_obj_ptr.detach())
                memoryless = self.decode_without_memory(features, index)
                memoryless_masks = self.postprocess_logits(memoryless.low_res_logits, resized_hw, resized_hw)
                cme_label = same_object_labels(masks[:, 0].detach(), memoryless_masks[:, 0].detach(),
                                               memoryless.object_score_logits.detach())
                if not train_memoryless:
                    memoryless_masks = memoryless_masks.detach()
            memory.bank.add(self.encode_memory(features, index, decoded.high_res_logits, decoded))
            object_scores = decoded.object_score_logits if train_object_scores else decoded.object_score_logits.detach()
            outputs.append(TrainFrameOutput(masks, object_scores, cme_logits, cme_label, memoryless_masks, pix_feat))
        return outputs

    def postprocess_logits(self, low_res_logits: Tensor, resized_hw: tuple[int, int],
                           output_hw: tuple[int, int]) -> Tensor:
        """[N, K, s, s] -> [N, K, *output_hw] (mask logits: K = 1, s = S/4): upsample to the padded input,
        crop, resize (as released)."""
        size = self.image_size
        logits = F.interpolate(low_res_logits.float(), (size, size), mode="bilinear", align_corners=False)
        logits = logits[..., : resized_hw[0], : resized_hw[1]]
        if tuple(output_hw) != tuple(resized_hw):
            logits = F.interpolate(logits, output_hw, mode="bilinear", align_corners=False)
        return logits


def branch(condition: Tensor, if_true: Callable, if_false: Callable, operands: tuple[Tensor, ...]) -> Tensor:
    """`if_true(*operands)` where the device bool `condition` holds, else `if_false(*operands)`: inside a
    compiled graph as `torch.cond` (one graph however it goes), eagerly as a Python branch."""
    if not torch.compiler.is_compiling():
        return if_true(*operands) if condition else if_false(*operands)
    shapes = [operand.shape for operand in operands]

    def unflattened(function: Callable) -> Callable:
        # a branch of torch.cond may not return its operands: its result is a copy
        return lambda *flat: function(*(operand.view(shape) for operand, shape in zip(flat, shapes))).clone()

    # the operands go in flat: inductor may lay a tensor out otherwise than the branches were traced for
    flat = tuple(operand.reshape(-1) for operand in operands)
    return torch.cond(condition, unflattened(if_true), unflattened(if_false), flat)
