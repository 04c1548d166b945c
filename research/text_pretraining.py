"""Pre-training a small text encoder on the synthetic expressions, before training a model from scratch.

The release starts from a pre-trained RoBERTa, whose sentence state already tells expressions apart. A
text encoder trained from scratch inside SAMWISE does not: its sentence state stays nearly the same for
every expression (cosine similarity ~1.0 after thousands of steps here), so the decoder's text prompt
carries no information and the model learns to segment every shape. This stage gives the tiny encoder
what pre-training gives RoBERTa: from the sentence state, linear probes predict each attribute the
expression says (shape, colour, size, direction, appearing later; "not said" is a class), trained
jointly with the encoder. The probes are discarded afterwards.
"""

from __future__ import annotations

import random
from dataclasses import astuple, fields

import torch
import torch.nn.functional as F
from torch import nn

from samwise_ros.data.synthetic import COLOURS, DIRECTIONS, SHAPES, SIZES, Description, scene_descriptions
from samwise_ros.model import Samwise

# per Description field: the values it can take (None = not said)
ATTRIBUTE_VALUES = {
    "shape": tuple(SHAPES),
    "colour": (None, *COLOURS),
    "size": (None, *SIZES),
    "direction": (None, *DIRECTIONS),
    "appears_later": (None, True),
}


def attribute_targets(description: Description) -> list[int]:
    return [ATTRIBUTE_VALUES[f.name].index(value) for f, value in zip(fields(Description), astuple(description))]


def labelled_expressions() -> list[tuple[str, list[int]]]:
    return [(text, attribute_targets(d)) for d in scene_descriptions() for text in d.phrasings()]


class AttributeProbes(nn.Module):
    """Linear probes reading each attribute an expression says from a text vector: the sentence state
    (`on_prompt=False`) or the decoder's text prompt made from it (`on_prompt=True`)."""

    def __init__(self, model: Samwise, on_prompt: bool = False):
        super().__init__()
        self.on_prompt = on_prompt
        width = model.sam.sam_prompt_encoder.embed_dim if on_prompt else model.text_encoder.hidden_size
        self.heads = nn.ModuleList(nn.Linear(width, len(values)) for values in ATTRIBUTE_VALUES.values())
        self.targets = dict(labelled_expressions())

    def logits(self, model: Samwise, texts: list[str]) -> list[torch.Tensor]:
        encoder = model.text_encoder
        tokens = model.tokenizer(texts, padding=True, return_tensors="pt").to(model.device)
        hidden = encoder.embed(tokens["input_ids"], tokens["attention_mask"])
        hidden = encoder.run_layers(hidden, 0, encoder.num_layers, tokens["attention_mask"])
        vector = encoder.sentence_state(hidden, tokens["input_ids"])
        if self.on_prompt:
            vector = model.text_prompt(vector)
        return [head(vector) for head in self.heads]

    def forward(self, model: Samwise, texts: list[str]) -> torch.Tensor:
        """Summed cross-entropy over the attributes of the texts the synthetic generator can say."""
        known = [text for text in texts if text in self.targets]
        if not known:
            return sum(p.sum() for p in self.parameters()) * 0.0
        targets = torch.tensor([self.targets[text] for text in known], device=model.device)
        return sum(F.cross_entropy(head, targets[:, k]) for k, head in enumerate(self.logits(model, known)))


def pretrain_text_encoder(model: Samwise, steps: int, batch_size: int = 32, lr: float = 1e-3,
                          seed: int = 0) -> float:
    """Train `model.text_encoder` to expose every said attribute in its sentence state; returns the
    probes' accuracy over all expressions at the end."""
    torch.manual_seed(seed)  # the probes' initialisation: the same on every DDP rank
    probes = AttributeProbes(model).to(model.device)
    optimizer = torch.optim.AdamW([*model.text_encoder.parameters(), *probes.parameters()], lr=lr, weight_decay=0.0)
    texts = list(probes.targets)
    rng = random.Random(seed)
    model.text_encoder.train()
    for _ in range(steps):
        loss = probes(model, rng.sample(texts, batch_size))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        targets = torch.tensor([probes.targets[text] for text in texts], device=model.device)
        logits = probes.logits(model, texts)
        correct = torch.stack([head.argmax(1) == targets[:, k] for k, head in enumerate(logits)]).all(0)
    return correct.float().mean().item()
