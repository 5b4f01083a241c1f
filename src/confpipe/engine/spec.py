"""StepSpec: the frozen identity of one step, its content hash and its output path.

A step's identity is a digest of the canonical JSON of its name, its function's dotted
path, its config (with every reference to another step replaced by that step's identity)
and an optional version tag. The prefix is not part of it, so moving outputs to another
bucket keeps every hash; resources are not part of it either, since a bigger machine
computes the same output. Nor is the function's code: ``code`` and ``lineage`` fingerprint
it (``confpipe.engine.fingerprint``) for the records, so that a plan can say an output was
made by other code, without editing a function invalidating every output it made.
The config is first coerced to the function's annotations (``confpipe.engine.coerce``): an
``int`` given for a ``float`` parameter hashes as the float it means.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import posixpath
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import PurePath
from typing import Any

from confpipe.backends import RECORDS
from confpipe.backends.resources import Resources
from confpipe.engine.coerce import coerce
from confpipe.engine.fingerprint import digest, fingerprint
from confpipe.errors import ConfigError

HASH_LENGTH = 12
# confpipe's own folders under a prefix: the launches' manifests, sweeps' results tables and
# (``.confpipe/``) the code staged for cloud jobs; no step's output_path may be in them
RESERVED = ("manifests", "sweeps", RECORDS)
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]{0,127}")


@dataclass(frozen=True)
class Ref:
    """A reference to another step's output path (plus an optional suffix such as ``/shards``).

    Placing a Ref anywhere in a step's config makes the referenced step a dependency; at run
    time the Ref becomes the dependency's output path.
    """

    step: StepSpec
    suffix: str = ""


@dataclass(frozen=True)
class Template:
    """A string made of text and step output paths, e.g. ``${step:a}/x,${step:b}/y`` in YAML."""

    parts: tuple[str | StepSpec, ...]


@dataclass(frozen=True, eq=False)
class StepSpec:
    """One step: call ``fn(output_path=..., **config)`` once, cached under its hash.

    ``config`` values may contain StepSpecs or Refs (also inside lists and dicts): each is a
    dependency and resolves to that step's output path. ``deps`` adds ordering-only
    dependencies. Equality and hashing follow the content identity.
    """

    name: str
    fn: Callable[..., Any]
    config: Mapping[str, Any] = field(default_factory=dict)
    deps: tuple[StepSpec, ...] = ()
    resources: Resources | None = None
    version: str | None = None
    output_path: str | None = None

    def __post_init__(self) -> None:
        check_name(self.name)
        if not callable(self.fn):
            raise ConfigError(f"step {self.name!r}: fn must be callable, got {self.fn!r}")
        config = coerce(self.fn, self.config)  # 1 for a float parameter hashes as 1.0
        if config is not self.config:
            object.__setattr__(self, "config", config)
        if self.output_path is not None:
            if not self.output_path.strip():
                raise ConfigError(f"step {self.name!r}: output_path must not be empty")
            if self.output_path.startswith("~"):  # the user's home, as a shell would say
                object.__setattr__(self, "output_path", _home(self.name, self.output_path))
            _inside_prefix(self.name, self.output_path)
        # the code is read now, close to when it was imported: a file edited while the run
        # goes on must not be taken for the code that runs (once per function: ~free; set
        # as ``code``'s cached value directly, the cheapest way past the frozen dataclass)
        self.__dict__["code"] = fingerprint(self.fn)

    @cached_property
    def fn_path(self) -> str:
        """The function's dotted import path, part of the identity."""
        return function_path(self.fn)

    def direct(self) -> list[StepSpec]:
        """The step objects this one refers to (config refs, then deps), not deduplicated."""
        return [*_refs(self.config), *self.deps]

    @cached_property
    def dependencies(self) -> tuple[StepSpec, ...]:
        """Every step this one needs: refs in its config plus explicit deps, in first-seen order."""
        seen: dict[str, StepSpec] = {}
        for dep in self.direct():
            seen.setdefault(dep.identity, dep)
        return tuple(seen.values())

    @cached_property
    def code(self) -> str | None:
        """The fingerprint of the function's code (and same-module helpers): not identity."""
        return fingerprint(self.fn)

    @cached_property
    def lineage(self) -> str:
        """The fingerprint of this step's code and of every upstream step's: it differs from
        the recorded one when code anywhere upstream changed. Not identity either."""
        _deepest_first(self.dependencies, "lineage")
        deps = sorted(self.dependencies, key=lambda dep: dep.identity)
        return digest(self.code, *(dep.lineage for dep in deps))

    @cached_property
    def hash_inputs(self) -> dict[str, Any]:
        """What the hash digests: name, fn path, canonical config, deps' identities, version."""
        _deepest_first(self.direct(), "identity")
        return {
            "name": self.name,
            "fn": self.fn_path,
            "config": canonical(self.config, self.name),
            "deps": sorted(dep.identity for dep in self.dependencies),
            "version": self.version,
        }

    @cached_property
    def hash(self) -> str:
        text = json.dumps(self.hash_inputs, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:HASH_LENGTH]

    @cached_property
    def identity(self) -> str:
        """``{name}-{hash}``: unique per content, and the folder name under the prefix."""
        return f"{self.name}-{self.hash}"

    def output_under(self, prefix: str) -> str:
        """Where this step writes: ``{prefix}/{name}-{hash}``, or the ``output_path`` given:
        an absolute path or URL as it is, a relative one under the prefix."""
        if self.output_path is None:
            return f"{prefix.rstrip('/')}/{self.identity}"
        if _absolute(self.output_path):
            return self.output_path.rstrip("/")
        return f"{prefix.rstrip('/')}/{posixpath.normpath(self.output_path)}"

    def resolved_config(self, prefix: str) -> dict[str, Any]:
        """The keyword arguments for ``fn``: every Ref/StepSpec replaced by its output path."""
        return {key: _resolve(value, prefix) for key, value in self.config.items()}

    def __eq__(self, other: object) -> bool:
        return isinstance(other, StepSpec) and other.identity == self.identity

    def __hash__(self) -> int:
        return hash(self.identity)

    def __repr__(self) -> str:
        return f"StepSpec({self.identity})"


