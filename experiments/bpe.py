"""The byte-level BPE tokenizer (HF ``tokenizers``): train a fresh one, load a saved one.

GPT-2 style: a byte-level pre-tokenizer (no prefix space) and decoder, so any string
round-trips. ``tokenizers`` and fsspec are imported by the functions that use them, not at
import (see experiments/tokenize.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from experiments.stepio import join

if TYPE_CHECKING:
    from tokenizers import Tokenizer

TOKENIZER_FILE = "tokenizer.json"


def train_bpe(
    batches: Iterator[list[str]], vocab_size: int, min_frequency: int, eos_token: str
) -> Tokenizer:
    """A tokenizer trained locally on ``batches`` of texts, with ``eos_token`` as its special."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=[eos_token],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(batches, trainer=trainer)
    return tok


def load_tokenizer(ref: str) -> Tokenizer:
    """The tokenizer of a ``tokenizer.json`` path or URL, or of the folder that holds one."""
    from fsspec.core import url_to_fs
    from tokenizers import Tokenizer

    fs, path = url_to_fs(ref)
    if not path.endswith(".json"):
        path = join(path, TOKENIZER_FILE)
    return Tokenizer.from_str(fs.cat_file(path).decode("utf-8"))
