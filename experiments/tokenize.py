"""Tokenize experiment: gather a text corpus, train a byte-level BPE tokenizer, tokenize it.

The three steps of ``conf/experiment/tokenize.yaml`` (``python -m confpipe +experiment=tokenize``)::

    download         files from any fsspec URL or glob, or ``stdlib``  ->  shard-NNNNN.jsonl
    train_tokenizer  shard-*.jsonl                                     ->  tokenizer.json
    tokenize         shard-*.jsonl + tokenizer.json                    ->  tokens-NNNNN.npy,
                                                                           offsets-NNNNN.npy,
                                                                           index.json, stats.json

Everything runs offline: the default corpus is the running interpreter's standard library
sources, and the tokenizer is trained locally with HF ``tokenizers``. Inputs are read and
outputs written through fsspec, so every path may be a local directory or a URL (``gs://``,
``memory://``, ...). For a given config (and source contents: ``stdlib`` is the running
Python's) the data files are byte-for-byte deterministic, whatever the thread count; only the
timings in the returned stats and ``stats.json`` vary.

File formats
------------
``shard-NNNNN.jsonl``
    UTF-8 JSON lines ``{"id": <path relative to the source root>, "text": <file contents>}``,
    in sorted path order, ``shard_docs`` documents per shard.
``tokenizer.json``
    An HF ``tokenizers`` file: ``tokenizers.Tokenizer.from_file("tokenizer.json")``.
``tokens-NNNNN.npy``
    One flat 1-D array per corpus shard (``uint16`` when every id fits, else ``uint32``):
    each document's tokens followed by one ``eos_token`` id.
``offsets-NNNNN.npy``
    ``int64``, one more entry than the shard has documents: document ``i`` is
    ``tokens[offsets[i] : offsets[i + 1] - 1]`` and ``tokens[offsets[i + 1] - 1]`` is the
    separator, so ``offsets[-1] == len(tokens)``.
``index.json``
    dtype, eos id, vocabulary size and, per shard, its file names, documents and tokens.
"""

from __future__ import annotations

import json
import logging
import posixpath
import re
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from experiments.bpe import TOKENIZER_FILE, load_tokenizer, train_bpe
from experiments.corpus import (
    SHARD_RE,
    corpus_shards,
    read_corpus,
    read_shard,
    shard_line,
    shard_name,
)
from experiments.sources import SAMPLES, STDLIB, list_source, read_texts, relative, select
from experiments.stepio import check, join, prepare_output, write_json, write_npy

log = logging.getLogger(__name__)

# fsspec, tokenizers and numpy are imported by the code that runs a step, not at import:
# confpipe imports this module to check each step's arguments, and a cached run runs nothing.

__all__ = ["download", "train_tokenizer", "tokenize"]

EOS_TOKEN = "<|endoftext|>"
BYTE_ALPHABET = 256


# --------------------------------------------------------------------------------------------
# download