def _deepest_first(steps: Iterable[StepSpec], attribute: str) -> None:
    """Compute the cached ``attribute`` (``identity``, ``lineage``) of ``steps`` and their deps
    without recursion (chains of any length), so each one only reads its direct deps'."""
    stack = [(step, False) for step in steps]
    while stack:
        step, expanded = stack.pop()
        if attribute in step.__dict__:
            continue
        if expanded:
            getattr(step, attribute)
            continue
        stack.append((step, True))
        stack.extend((dep, False) for dep in step.direct() if attribute not in dep.__dict__)


def check_name(name: object) -> None:
    """Reject step names that are empty, contain whitespace or ``/``, or could escape the prefix."""
    if not isinstance(name, str) or not _NAME.fullmatch(name) or name in {".", ".."}:
        raise ConfigError(
            f"invalid step name {name!r}: use 1-128 letters, digits, '_', '-' or '.', "
            "starting with a letter, digit or '_' (no '/', '..' or whitespace)"
        )


def function_path(fn: Callable[..., Any]) -> str:
    """``module.qualname`` of a function; functions defined inside functions are refused."""
    module = getattr(fn, "__module__", None)
    qualname = getattr(fn, "__qualname__", None)
    if not module or not qualname or "<locals>" in qualname or "<lambda>" in qualname:
        raise ConfigError(
            f"step function {fn!r} has no stable import path: define it at module top level"
        )
    return f"{module}.{qualname}"


