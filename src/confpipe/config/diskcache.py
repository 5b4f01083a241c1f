"""The user's confpipe cache folder: entries by key, written atomically, pruned, never trusted.

What the config layer caches between launches (parsed YAML files, composed configs) lives in
``$CONFPIPE_CACHE_DIR``, else ``$XDG_CACHE_HOME/confpipe``, else ``~/.cache/confpipe``
(``%LOCALAPPDATA%\\confpipe`` on Windows): never in a project or under a run's prefix.
``CONFPIPE_CACHE_DIR=`` (empty) turns caching off.

An entry is a file named by its key, written to a temporary file and renamed into place, so
two launches at once never read half an entry; the last rename wins, and both wrote the same
bytes. A folder another user owns, or that others may write to, is not used (entries are
pickles: only this user's own are read). An entry that cannot be read is a miss, and its
caller writes it anew. Each kind keeps at most ``MAX_ENTRIES`` entries and ``MAX_BYTES``;
the least recently used go first (a hit touches its entry).
"""

from __future__ import annotations

import contextlib
import os
import stat
import sys
import tempfile
import time
from pathlib import Path

__all__ = ["MAX_BYTES", "MAX_ENTRIES", "folder", "read", "root", "write"]

MAX_ENTRIES = 256  # per kind of entry
MAX_BYTES = 256 << 20  # per kind: a 1,000-step experiment's composed config is about 1 MB
ENV = "CONFPIPE_CACHE_DIR"


def root() -> Path | None:
    """The cache folder for this user, or None when caching is off."""
    given = os.environ.get(ENV)
    if given is not None:
        return Path(given).expanduser() if given else None
    if sys.platform == "win32":
        base = os.environ.get("LOCALAPPDATA") or str(Path.home() / "AppData" / "Local")
    else:
        base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "confpipe"


def folder(kind: str) -> Path | None:
    """``root()/kind``, made (private to this user) if need be; None if caching is off or
    the folder is not safe to read pickles from."""
    top = root()
    if top is None:
        return None
    where = top / kind
    try:
        where.mkdir(mode=0o700, parents=True, exist_ok=True)
        if not _private(where):
            return None
    except OSError:
        return None
    return where


def read(kind: str, key: str) -> bytes | None:
    """The bytes of entry ``key``, or None (no cache, no entry, or it cannot be read)."""
    where = folder(kind)
    if where is None:
        return None
    path = where / key
    try:
        data = path.read_bytes()
    except OSError:
        return None
    with contextlib.suppress(OSError):  # least recently used goes first when pruned
        os.utime(path)
    return data


def write(kind: str, key: str, data: bytes) -> None:
    """Store ``data`` as entry ``key`` (atomically; a failure to write is ignored)."""
    where = folder(kind)
    if where is None:
        return
    try:
        fd, tmp = tempfile.mkstemp(dir=where, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, where / key)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        _prune(where)
    except OSError:
        return


def _private(path: Path) -> bool:
    """True if ``path`` is this user's own and no one else may write to it."""
    if not hasattr(os, "getuid"):  # Windows: the profile folder is private already
        return True
    info = path.stat()
    return info.st_uid == os.getuid() and not info.st_mode & (stat.S_IWGRP | stat.S_IWOTH)


def _prune(where: Path) -> None:
    """Keep the most recently used entries of ``where``, up to ``MAX_ENTRIES`` and
    ``MAX_BYTES``; remove temporary files a dead launch left."""
    with os.scandir(where) as found:
        entries = [e for e in found if e.is_file()]
    left = time.time() - 3600  # a temporary file this old was left by a launch that died
    for entry in [e for e in entries if e.name.startswith(".tmp-")]:
        entries.remove(entry)
        if entry.stat().st_mtime < left:
            with contextlib.suppress(OSError):
                os.unlink(entry.path)
    entries.sort(key=lambda e: e.stat().st_mtime_ns, reverse=True)  # most recently used first
    total = 0
    for kept, entry in enumerate(entries):
        total += entry.stat().st_size
        if kept >= MAX_ENTRIES or total > MAX_BYTES:
            with contextlib.suppress(OSError):
                os.unlink(entry.path)