def download(
    output_path: str,
    source: str = STDLIB,
    pattern: str | None = None,
    max_docs: int | None = None,
    sample: str = "first",
    shard_docs: int = 1000,
    min_chars: int = 1,
) -> dict[str, Any]:
    """Gather text files into JSONL shards ``shard-NNNNN.jsonl`` under ``output_path``.

    Config keys:
        source: where the files are. A directory (local path or fsspec URL such as
            ``gs://bucket/texts``, ``memory://corpus``), a single file, or a glob
            (``/data/**/*.txt``). The special value ``stdlib`` means the running interpreter's
            standard library directory (``sysconfig.get_paths()["stdlib"]``, without
            ``site-packages``/``dist-packages``): a corpus every machine has, offline. (To
            read a directory that happens to be named ``stdlib``, write ``./stdlib``.)
        pattern: glob relative to a directory ``source`` (``**`` spans directories). Default:
            ``**/*.py`` for ``stdlib``, ``**/*`` otherwise. Not allowed with a glob ``source``.
        max_docs: keep at most this many documents (null: all).
        sample: which files ``max_docs`` keeps: ``first`` (the first ones in sorted path
            order) or ``spread`` (the sorted list is cut into ``max_docs`` equal runs and the
            first usable file of each run is kept: a cross-section of the whole source).
        shard_docs: documents per JSONL shard.
        min_chars: skip files shorter than this many characters (1 skips empty files).

    Files are read in sorted path order; files that are not valid UTF-8, and files or
    directories whose name starts with ``.``, are skipped. Document ids are paths relative to
    the source's root (the directory, or a glob's fixed leading part).

    Returns: source, root, pattern, candidates (files matched), documents, shards, bytes
    (UTF-8 text bytes), chars, skipped_short, skipped_undecodable, seconds.
    """
    start = time.perf_counter()
    check(max_docs is None or max_docs >= 1, f"max_docs must be >= 1 or null, got {max_docs}")
    check(sample in SAMPLES, f"sample must be one of {', '.join(SAMPLES)}; got {sample!r}")
    check(shard_docs >= 1, f"shard_docs must be >= 1, got {shard_docs}")
    check(min_chars >= 0, f"min_chars must be >= 0, got {min_chars}")

    src_fs, root, files, effective_pattern = list_source(source, pattern)
    if not files:
        raise FileNotFoundError(f"download: no files match source={source!r} (root {root!r})")

    skipped = {"short": 0, "undecodable": 0}

    def read(indices: Sequence[int]) -> list[str | None]:
        return read_texts(pool, src_fs, [files[i] for i in indices], min_chars, skipped)

    # Stream the kept documents (in sorted order) into shards: memory holds one shard.
    out_fs, out_root = prepare_output(output_path, SHARD_RE)
    n_docs = n_bytes = n_chars = n_shards = 0
    lines: list[str] = []

    def flush() -> None:
        nonlocal n_shards
        out_fs.pipe_file(join(out_root, shard_name(n_shards)), "".join(lines).encode())
        n_shards += 1
        lines.clear()

    with ThreadPoolExecutor(max_workers=8) as pool:
        for i, text in select(len(files), max_docs, sample, read):
            n_docs += 1
            n_chars += len(text)
            n_bytes += len(text.encode("utf-8"))
            lines.append(shard_line(relative(root, files[i]), text))
            if len(lines) == shard_docs:
                flush()
    if lines:
        flush()
    if n_docs == 0:
        raise ValueError(
            f"download: none of the {len(files)} files matching source={source!r} is usable "
            f"({skipped['short']} shorter than min_chars={min_chars}, "
            f"{skipped['undecodable']} not UTF-8)"
        )

    from fsspec.implementations.local import LocalFileSystem

    stats: dict[str, Any] = {
        "source": source,
        "root": root if isinstance(src_fs, LocalFileSystem) else src_fs.unstrip_protocol(root),
        "pattern": effective_pattern,
        "candidates": len(files),
        "documents": n_docs,
        "shards": n_shards,
        "bytes": n_bytes,
        "chars": n_chars,
        "skipped_short": skipped["short"],
        "skipped_undecodable": skipped["undecodable"],
        "seconds": round(time.perf_counter() - start, 3),
    }
    log.info(
        "%d documents (%d bytes) of %d files in %d shards; skipped %d short, %d not UTF-8",
        n_docs, n_bytes, len(files), n_shards, skipped["short"], skipped["undecodable"],
    )  # fmt: skip
    write_json(out_fs, join(out_root, "stats.json"), stats)
    return stats


# --------------------------------------------------------------------------------------------
# train_tokenizer