def canonical(value: Any, step: str, key: str = "config") -> Any:
    """``value`` as plain JSON data; refuse anything that can't be serialized deterministically."""
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ConfigError(f"step {step!r}: {key} is {value}, which has no canonical form")
        return value
    if isinstance(value, StepSpec):
        return {"$step": value.identity}
    if isinstance(value, Ref):
        return {"$step": value.step.identity, "suffix": value.suffix}
    if isinstance(value, Template):
        return {"$template": [canonical(part, step, key) for part in value.parts]}
    if isinstance(value, PurePath):
        return str(value)
    if isinstance(value, Mapping):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise ConfigError(f"step {step!r}: {key} has a non-string key {k!r}")
            out[k] = canonical(v, step, f"{key}.{k}")
        return out
    if isinstance(value, list | tuple):
        return [canonical(v, step, f"{key}[{i}]") for i, v in enumerate(value)]
    raise ConfigError(
        f"step {step!r}: {key} is a {type(value).__name__} ({value!r:.60}), which can't be "
        "hashed deterministically: use str, int, float, bool, None, lists, dicts or step refs"
    )


def _refs(value: Any) -> Iterator[StepSpec]:
    if isinstance(value, StepSpec):
        yield value
    elif isinstance(value, Ref):
        yield value.step
    elif isinstance(value, Template):
        yield from _refs(value.parts)
    elif isinstance(value, Mapping):
        for v in value.values():
            yield from _refs(v)
    elif isinstance(value, list | tuple):
        for v in value:
            yield from _refs(v)


def _resolve(value: Any, prefix: str) -> Any:
    if isinstance(value, StepSpec):
        return value.output_under(prefix)
    if isinstance(value, Ref):
        return value.step.output_under(prefix) + value.suffix
    if isinstance(value, Template):
        return "".join(_resolve(part, prefix) for part in value.parts)
    if isinstance(value, Mapping):
        return {k: _resolve(v, prefix) for k, v in value.items()}
    if isinstance(value, list):
        return [_resolve(v, prefix) for v in value]
    if isinstance(value, tuple):
        return tuple(_resolve(v, prefix) for v in value)
    return value


def _absolute(path: str) -> bool:
    """An absolute local path or a URL (``gs://...``): not relative to the prefix."""
    return path.startswith("/") or "://" in path


def _inside_prefix(step: str, path: str) -> None:
    """A relative ``output_path`` must stay inside the prefix (no ``..`` out of it) and out of
    the folders confpipe keeps there (``RESERVED``). A symlink on the way out is found when the
    prefix is known (``check_inside``)."""
    if _absolute(path):
        return
    normal = posixpath.normpath(path)
    if normal in (".", "..") or normal.startswith("../"):
        raise ConfigError(
            f"step {step!r}: output_path={path!r} is not a folder inside the prefix; give a "
            "relative path below it (e.g. tokenizer/v2) or an absolute path or URL"
        )
    top = normal.split("/", 1)[0]
    if top in RESERVED:
        raise ConfigError(
            f"step {step!r}: output_path={path!r} is inside {top}/, where confpipe keeps its "
            f"own records ({', '.join(RESERVED)} are reserved under the prefix); choose "
            "another folder"
        )


def _home(step: str, path: str) -> str:
    """``~/x`` (or ``~user/x``) as the absolute path it names; ConfigError for an unknown user."""
    expanded = os.path.expanduser(path)
    if expanded.startswith("~"):
        raise ConfigError(
            f"step {step!r}: output_path={path!r}: no such user's home folder; write the "
            "absolute path"
        )
    return expanded


def check_inside(spec: StepSpec, output: str, prefix: str) -> None:
    """ConfigError if ``spec``'s relative output_path leaves the local ``prefix`` through a
    symlink in it (``output``: where it is, unresolved). Absolute paths: the user's choice."""
    if spec.output_path is None or _absolute(spec.output_path):
        return
    real, root = os.path.realpath(output), os.path.realpath(prefix)
    if not real.startswith(root.rstrip("/") + "/"):
        raise ConfigError(
            f"step {spec.name!r}: output_path={spec.output_path!r} leaves the prefix through a "
            f"symlink: it is {real}; give a folder inside the prefix, or that absolute path"
        )
