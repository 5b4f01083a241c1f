"""Step functions: ``fn`` dotted paths imported, and ``fn(output_path=..., **config)`` checked.

A step's ``fn`` is ``module.function`` (or ``module.Class.attr``); ``Functions`` imports
each path once per compile and checks that the call confpipe will make binds: keywords
only, ``output_path`` taken, no missing or unexpected keyword. Every mistake is a
ConfigError naming the step's key (``steps.train.fn``, ``steps.train.config.lr``).
"""

from __future__ import annotations

import importlib
import inspect
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from confpipe.errors import ConfigError
from confpipe.explain import did_you_mean, listing
from confpipe.spec import function_path

_DOTTED = re.compile(r"\w+(\.\w+)+")


@dataclass(frozen=True)
class _Params:
    """What a function accepts by keyword."""

    names: tuple[str, ...]  # passable by keyword
    required: tuple[str, ...]  # passable by keyword, without a default
    positional_only: tuple[str, ...]  # required and not passable by keyword
    var_keyword: bool


class Functions:
    """Step functions by dotted path and their parameters, each looked up once."""

    def __init__(self) -> None:
        self._found: dict[str, tuple[Callable[..., Any], str] | str] = {}
        self._params: dict[Callable[..., Any], _Params | None] = {}

    def resolve(self, step: str, path: object) -> tuple[Callable[..., Any], str]:
        """The function at ``path`` and its stable import path, or a ConfigError for ``step``."""
        key = path if isinstance(path, str) else repr(path)
        found = self._found.get(key)
        if found is None:
            found = self._found[key] = _find_function(path)
        if isinstance(found, str):
            raise ConfigError(f"steps.{step}.fn: {found}")
        return found

    def check_call(
        self, step: str, fn: Callable[..., Any], path: str, config: Mapping[str, Any]
    ) -> None:
        """``fn(output_path=..., **config)`` must bind: no missing or unexpected keywords."""
        if fn not in self._params:
            self._params[fn] = _parameters(fn)
        params = self._params[fn]
        if params is None:
            return
        key = f"steps.{step}"
        if params.positional_only:
            raise ConfigError(
                f"{key}.fn: {path}() has positional-only parameters "
                f"({', '.join(params.positional_only)}); confpipe passes keywords only"
            )
        if "output_path" in config:
            raise ConfigError(
                f"{key}.config.output_path: confpipe passes output_path itself; remove it from "
                f"config (set {key}.output_path to choose where the step writes)"
            )
        if not params.var_keyword and "output_path" not in params.names:
            raise ConfigError(
                f"{key}.fn: {path}() takes no output_path; add an 'output_path: str' parameter "
                "(confpipe calls fn(output_path=..., **config))"
            )
        takes = [n for n in params.names if n != "output_path"]
        for name in config:
            if not params.var_keyword and name not in params.names:
                raise ConfigError(
                    f"{key}.config.{name}: {path}() has no parameter {name!r}"
                    f"{did_you_mean(name, takes)}; it takes: {', '.join(takes) or 'nothing'} "
                    "(remove the key, or give the function **kwargs)"
                )
        missing = [n for n in params.required if n != "output_path" and n not in config]
        if missing:
            raise ConfigError(
                f"{key}.config: {path}() needs {', '.join(map(repr, missing))}; "
                f"set {key}.config.{missing[0]}"
            )


def _parameters(fn: Callable[..., Any]) -> _Params | None:
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):  # some builtins have none: let the call decide
        return None
    names, required, positional_only, var_keyword = [], [], [], False
    for p in signature.parameters.values():
        if p.kind is p.VAR_KEYWORD:
            var_keyword = True
        elif p.kind is p.POSITIONAL_ONLY:
            if p.default is p.empty:
                positional_only.append(p.name)
        elif p.kind is not p.VAR_POSITIONAL:
            names.append(p.name)
            if p.default is p.empty:
                required.append(p.name)
    return _Params(tuple(names), tuple(required), tuple(positional_only), var_keyword)


def _find_function(path: object) -> tuple[Callable[..., Any], str] | str:
    """Import ``module.function`` (or ``module.Class.attr``); a message saying why not."""
    if not isinstance(path, str) or not _DOTTED.fullmatch(path):
        return (
            f"{path!r:.60} is not a dotted path to a function; use module.function, "
            "e.g. experiments.tokenize.tokenize"
        )
    parts = path.split(".")
    module: ModuleType | None = None
    not_found: ModuleNotFoundError | None = None
    for i in range(len(parts) - 1, 0, -1):
        name = ".".join(parts[:i])
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as err:
            if err.name and (name == err.name or name.startswith(f"{err.name}.")):
                not_found = not_found or err
                continue
            return f"importing {name!r} failed: {_first_line(err)}; install it or fix the module"
        except Exception as err:
            return f"importing {name!r} failed: {_first_line(err)}; fix the module"
        attrs = parts[i:]
        break
    if module is None:
        assert not_found is not None
        return (
            f"cannot import {'.'.join(parts[:-1])!r} ({not_found}); check the dotted path and "
            "that its package is importable (on sys.path)"
        )
    target: Any = module
    for depth, attr in enumerate(attrs):
        if not hasattr(target, attr):
            if depth == 0 and not_found is not None and len(attrs) > 1:
                return _no_module(module, attr, not_found)
            return _no_attribute(target, attr)
        target = getattr(target, attr)
    if not callable(target):
        return f"{path!r} is {_a(type(target).__name__)}, not a function; point fn at a function"
    try:
        return target, function_path(target)
    except ConfigError as err:
        return str(err)


def _no_module(package: ModuleType, attr: str, err: ModuleNotFoundError) -> str:
    import pkgutil

    name = f"{package.__name__}.{attr}"
    subs = [m.name for m in pkgutil.iter_modules(getattr(package, "__path__", []))]
    return f"cannot import {name!r} ({err}){did_you_mean(attr, subs)}; check the dotted path"


def _no_attribute(target: Any, attr: str) -> str:
    what = "module" if isinstance(target, ModuleType) else type(target).__name__
    public = {n: v for n, v in vars(target).items() if not n.startswith("_") and callable(v)}
    own = [n for n, v in public.items() if getattr(v, "__module__", None) == target.__name__]
    offers = sorted(own or public)
    return (
        f"{what} {target.__name__!r} has no function {attr!r}{did_you_mean(attr, offers)}; "
        f"it offers: {listing(offers) or 'no public functions'}"
    )


def _a(noun: str) -> str:
    return f"{'an' if noun[:1].lower() in 'aeiou' else 'a'} {noun}"


def _first_line(err: BaseException) -> str:
    lines = str(err).strip().splitlines()
    return f"{type(err).__name__}: {lines[0] if lines else ''}"
