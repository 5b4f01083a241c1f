"""Step functions: ``fn`` dotted paths imported, and ``fn(output_path=..., **config)`` checked.

A step's ``fn`` is ``module.function`` (or ``module.Class.attr``); ``Functions`` imports
each path once per compile and checks that the call confpipe will make binds: keywords
only, ``output_path`` taken, no missing or unexpected keyword, and each value of the type
the function declares for it when that type is a simple one (``int``, ``float``, ``str``,
``bool``, optionally ``| None``), so ``lr=abc`` fails here rather than in the step. Every
mistake is a ConfigError naming the step's key (``steps.train.fn``, ``steps.train.config.lr``).
"""

from __future__ import annotations

import importlib
import inspect
import re
import traceback
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import PurePath
from types import ModuleType
from typing import Any

from confpipe.config.explain import bad_value, listing
from confpipe.config.refs import as_written
from confpipe.engine.coerce import type_hints
from confpipe.engine.frames import shown_path, user_frames
from confpipe.engine.spec import function_path
from confpipe.errors import ConfigError, did_you_mean

_DOTTED = re.compile(r"\w+(\.\w+)+")
_SIMPLE = (bool, int, float, str)  # the annotations whose values are checked
_FEW = 8  # functions a message suggests


@dataclass(frozen=True)
class _Declared:
    """A parameter's simple annotation: ``base`` (int, float, str or bool), None allowed or not."""

    base: type
    nullable: bool
    written: str  # as the signature says it: ``int | None``

    def admits(self, value: object) -> bool:
        """A bool is not an int here, an int is a float, a ``${step:...}`` is a str (a path)."""
        if value is None:
            return self.nullable
        if isinstance(value, bool):
            return self.base is bool
        if self.base is float:
            return isinstance(value, int | float)
        if self.base is str:  # a Path from a Python mapping is a str to the hash too
            return isinstance(value, str | PurePath)
        return isinstance(value, self.base)


@dataclass(frozen=True)
class _Params:
    """What a function accepts by keyword."""

    names: tuple[str, ...]  # passable by keyword
    required: tuple[str, ...]  # passable by keyword, without a default
    positional_only: tuple[str, ...]  # required and not passable by keyword
    var_keyword: bool
    declared: Mapping[str, _Declared]  # passable by keyword, with a simple annotation


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
        for name, value in config.items():
            declared = params.declared.get(name)
            if declared is not None:
                if not declared.admits(value):
                    raise ConfigError(_mismatch(f"{key}.config.{name}", value, declared, path))
            elif not params.var_keyword and name not in params.names:
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
    hints = type_hints(fn)
    declared: dict[str, _Declared] = {}
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
            simple = _simple(hints.get(p.name, Any), none_default=p.default is None)
            if simple is not None:
                declared[p.name] = simple
    return _Params(tuple(names), tuple(required), tuple(positional_only), var_keyword, declared)


def _simple(hint: Any, *, none_default: bool) -> _Declared | None:
    """``hint`` as a _Declared if it is int, float, str or bool, or one of them ``| None``.

    A ``= None`` default admits None too: passing it is the same call as leaving it out.
    """
    union = typing.get_origin(hint) in (typing.Union, types.UnionType)
    args = typing.get_args(hint) if union else ()
    others = [a for a in args if a is not type(None)]
    base, nullable = (others[0], True) if len(args) == 2 and len(others) == 1 else (hint, False)
    if not any(base is simple for simple in _SIMPLE):
        return None
    written = f"{base.__name__}{' | None' if nullable else ''}"
    return _Declared(base, nullable or none_default, written)


def _mismatch(key: str, value: object, declared: _Declared, path: str) -> str:
    """``steps.train.config.lr: 'abc' is not a number (m.train declares lr: float)``."""
    shown = as_written(value) if isinstance(value, str) else value
    null = " or null" if declared.nullable else ""
    scalar = isinstance(value, int | float)  # 1, 1.5, true: YAML read them as such
    fix = "; quote it to pass a string" if declared.base is str and scalar else ""
    name = key.rsplit(".", 1)[-1]
    declares = f"{path} declares {name}: {declared.written}"
    return f"{bad_value(key, declared.base, shown)}{null} ({declares}){fix}"


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
            return (
                f"importing {name!r} failed: {_first_line(err)}{_where(err)}; install it or fix "
                "the module"
            )
        except Exception as err:
            return f"importing {name!r} failed: {_first_line(err)}{_where(err)}; fix the module"
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
            if depth == len(attrs) - 1 and hasattr(target, "__path__"):  # a package's module?
                submodule = _import_quietly(path)
                if submodule is not None:
                    return _a_module(path, submodule)
            return _no_attribute(target, attr)
        target = getattr(target, attr)
    if isinstance(target, ModuleType):
        return _a_module(path, target)
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
    offers = _offers(target)
    return (
        f"{what} {target.__name__!r} has no function {attr!r}{did_you_mean(attr, offers)}; "
        f"it offers: {listing(offers) or 'no public functions'}"
    )


def _a_module(path: str, module: ModuleType) -> str:
    """``fn=experiments.train`` names the module: suggest its functions (not its classes),
    those of its ``__all__`` first."""
    public = [n for n in getattr(module, "__all__", ()) if isinstance(n, str)]
    offers = [n for n in dict.fromkeys([*public, *_offers(module)]) if _function(module, n)]
    if not offers:
        return f"{path!r} is a module with no public functions; point fn at a function"
    last = path.rsplit(".", 1)[-1]
    example = last if last in offers else offers[0]
    few = ", ".join(offers[:_FEW]) + (", ..." if len(offers) > _FEW else "")
    return (
        f"{path!r} is a module, not a function; name a function in it, e.g. {path}.{example} "
        f"(it offers: {few})"
    )


def _offers(target: Any) -> list[str]:
    """The public callables of a module or class, its own ones if it has any, sorted."""
    public = {n: v for n, v in vars(target).items() if not n.startswith("_") and callable(v)}
    own = [n for n, v in public.items() if getattr(v, "__module__", None) == target.__name__]
    return sorted(own or public)


def _function(module: ModuleType, name: str) -> bool:
    value = getattr(module, name, None)
    return callable(value) and not isinstance(value, type)


def _import_quietly(name: str) -> ModuleType | None:
    try:
        return importlib.import_module(name)
    except Exception:  # not a module after all (or a broken one): the caller says what's missing
        return None


def _a(noun: str) -> str:
    return f"{'an' if noun[:1].lower() in 'aeiou' else 'a'} {noun}"


def _where(err: BaseException) -> str:
    """`` (steps.py:3: y = x + 1)``: the last frame of the user's code the error passed
    through while importing; "" if none (a SyntaxError names its file:line itself)."""
    if isinstance(err, SyntaxError):
        return ""
    found = user_frames("".join(traceback.format_exception(err)), 1)
    if not found:
        return ""
    frame = found[0]
    source = f": {frame.source}" if frame.source else ""
    return f" ({shown_path(frame.path)}:{frame.line}{source})"


def _first_line(err: BaseException) -> str:
    lines = str(err).strip().splitlines()
    return f"{type(err).__name__}: {lines[0] if lines else ''}"
