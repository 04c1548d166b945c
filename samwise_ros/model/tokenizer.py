"""A small byte-level BPE tokenizer in RoBERTa's format, trained with `tokenizers` on a given corpus.

Tiny models (tests, the demo, from-scratch training) cannot use roberta-base's 50k vocabulary, and
no tokenizer files can be downloaded here; this builds one that RobertaTokenizerFast loads.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

from tokenizers import ByteLevelBPETokenizer
from transformers import RobertaTokenizerFast

SPECIAL_TOKENS = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]  # ids 0..4, RoBERTa's first four ids


def train_roberta_tokenizer(corpus: Iterable[str], directory: str | Path, vocab_size: int = 1024) -> RobertaTokenizerFast:
    """Train on `corpus`, write vocab.json/merges.txt and the tokenizer config into `directory`."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(list(corpus), vocab_size=vocab_size, min_frequency=2, special_tokens=SPECIAL_TOKENS,
                            show_progress=False)
    bpe.save_model(str(directory))
    tokenizer = RobertaTokenizerFast(vocab=str(directory / "vocab.json"), merges=str(directory / "merges.txt"))
    tokenizer.save_pretrained(str(directory))
    return tokenizer
