"""A step's config coerced to its function's annotated types, so equal values hash equal.

``scale: 1.0`` in YAML and the override ``scale=1`` mean the same call of a function that
declares ``scale: float``, but JSON (and so the hash) tells ``1`` from ``1.0``. Before a
StepSpec hashes its config, ``coerce(fn, config)`` makes each ``int`` given for a ``float``
parameter a float, also inside ``list[float]``, ``tuple[float, ...]``, ``dict[str, float]``
and unions such as ``float | None`` (a union that admits ``int`` itself keeps ints). A bool
is not an int here, and nothing else is converted: a wrong type is the signature check's to
report (``confpipe.config.functions``). The function's hints are read once per function.
"""

from __future__ import annotations

import collections.abc
import inspect
import threading
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["coerce", "type_hints"]

Converter = Callable[[Any], Any]

_SEQUENCES = {list, tuple, collections.abc.Sequence, collections.abc.MutableSequence}
_MAPPINGS = {dict, collections.abc.Mapping, collections.abc.MutableMapping}
_UNIONS = (typing.Union, types.UnionType)
_plans: dict[Any, dict[str, Converter]] = {}
_plans_lock = threading.Lock()


def coerce(fn: Callable[..., Any], config: Mapping[str, Any]) -> Mapping[str, Any]:
    """``config`` with each value converted to ``fn``'s annotation of its key (int -> float
    where a float is declared); ``config`` itself when nothing changes."""
    plan = _plan(fn)
    if not plan:
        return config
    changed: dict[str, Any] | None = None
    for name, convert in plan.items():
        if name in config:
            value = config[name]
            new = convert(value)
            if new is not value:
                changed = changed if changed is not None else dict(config)
                changed[name] = new
    return config if changed is None else changed


def type_hints(fn: Callable[..., Any]) -> dict[str, Any]:
    """``fn``'s resolved annotations; none for classes and other callables (their signature is
    not their annotations) or when one can't be resolved (a ``TYPE_CHECKING`` import)."""
    if not (inspect.isfunction(fn) or inspect.ismethod(fn)):
        return {}
    try:
        return typing.get_type_hints(fn)
    except Exception:  # any error evaluating the user's annotations: nothing is declared
        return {}


def _plan(fn: Callable[..., Any]) -> dict[str, Converter]:
    """The converters of ``fn``'s keyword parameters that have one (read once per function)."""
    try:
        return _plans[fn]
    except KeyError:
        pass
    except TypeError:  # an unhashable callable: read each time
        return _read_plan(fn)
    plan = _read_plan(fn)
    with _plans_lock:
        _plans[fn] = plan
    return plan


def _read_plan(fn: Callable[..., Any]) -> dict[str, Converter]:
    hints = type_hints(fn)
    if not hints:
        return {}
    try:
        parameters = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return {}
    plan = {}
    for p in parameters:
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name in hints:
            convert = _converter(hints[p.name])
            if convert is not None:
                plan[p.name] = convert
    return plan


def _converter(hint: Any) -> Converter | None:
    """What makes a value of type ``hint`` from one YAML would give; None: nothing to do."""
    if hint is float:
        return _to_float
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Annotated:
        return _converter(args[0])
    if origin in _UNIONS:
        return _union(args)
    if origin in _SEQUENCES and args:
        if origin is tuple and not (len(args) == 2 and args[1] is Ellipsis):
            return _fixed_tuple([_converter(a) for a in args])
        return _sequence(_converter(args[0]))
    if origin in _MAPPINGS and len(args) == 2:
        return _mapping(_converter(args[1]))
    return None


def _to_float(value: Any) -> Any:
    if type(value) is not int:  # a bool is no int here; anything else is left as it is
        return value
    try:
        return float(value)
    except OverflowError:  # too large for a float: the function gets what was written
        return value


def _union(args: tuple[Any, ...]) -> Converter | None:
    scalar = float in args and int not in args and not any(a in (Any, object) for a in args)
    sequence = next((c for a in args if typing.get_origin(a) in _SEQUENCES for c in _some(a)), None)
    mapping = next((c for a in args if typing.get_origin(a) in _MAPPINGS for c in _some(a)), None)
    if not scalar and sequence is None and mapping is None:
        return None

    def convert(value: Any) -> Any:
        if scalar and type(value) is int:
            return _to_float(value)
        if sequence is not None and isinstance(value, list | tuple):
            return sequence(value)
        if mapping is not None and isinstance(value, Mapping):
            return mapping(value)
        return value

    return convert


def _some(hint: Any) -> list[Converter]:
    convert = _converter(hint)
    return [] if convert is None else [convert]


def _sequence(item: Converter | None) -> Converter | None:
    if item is None:
        return None

    def convert(value: Any) -> Any:
        if not isinstance(value, list | tuple):
            return value
        new = [item(v) for v in value]
        if all(a is b for a, b in zip(new, value, strict=True)):
            return value
        return new if isinstance(value, list) else tuple(new)

    return convert


def _fixed_tuple(items: list[Converter | None]) -> Converter | None:
    if all(item is None for item in items):
        return None

    def convert(value: Any) -> Any:
        if not isinstance(value, list | tuple) or len(value) != len(items):
            return value
        new = [v if item is None else item(v) for item, v in zip(items, value, strict=True)]
        if all(a is b for a, b in zip(new, value, strict=True)):
            return value
        return new if isinstance(value, list) else tuple(new)

    return convert


def _mapping(item: Converter | None) -> Converter | None:
    if item is None:
        return None

    def convert(value: Any) -> Any:
        if not isinstance(value, Mapping):
            return value
        new = {k: item(v) for k, v in value.items()}
        if all(new[k] is v for k, v in value.items()):
            return value
        return new

    return convert
