"""A download step's corpus on disk: ``shard-NNNNN.jsonl`` files, written and read back in order.

Each shard holds UTF-8 JSON lines ``{"id": ..., "text": ...}`` (see experiments/tokenize.py
for the whole layout). fsspec is imported by the functions that use it, not at import.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import TYPE_CHECKING

from experiments.stepio import numbered_files

if TYPE_CHECKING:
    from fsspec import AbstractFileSystem

SHARD_RE = re.compile(r"shard-(\d+)\.jsonl")


def shard_name(n: int) -> str:
    """The file name of shard number ``n``: ``shard-NNNNN.jsonl``."""
    return f"shard-{n:05d}.jsonl"


def shard_line(doc_id: str, text: str) -> str:
    """One document as a shard's line (newline included)."""
    return json.dumps({"id": doc_id, "text": text}, ensure_ascii=False) + "\n"


def corpus_shards(corpus: str) -> tuple[AbstractFileSystem, list[str]]:
    """The filesystem and the sorted ``shard-NNNNN.jsonl`` paths of a download output."""
    from fsspec.core import url_to_fs

    fs, root = url_to_fs(corpus)
    shards = numbered_files(fs, root, SHARD_RE)
    if not shards:
        raise FileNotFoundError(
            f"no shard-NNNNN.jsonl files under corpus={corpus!r}: is it a download step's output?"
        )
    return fs, shards


def read_corpus(corpus: str) -> Iterator[tuple[str, str]]:
    """(id, text) of every document of a download output, in order."""
    fs, shards = corpus_shards(corpus)
    for shard in shards:
        yield from read_shard(fs, shard)


def read_shard(fs: AbstractFileSystem, path: str) -> Iterator[tuple[str, str]]:
    """(id, text) of every document of one shard, in order."""
    # Split on b"\n" only: json.dumps escapes newlines, but ensure_ascii=False keeps U+2028.
    for line in fs.cat_file(path).split(b"\n"):
        if line:
            record = json.loads(line)
            yield record["id"], record["text"]
