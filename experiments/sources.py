"""The files a download step reads: list a source (directory, file, glob, stdlib), pick, read.

``list_source`` turns a ``source``/``pattern`` pair into a filesystem, a root and the sorted
file paths; ``select`` streams the texts of the ones ``max_docs``/``sample`` keep, which
``read_texts`` reads and decodes. fsspec is imported by the functions that use it, not at
import (see experiments/tokenize.py).
"""

from __future__ import annotations

import os
import posixpath
import re
import sysconfig
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Executor
from typing import TYPE_CHECKING

from experiments.stepio import check

if TYPE_CHECKING:
    from fsspec import AbstractFileSystem

STDLIB = "stdlib"
"""The ``source`` value that means the running interpreter's standard library directory."""
STDLIB_PATTERN = "**/*.py"
DEFAULT_PATTERN = "**/*"
# Third-party packages and bytecode live under the stdlib directory but are not the stdlib.
STDLIB_PRUNE = frozenset({"site-packages", "dist-packages", "__pycache__"})
SAMPLES = ("first", "spread")
FETCH_CHUNK = 32  # files read concurrently (remote filesystems gain, local ones don't lose)


def list_source(source: str, pattern: str | None) -> tuple[AbstractFileSystem, str, list[str], str]:
    """(filesystem, root, sorted file paths, effective pattern) for a ``download`` source."""
    from fsspec.core import has_magic, url_to_fs
    from fsspec.implementations.local import LocalFileSystem
    from fsspec.utils import glob_translate

    if source == STDLIB:
        root = sysconfig.get_paths()["stdlib"]
        pat = pattern or STDLIB_PATTERN
        return LocalFileSystem(), root, _walk_local(root, pat, STDLIB_PRUNE), pat
    fs, path = url_to_fs(source)
    if has_magic(path):
        check(pattern is None, f"pattern={pattern!r} given with a glob source={source!r}")
        parts = path.split("/")
        fixed = next(k for k, part in enumerate(parts) if has_magic(part))
        root = "/".join(parts[:fixed])
        found = fs.glob(path, detail=True)
        files = [p for p, info in found.items() if info.get("type") == "file"]
        pat = "/".join(parts[fixed:])
    elif fs.isfile(path):
        return fs, posixpath.dirname(path), [path], posixpath.basename(path)
    elif fs.isdir(path):
        root = path.rstrip("/")
        pat = pattern or DEFAULT_PATTERN
        match = re.compile(glob_translate(pat)).match
        files = [p for p in fs.find(root) if match(relative(root, p))]
    else:
        raise FileNotFoundError(f"download: source {source!r} does not exist")
    files = sorted(p for p in files if not _hidden(relative(root, p)))
    return fs, root, files, pat


def _walk_local(root: str, pattern: str, prune: frozenset[str]) -> list[str]:
    """Files under local ``root`` whose relative path matches ``pattern``, pruning dir names."""
    from fsspec.utils import glob_translate

    match = re.compile(glob_translate(pattern)).match
    found = []
    for here, dirs, names in os.walk(root):
        dirs[:] = [d for d in dirs if d not in prune and not d.startswith(".")]
        rel_dir = os.path.relpath(here, root).replace(os.sep, "/")
        for name in names:
            rel = name if rel_dir == "." else f"{rel_dir}/{name}"
            if not name.startswith(".") and match(rel):
                found.append(f"{here}/{name}".replace(os.sep, "/"))
    return sorted(found)


def select(
    n: int,
    max_docs: int | None,
    sample: str,
    read: Callable[[Sequence[int]], list[str | None]],
) -> Iterator[tuple[int, str]]:
    """(index, text) of the kept files among ``n`` sorted ones, in sorted order.

    ``read`` gives the texts of a batch of files (None: unusable). ``first`` keeps the first
    ``max_docs`` usable files; ``spread`` cuts the list into ``max_docs`` equal runs and keeps
    the first usable file of each run. Batches are at most ``FETCH_CHUNK`` files.
    """
    if sample == "first" or max_docs is None or max_docs >= n:
        need = n if max_docs is None else max_docs
        pos = 0
        while need > 0 and pos < n:
            batch = range(pos, min(n, pos + min(need, FETCH_CHUNK)))
            pos = batch.stop
            for i, text in zip(batch, read(batch), strict=True):
                if text is not None:
                    need -= 1
                    yield i, text
        return
    bounds = [j * n // max_docs for j in range(max_docs + 1)]
    for lo in range(0, max_docs, FETCH_CHUNK):
        window = range(lo, min(max_docs, lo + FETCH_CHUNK))  # run numbers
        cursor = {j: bounds[j] for j in window}  # the next file to try in each run
        chosen: dict[int, tuple[int, str]] = {}
        while cursor:
            tries = list(cursor.items())
            texts = read([i for _, i in tries])
            for (j, i), text in zip(tries, texts, strict=True):
                if text is not None:
                    chosen[j] = (i, text)
                    del cursor[j]
                elif i + 1 < bounds[j + 1]:
                    cursor[j] = i + 1
                else:
                    del cursor[j]  # no usable file in this run
        for j in sorted(chosen):
            yield chosen[j]


def read_texts(
    pool: Executor,
    fs: AbstractFileSystem,
    paths: list[str],
    min_chars: int,
    skipped: dict[str, int],
) -> list[str | None]:
    """The texts of these files (read concurrently), None for an unusable file.

    A file is unusable if it is not UTF-8 (counted in ``skipped["undecodable"]``) or shorter
    than ``min_chars`` characters (counted in ``skipped["short"]``).
    """
    texts: list[str | None] = []
    for blob in pool.map(fs.cat_file, paths):
        try:
            text = blob.decode("utf-8")
        except UnicodeDecodeError:
            skipped["undecodable"] += 1
            texts.append(None)
            continue
        if len(text) < min_chars:
            skipped["short"] += 1
            texts.append(None)
            continue
        texts.append(text)
    return texts


def relative(root: str, path: str) -> str:
    """``path`` relative to ``root`` (a document's id), with no leading slash."""
    root = root.rstrip("/")
    if root and path.startswith(root + "/"):
        return path[len(root) + 1 :]
    return path.lstrip("/")


def _hidden(rel: str) -> bool:
    return any(part.startswith(".") for part in rel.split("/"))
