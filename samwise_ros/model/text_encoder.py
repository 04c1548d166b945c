"""Text encoders from `transformers`, run layer by layer so the CMT adapters can fuse between layers."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from transformers import CLIPTextConfig, CLIPTextModel, RobertaConfig, RobertaModel
from transformers.masking_utils import create_bidirectional_mask, create_causal_mask


class TextEncoder(nn.Module):
    """Common interface: embed tokens, run a range of layers, read the sentence state."""

    hidden_size: int
    num_layers: int

    def embed(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """Token ids [B, L] -> input states of layer 0, [B, L, C]."""
        raise NotImplementedError

    def run_layers(self, hidden: Tensor, start: int, end: int, attention_mask: Tensor) -> Tensor:
        """Apply layers start..end-1 to [B, L, C] states."""
        raise NotImplementedError

    def sentence_state(self, hidden: Tensor, input_ids: Tensor) -> Tensor:
        """Final states [B, L, C] -> one vector per sentence [B, C] (the decoder's text prompt)."""
        raise NotImplementedError


class RobertaTextEncoder(TextEncoder):
    """RoBERTa as the release uses it: fairseq embedding semantics, sentence state = token 0 (<s>)."""

    def __init__(self, config: dict[str, Any]):
        super().__init__()
        self.model = RobertaModel(RobertaConfig(**config), add_pooling_layer=False)
        self.hidden_size = self.model.config.hidden_size
        self.num_layers = self.model.config.num_hidden_layers

    def embed(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        # fairseq has no token-type embedding (the loader sets transformers' one to zero) and
        # zeroes the states of padded positions before the first layer.
        hidden = self.model.embeddings(input_ids=input_ids)
        return hidden * attention_mask.unsqueeze(-1).to(hidden.dtype)

    def run_layers(self, hidden: Tensor, start: int, end: int, attention_mask: Tensor) -> Tensor:
        mask = create_bidirectional_mask(config=self.model.config, inputs_embeds=hidden, attention_mask=attention_mask)
        for layer in self.model.encoder.layer[start:end]:
            hidden = layer(hidden, mask)
        return hidden

    def sentence_state(self, hidden: Tensor, input_ids: Tensor) -> Tensor:
        return hidden[:, 0]


class ClipTextEncoder(TextEncoder):
    """CLIP's causal text transformer; sentence state = final-norm state of the end-of-text token."""

    def __init__(self, config: dict[str, Any]):
        super().__init__()
        self.model = CLIPTextModel(CLIPTextConfig(**config))
        self.hidden_size = self.model.config.hidden_size
        self.num_layers = self.model.config.num_hidden_layers

    def embed(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        return self.model.embeddings(input_ids=input_ids)

    def run_layers(self, hidden: Tensor, start: int, end: int, attention_mask: Tensor) -> Tensor:
        mask = create_causal_mask(
            config=self.model.config, inputs_embeds=hidden, attention_mask=attention_mask, past_key_values=None
        )
        for layer in self.model.encoder.layers[start:end]:
            hidden = layer(hidden, mask, is_causal=True)
        return hidden

    def sentence_state(self, hidden: Tensor, input_ids: Tensor) -> Tensor:
        # Token 0 of a causal encoder has seen nothing but itself, so CLIP's pooled token is used.
        final = self.model.final_layer_norm(hidden)
        eos = (input_ids == self.model.config.eos_token_id).int().argmax(dim=-1)
        return final[torch.arange(final.shape[0], device=final.device), eos]


def build_text_encoder(kind: str, config: dict[str, Any]) -> TextEncoder:
    encoders = {"roberta": RobertaTextEncoder, "clip": ClipTextEncoder}
    return encoders[kind](config)