def train_tokenizer(
    output_path: str,
    corpus: str,
    vocab_size: int = 2048,
    min_frequency: int = 2,
    max_docs: int | None = None,
    eos_token: str = EOS_TOKEN,
) -> dict[str, Any]:
    """Train a byte-level BPE tokenizer on a corpus; save ``tokenizer.json`` under output_path.

    The tokenizer is GPT-2 style: byte-level pre-tokenizer (no prefix space) and decoder, so
    any string round-trips: ``decode(encode(x).ids) == x``. (Text that spells ``eos_token``
    becomes the special id unless ``tokenizer.encode_special_tokens = True``, which
    ``tokenize`` sets.) Training is local (HF ``tokenizers``); nothing is downloaded.

    Config keys:
        corpus: a ``download`` step's output path (``${step:download}``): its
            ``shard-*.jsonl`` files are read in order.
        vocab_size: target vocabulary size, including the 256 byte tokens and ``eos_token``
            (so at least 257). The result may be smaller on a small corpus.
        min_frequency: a pair must occur at least this often to be merged.
        max_docs: train on the first this-many documents only (null: all).
        eos_token: the special token that ``tokenize`` puts after every document.

    Returns: tokenizer (path of tokenizer.json), vocab_size (actual), requested_vocab_size,
    merges, documents, bytes, eos_token, eos_id, seconds.
    """
    start = time.perf_counter()
    check(
        vocab_size > BYTE_ALPHABET,
        f"vocab_size must be > {BYTE_ALPHABET} (the byte alphabet plus eos), got {vocab_size}",
    )
    check(min_frequency >= 1, f"min_frequency must be >= 1, got {min_frequency}")
    check(max_docs is None or max_docs >= 1, f"max_docs must be >= 1 or null, got {max_docs}")
    check(bool(eos_token), "eos_token must be a non-empty string")

    seen = {"documents": 0, "bytes": 0}

    def batches() -> Iterator[list[str]]:
        batch: list[str] = []
        for _, text in read_corpus(corpus):
            if max_docs is not None and seen["documents"] >= max_docs:
                break
            seen["documents"] += 1
            seen["bytes"] += len(text.encode("utf-8"))
            batch.append(text)
            if len(batch) == 256:
                yield batch
                batch = []
        if batch:
            yield batch

    tok = train_bpe(batches(), vocab_size, min_frequency, eos_token)

    out_fs, out_root = prepare_output(output_path)
    path = join(out_root, TOKENIZER_FILE)
    saved = tok.to_str(pretty=True)
    out_fs.pipe_file(path, saved.encode())
    stats: dict[str, Any] = {
        "tokenizer": join(output_path, TOKENIZER_FILE),
        "vocab_size": tok.get_vocab_size(with_added_tokens=True),
        "requested_vocab_size": vocab_size,
        "merges": len(json.loads(saved)["model"]["merges"]),
        "documents": seen["documents"],
        "bytes": seen["bytes"],
        "eos_token": eos_token,
        "eos_id": tok.token_to_id(eos_token),
        "seconds": round(time.perf_counter() - start, 3),
    }
    log.info(
        "vocabulary of %d tokens (%d merges) from %d documents",
        stats["vocab_size"], stats["merges"], seen["documents"],
    )  # fmt: skip
    write_json(out_fs, join(out_root, "stats.json"), stats)
    return stats


# --------------------------------------------------------------------------------------------
# tokenize


