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

from ..data.synthetic import COLOURS, DIRECTIONS, SHAPES, SIZES, Description, scene_descriptions
from ..model import Samwise

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


def pretrain_text_encoder(model: Samwise, steps: int, batch_size: int = 32, lr: float = 1e-3,
                          seed: int = 0) -> float:
    """Train `model.text_encoder` to expose every said attribute in its sentence state; returns the
    probes' accuracy over all expressions at the end."""
    encoder = model.text_encoder
    torch.manual_seed(seed)  # the probes' initialisation: the same on every DDP rank
    probes = nn.ModuleList(nn.Linear(encoder.hidden_size, len(v)) for v in ATTRIBUTE_VALUES.values()).to(model.device)
    optimizer = torch.optim.AdamW([*encoder.parameters(), *probes.parameters()], lr=lr, weight_decay=0.0)
    examples = labelled_expressions()
    rng = random.Random(seed)
    encoder.train()
    for _ in range(steps):
        batch = rng.sample(examples, batch_size)
        logits = _probe(model, probes, [text for text, _ in batch])
        targets = torch.tensor([t for _, t in batch], device=model.device)
        loss = sum(F.cross_entropy(head, targets[:, k]) for k, head in enumerate(logits))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        logits = _probe(model, probes, [text for text, _ in examples])
        targets = torch.tensor([t for _, t in examples], device=model.device)
        correct = torch.stack([head.argmax(1) == targets[:, k] for k, head in enumerate(logits)]).all(0)
    return correct.float().mean().item()


def _probe(model: Samwise, probes: nn.ModuleList, texts: list[str]) -> list[torch.Tensor]:
    encoder = model.text_encoder
    tokens = model.tokenizer(texts, padding=True, return_tensors="pt").to(model.device)
    hidden = encoder.embed(tokens["input_ids"], tokens["attention_mask"])
    hidden = encoder.run_layers(hidden, 0, encoder.num_layers, tokens["attention_mask"])
    sentence = encoder.sentence_state(hidden, tokens["input_ids"])
    return [probe(sentence) for probe in probes]
