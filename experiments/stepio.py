"""A step function's edges: refuse a bad config value, and make and fill its output folder.

Shared by every experiment's step functions. Paths are local directories or fsspec URLs;
fsspec and numpy are imported by the functions that use them (a cached run imports the step
modules only to check their arguments, and must not pay for them).
"""

from __future__ import annotations

import io
import json
import posixpath
import re
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fsspec import AbstractFileSystem


def check(ok: bool, message: str) -> None:
    """Refuse a config value: raise ``ValueError(message)`` unless ``ok``."""
    if not ok:
        raise ValueError(message)


def join(root: str, name: str) -> str:
    """``root/name``, whether or not ``root`` ends with a slash."""
    return f"{root.rstrip('/')}/{name}"


def prepare_output(
    output_path: str, stale: re.Pattern[str] | None = None
) -> tuple[AbstractFileSystem, str]:
    """Create output_path; delete files a previous attempt left whose name matches ``stale``."""
    from fsspec.core import url_to_fs

    fs, root = url_to_fs(output_path)
    fs.makedirs(root, exist_ok=True)
    if stale is not None:
        for path in numbered_files(fs, root, stale):
            fs.rm_file(path)
    return fs, root


def numbered_files(fs: AbstractFileSystem, root: str, name: re.Pattern[str]) -> list[str]:
    """Files directly under ``root`` whose name matches ``name``, sorted by their number."""
    try:
        listing = fs.ls(root, detail=False)
    except FileNotFoundError:
        return []
    found = [p for p in listing if name.fullmatch(posixpath.basename(p))]
    return sorted(found, key=lambda p: (int(re.sub(r"\D", "", posixpath.basename(p))), p))


def write_json(fs: AbstractFileSystem, path: str, value: Any) -> None:
    """``value`` as indented JSON with sorted keys (so the file is deterministic)."""
    fs.pipe_file(path, (json.dumps(value, indent=2, sort_keys=True) + "\n").encode())


def write_npy(fs: AbstractFileSystem, path: str, array: Any) -> None:
    """One numpy array as a ``.npy`` file (no pickles)."""
    import numpy as np

    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    fs.pipe_file(path, buf.getvalue())