def tokenize(
    output_path: str,
    corpus: str,
    tokenizer: str,
    batch_size: int = 256,
    eos_token: str = EOS_TOKEN,
) -> dict[str, Any]:
    """Encode every corpus document into numpy token shards under output_path.

    For each corpus shard ``shard-NNNNN.jsonl`` it writes ``tokens-NNNNN.npy`` (one flat
    array: each document's ids then one ``eos_token`` id; ``uint16`` if the vocabulary fits,
    else ``uint32``) and ``offsets-NNNNN.npy`` (``int64`` document start positions plus the
    end), then ``index.json`` and ``stats.json`` (see the module docstring for the layout).
    Text that spells a special token (``<|endoftext|>``) is encoded as plain text, so the
    separator id only ever marks document ends. Needs nothing from the driver: it can run as
    a job.

    Config keys:
        corpus: a ``download`` step's output path (``${step:download}``).
        tokenizer: a ``tokenizer.json`` path or URL, or a ``train_tokenizer`` step's output
            path (``${step:train_tokenizer}``), in which case its tokenizer.json is used.
        batch_size: documents per ``encode_batch`` call (encoding runs on all cores).
        eos_token: the separator appended after every document; must be in the vocabulary.

    Returns (and writes to stats.json): documents, tokens (array elements, separators
    included), text_tokens (without separators), bytes (UTF-8 text bytes), bytes_per_token
    (bytes / text_tokens), seconds (the whole step), encode_seconds, tokens_per_second
    (tokens / seconds), shards, dtype, vocab_size, eos_id.
    """
    import numpy as np

    start = time.perf_counter()
    check(batch_size >= 1, f"batch_size must be >= 1, got {batch_size}")
    tok = load_tokenizer(tokenizer)
    tok.encode_special_tokens = True  # "<|endoftext|>" inside a document is just text
    eos_id = tok.token_to_id(eos_token)
    if eos_id is None:
        raise ValueError(f"eos_token {eos_token!r} is not in the tokenizer's vocabulary")
    # encode_batch_fast (tokenizers >= 0.20) skips the offsets that encode_batch computes.
    encode_batch = getattr(tok, "encode_batch_fast", tok.encode_batch)
    vocab_size = tok.get_vocab_size(with_added_tokens=True)
    max_id = max(tok.get_vocab(with_added_tokens=True).values())
    dtype = np.dtype(np.uint16 if max_id <= np.iinfo(np.uint16).max else np.uint32)

    in_fs, shards = corpus_shards(corpus)
    out_fs, out_root = prepare_output(output_path, re.compile(r"(tokens|offsets)-\d+\.npy"))
    index: list[dict[str, Any]] = []
    n_docs = n_tokens = n_bytes = 0
    encode_seconds = 0.0
    for n, shard in enumerate(shards):
        texts = [text for _, text in read_shard(in_fs, shard)]
        flat: list[int] = []
        lengths: list[int] = []
        for lo in range(0, len(texts), batch_size):
            t0 = time.perf_counter()
            encodings = encode_batch(texts[lo : lo + batch_size], add_special_tokens=False)
            encode_seconds += time.perf_counter() - t0
            for encoding in encodings:
                ids = encoding.ids
                flat.extend(ids)
                flat.append(eos_id)
                lengths.append(len(ids) + 1)
        tokens = np.array(flat, dtype=dtype)
        offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        names = {"tokens": f"tokens-{n:05d}.npy", "offsets": f"offsets-{n:05d}.npy"}
        write_npy(out_fs, join(out_root, names["tokens"]), tokens)
        write_npy(out_fs, join(out_root, names["offsets"]), offsets)
        index.append(
            {
                "source": posixpath.basename(shard),
                "tokens_file": names["tokens"],
                "offsets_file": names["offsets"],
                "documents": len(texts),
                "tokens": int(tokens.size),
            }
        )
        n_docs += len(texts)
        n_tokens += int(tokens.size)
        n_bytes += sum(len(text.encode("utf-8")) for text in texts)

    meta = {"dtype": dtype.name, "eos_token": eos_token, "eos_id": eos_id}
    write_json(
        out_fs, join(out_root, "index.json"), {**meta, "vocab_size": vocab_size, "shards": index}
    )
    seconds = time.perf_counter() - start
    text_tokens = n_tokens - n_docs
    stats: dict[str, Any] = {
        "documents": n_docs,
        "tokens": n_tokens,
        "text_tokens": text_tokens,
        "bytes": n_bytes,
        "bytes_per_token": round(n_bytes / text_tokens, 4) if text_tokens else None,
        "seconds": round(seconds, 3),
        "encode_seconds": round(encode_seconds, 3),
        "tokens_per_second": round(n_tokens / seconds, 1) if seconds > 0 else None,
        "shards": len(shards),
        "vocab_size": vocab_size,
        **meta,
    }
    log.info(
        "%d tokens from %d documents in %d shards: %.2f bytes a token",
        n_tokens, n_docs, len(shards), stats["bytes_per_token"] or 0.0,
    )  # fmt: skip
    write_json(out_fs, join(out_root, "stats.json"), stats)
    return stats
