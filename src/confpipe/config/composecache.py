"""A launch's composed config kept by everything it was composed from: a re-run skips Hydra's
compose.

On a fully cached run of a big experiment, Hydra's compose (loading, merging, validating and
copying every node) is most of the time left once the files are parsed (``yamlcache``).
``compose(...)`` keeps the composed config as a pickle in the user's cache folder
(``confpipe.config.diskcache``), under a key of everything the compose reads:

- the config name, the overrides, the run mode, the working directory (Hydra records it),
  the job name and Hydra's version base;
- every config source on the search path, as Hydra set it up for these overrides (with
  ``hydra.searchpath``): each folder's (or package's) file names, and the text of each of
  its YAML files; the structured configs registered in Hydra's ConfigStore (confpipe's
  schema, plugins' configs);
- the versions of Python, Hydra, OmegaConf and PyYAML, and confpipe's config code;
- the environment variables the compose read (``${oc.env:...}`` in ``hydra.searchpath`` or
  in the defaults, ``hydra.job.env_copy``): the entry holds their values, and a launch with
  another value composes anew.

A compose is not kept when it could differ with nothing of the above changed: it called a
resolver other than pure ones (a user's), or warned (a hit would not warn again). The time
``${now:...}`` gave while composing (a merge resolves ``hydra.sweep.dir``) is not kept: a
hit resolves it when first used. Errors are never kept. Hydra's own steps before composing
(checking the main config folder, reading ``hydra.searchpath``) run on every launch, hit or
miss, so the search path, its warnings and errors are Hydra's. ``CONFPIPE_CACHE_DIR=``
(empty) turns it off.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import pickle
import sys
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from confpipe.config import diskcache

__all__ = ["compose", "fingerprint"]

KIND = "compose"
FORMAT = 1  # bumped when what an entry holds changes
MAX_FILES = 2_000  # a search path with more files than this is not fingerprinted: no cache
MAX_BYTES = 32 << 20  # nor one whose YAML files hold more than this
# resolvers whose value depends on nothing but the config and their arguments (oc.env is
# recorded: its variables' values are checked on a hit)
PURE_RESOLVERS = frozenset(
    {
        "oc.env",
        "oc.select",
        "oc.decode",
        "oc.create",
        "oc.deprecated",
        "oc.dict.keys",
        "oc.dict.values",
        "hydra",
        "step",
        "now",  # kept by OmegaConf in the config's resolver cache: emptied in the entry
    }
)
_CONFIG_CODE = Path(__file__).resolve().parent  # confpipe's config layer: its schema, patches


def compose(
    hydra: Any, config_name: str | None, overrides: list[str], run_mode: Any, compose_config: Any
) -> Any:
    """``compose_config(hydra, config_name, overrides, run_mode=run_mode)`` (Hydra's), from the
    cache when everything it reads is as when it was kept."""
    original = compose_config
    try:
        key = _key(hydra, config_name, overrides, run_mode)
    except Exception:  # Hydra's compose raises this error where Hydra raises it
        key = None
    if key is None:
        return original(hydra, config_name, overrides, run_mode=run_mode)
    cfg = _hit(key)
    if cfg is not None:
        return cfg
    # warnings recorded under the filters in force (an "error" one still raises), shown after
    with _recording() as seen, warnings.catch_warnings(record=True) as warned:
        cfg = original(hydra, config_name, overrides, run_mode=run_mode)
    for w in warned:
        warnings.showwarning(w.message, w.category, w.filename, w.lineno, w.file, w.line)
    if warned or not seen.resolvers <= PURE_RESOLVERS:
        return cfg
    with contextlib.suppress(Exception):  # a config that cannot be pickled is not kept
        env = {**seen.env, **{k: os.environ.get(k) for k in _env_copy(cfg)}}
        diskcache.write(KIND, key, _pickled(env, cfg))
    return cfg


def fingerprint(hydra: Any) -> str | None:
    """A digest of every config source on ``hydra``'s search path: file names and YAML texts
    of each folder or package, and the ConfigStore's configs; None if there are too many."""
    digest = hashlib.sha256()
    budget = [MAX_FILES, MAX_BYTES]
    for source in hydra.config_loader.get_sources():
        scheme = source.scheme()
        digest.update(f"\0source {scheme} {source.path} {source.provider}\n".encode())
        if scheme == "structured":
            from hydra.core.config_store import ConfigStore

            digest.update(pickle.dumps(ConfigStore.instance().repo, protocol=4))
            continue
        root = _folder_of(scheme, source.path)
        if root is None:  # a source kind this does not know: nothing kept
            return None
        if not _tree(root, digest, budget):
            return None
    return digest.hexdigest()


def _key(hydra: Any, config_name: str | None, overrides: list[str], run_mode: Any) -> str | None:
    """The entry's key, after Hydra's own steps before a compose (so the search path is as the
    compose will see it); None when the launch is not to be cached."""
    import hydra as hydra_pkg
    import omegaconf
    import yaml  # type: ignore[import-untyped]
    from hydra._internal.config_repository import CachingConfigRepository
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.utils import JobRuntime
    from hydra.version import getbase

    if diskcache.folder(KIND) is None:
        return None
    loader = hydra.config_loader
    with _recording() as seen, warnings.catch_warnings(record=True) as warned:
        warnings.simplefilter("always")  # seen here, not marked as shown: Hydra shows them
        loader.ensure_main_config_source_available()
        parsed = OverridesParser.create().parse_overrides(overrides=overrides)
        repo = CachingConfigRepository(loader.repository)
        loader._process_config_searchpath(config_name, parsed, repo)
    # ${oc.env:...} in hydra.searchpath chose the sources: they are fingerprinted below
    if warned or not seen.resolvers <= PURE_RESOLVERS:
        return None  # Hydra's compose warns, or reads what this key does not hold
    sources = fingerprint(hydra)
    if sources is None:
        return None
    parts = [
        f"format {FORMAT}",
        f"python {sys.version}",
        f"hydra {hydra_pkg.__version__} base {getbase()}",
        f"omegaconf {omegaconf.__version__} pyyaml {yaml.__version__}",
        f"confpipe config code {_code_stamp()}",
        f"cwd {os.getcwd()}",
        f"job {JobRuntime.instance().get('name')}",
        f"config {config_name!r} mode {run_mode}",
        f"overrides {overrides!r}",
        f"sources {sources}",
    ]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def _hit(key: str) -> Any:
    """The config kept under ``key`` if the environment it read is unchanged, else None."""
    from omegaconf import DictConfig

    data = diskcache.read(KIND, key)
    if data is None:
        return None
    try:
        env, cfg = pickle.loads(data)
        if not isinstance(cfg, DictConfig) or not isinstance(env, dict):
            return None
    except Exception:  # damaged: composed anew, and written over
        return None
    if any(os.environ.get(name) != value for name, value in env.items()):
        return None
    return cfg


def _pickled(env: dict[str, str | None], cfg: Any) -> bytes:
    """The entry: ``env`` and ``cfg`` without the values resolvers cached while composing
    (``${now:...}`` in ``hydra.sweep.dir``, resolved by a merge): a hit resolves them anew,
    as a compose would have, at its own time."""
    from omegaconf import OmegaConf

    kept = OmegaConf.get_cache(cfg)
    OmegaConf.clear_cache(cfg)
    try:
        return pickle.dumps((env, cfg), protocol=pickle.HIGHEST_PROTOCOL)
    finally:
        OmegaConf.set_cache(cfg, kept)


def _env_copy(cfg: Any) -> list[str]:
    """The variables ``hydra.job.env_copy`` copied into the config when it was composed."""
    return [str(k) for k in cfg.hydra.job.env_copy]


class _Seen:
    def __init__(self) -> None:
        self.resolvers: set[str] = set()
        self.env: dict[str, str | None] = {}


@contextlib.contextmanager
def _recording() -> Iterator[_Seen]:
    """Record the resolvers called in the block, and the variables ``oc.env`` read."""
    from omegaconf.basecontainer import BaseContainer

    seen = _Seen()
    registered = dict(BaseContainer._resolvers)

    def spy(name: str, resolver: Callable[..., Any]) -> Callable[..., Any]:
        def called(*args: Any, **kwargs: Any) -> Any:
            seen.resolvers.add(name)
            if name == "oc.env":
                evaluated = kwargs.get("args", args[3] if len(args) > 3 else ())
                if evaluated:
                    seen.env[str(evaluated[0])] = os.environ.get(str(evaluated[0]))
            return resolver(*args, **kwargs)

        return called

    BaseContainer._resolvers.update({name: spy(name, fn) for name, fn in registered.items()})
    try:
        yield seen
    finally:
        for name in registered:
            BaseContainer._resolvers[name] = registered[name]


def _folder_of(scheme: str, path: str) -> Path | None:
    """The folder a ``file://`` or ``pkg://`` source reads (a package's, where installed)."""
    if scheme == "file":
        return Path(os.path.realpath(path))
    if scheme == "pkg":
        from importlib import resources

        try:
            found = resources.files(path)
        except (ImportError, TypeError, ValueError):
            return Path("/nonexistent-package") / path  # unavailable: hashed as absent
        return Path(os.fspath(found)) if isinstance(found, Path) else None
    return None


def _tree(root: Path, digest: Any, budget: list[int]) -> bool:
    """Hash the names under ``root`` and the text of its YAML files; False past the budget."""
    if not root.is_dir():
        digest.update(b"\0absent\n")
        return True
    for folder, dirs, files in os.walk(root, followlinks=True):
        dirs.sort()
        files.sort()
        rel = os.path.relpath(folder, root)
        digest.update(f"\0dir {rel} {dirs!r}\n".encode())
        for name in files:
            budget[0] -= 1
            if budget[0] < 0:
                return False
            digest.update(f"\0file {name}\n".encode())
            if name.endswith((".yaml", ".yml")):
                try:
                    data = Path(folder, name).read_bytes()
                except OSError:
                    return False
                budget[1] -= len(data)
                if budget[1] < 0:
                    return False
                digest.update(hashlib.sha256(data).digest())
    return True


def _code_stamp() -> str:
    """Size and modification time of confpipe's config modules (an edited checkout)."""
    stamps = []
    for path in sorted(_CONFIG_CODE.glob("*.py")):
        info = path.stat()
        stamps.append(f"{path.name}:{info.st_size}:{info.st_mtime_ns}")
    return " ".join(stamps)
