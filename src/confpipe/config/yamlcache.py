"""Config files parsed once per content: ``OmegaConf.load`` kept by the sha256 of the text.

Hydra reads every config file of a launch with ``OmegaConf.load``, and a big experiment pays
for it on every run: a 1,001-step file takes half a second in PyYAML's pure-Python loader
and OmegaConf's node construction, every time, though the file did not change. The
result of ``OmegaConf.load`` depends only on the text it reads (and on the versions of
Python, PyYAML, OmegaConf and of the alias bound in ``confpipe.config.yamlload``), so
``install()`` makes it look the text up first: the config built from an equal text is kept
as a pickle in the user's cache folder (``confpipe.config.diskcache``) and in this process,
and each load gets a fresh copy of it. A text that fails to load is never kept: its error
is raised by OmegaConf's own load, with the file's name, every time.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import pickle
import sys
from pathlib import Path
from typing import IO, Any

from confpipe.config import diskcache, yamlload

__all__ = ["install", "load"]

KIND = "yaml"  # the cache folder's sub-folder for these entries
FORMAT = 1  # bumped when what an entry holds changes
_memory: dict[str, bytes] = {}  # key -> pickle, for the loads of this process


def install() -> None:
    """Make ``OmegaConf.load`` (hence every config file Hydra reads) look its text up first."""
    from omegaconf import OmegaConf

    if getattr(OmegaConf.load, "_confpipe_cached", False):
        return
    original = OmegaConf.load

    def cached_load(file_: str | Path | IO[Any]) -> Any:
        return load(file_, original)

    cached_load._confpipe_cached = True  # type: ignore[attr-defined]
    OmegaConf.load = staticmethod(cached_load)  # type: ignore[method-assign]


def load(file_: str | Path | IO[Any], original: Any) -> Any:
    """What ``original(file_)`` (OmegaConf's load) returns, from the cache when it has it."""
    from omegaconf import DictConfig, ListConfig

    if isinstance(file_, str | Path):
        name: str | None = os.path.abspath(file_)
        with open(file_, encoding="utf-8") as f:
            text: str | bytes = f.read()
    elif callable(getattr(file_, "read", None)):
        name = getattr(file_, "name", None)
        text = file_.read()
    else:
        return original(file_)  # OmegaConf's own TypeError
    key = _key(text)
    data = _memory.get(key) or diskcache.read(KIND, key)
    if data is not None:
        with contextlib.suppress(Exception):  # a damaged entry is a miss: loaded anew
            cfg = pickle.loads(data)
            if isinstance(cfg, DictConfig | ListConfig):
                _memory[key] = data
                return cfg
    cfg = original(_stream(text, name))
    data = pickle.dumps(cfg, protocol=pickle.HIGHEST_PROTOCOL)
    _memory[key] = data
    diskcache.write(KIND, key, data)
    return cfg


def _key(text: str | bytes) -> str:
    """The entry of ``text``: its sha256 and everything else the loaded config depends on."""
    import omegaconf
    import yaml  # type: ignore[import-untyped]

    raw = text if isinstance(text, bytes) else text.encode("utf-8", "surrogatepass")
    salt = (
        f"{FORMAT} {type(text).__name__} {sys.version} omegaconf {omegaconf.__version__} "
        f"pyyaml {yaml.__version__} aliases {yamlload.MAX_ALIAS_NODES}\n"
    )
    return hashlib.sha256(salt.encode() + raw).hexdigest()


def _stream(text: str | bytes, name: str | None) -> IO[Any]:
    """``text`` as a stream named as the file it came from (YAML errors quote the name)."""
    stream: IO[Any] = io.BytesIO(text) if isinstance(text, bytes) else io.StringIO(text)
    if name is not None:
        stream.name = name  # type: ignore[misc]
    return stream
