"""Code fingerprints: a short digest of a step function's source and the same-module code it
uses (``StepSpec.code`` and ``StepSpec.lineage`` are made of these).

A step's identity does not include its code (editing a function must not throw away hours of
outputs), so the records keep a fingerprint of the code that made each output instead, and
the plan says when it differs. The fingerprint digests the function's own source (trailing
white space dropped, nothing else normalised) and the source of every function and class it
refers to by name that is defined in the same module, transitively: a helper edited in the
step's module counts, an unrelated function of the module does not. Code of other modules
(libraries, other project modules) is not followed.

It is computed once per function object and process: many steps of a few functions cost a
few source reads. A function whose source can't be read (a builtin, a lambda typed into a
REPL) is fingerprinted by its byte code and constants; a callable with neither has none.

A step's records hold the fingerprint of its code and its lineage (its code and all its
upstream steps'); ``engine.codechanges`` compares them with the step's now, for the plan.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import inspect
import sys
import types
from collections.abc import Callable, Iterator
from typing import Any

__all__ = ["FINGERPRINT_LENGTH", "digest", "fingerprint"]

FINGERPRINT_LENGTH = 12

_fingerprints: dict[Any, str | None] = {}  # by callable (functions hash by identity)
_sources: dict[Any, str | None] = {}  # the normalised source of each function or class read


def fingerprint(fn: Callable[..., Any]) -> str | None:
    """The fingerprint of ``fn``'s code (see the module docstring), or None if it has none."""
    try:
        return _fingerprints[fn]  # the common case: a function seen before
    except (KeyError, TypeError):  # TypeError: an unhashable callable object
        pass
    target = _target(fn)  # a function or a class: hashed by identity
    if target not in _fingerprints:
        _fingerprints[target] = _compute(target)
    found = _fingerprints[target]
    with contextlib.suppress(TypeError):
        _fingerprints[fn] = found
    return found


def digest(*parts: str | None) -> str:
    """A short hex digest of ``parts`` (None kept apart from "")."""
    text = "\0".join("\1" if p is None else p for p in parts)
    return hashlib.sha256(text.encode()).hexdigest()[:FINGERPRINT_LENGTH]


def _target(fn: Any) -> Any:
    """What holds the code: the function under decorators (``functools.wraps``), partials and
    bound methods; the class of a callable object."""
    for _ in range(100):  # a partial of a wrapped function of...: unwrap all, but never loop
        if isinstance(fn, functools.partial):
            fn = fn.func
        elif isinstance(fn, types.MethodType):
            fn = fn.__func__
        elif isinstance(fn, types.FunctionType) and hasattr(fn, "__wrapped__"):
            fn = inspect.unwrap(fn)
        else:
            break
    if isinstance(fn, types.FunctionType | type | types.BuiltinFunctionType):
        return fn
    return type(fn)


def _compute(target: Any) -> str | None:
    own = _source(target)
    if own is None:
        code = getattr(target, "__code__", None)
        return None if code is None else digest("code", _code_digest(code))
    module = getattr(target, "__module__", None)
    namespace = getattr(sys.modules.get(module or ""), "__dict__", None)
    if namespace is None and isinstance(target, types.FunctionType):
        namespace = target.__globals__
    helpers = _helpers(target, module, namespace or {})
    return digest(own, *(f"{name}\n{_source(obj) or ''}" for name, obj in helpers))


def _helpers(target: Any, module: str | None, namespace: dict[str, Any]) -> list[tuple[str, Any]]:
    """The functions and classes of ``module`` that ``target`` refers to by name, and those
    they refer to, and so on: sorted by name."""
    found: dict[str, Any] = {}
    seen = {id(target)}
    stack = [target]
    while stack:
        for name in _names(stack.pop()):
            obj = namespace.get(name)
            if obj is None or id(obj) in seen or not _defined_in(obj, module):
                continue
            seen.add(id(obj))
            found[name] = obj
            stack.append(obj)
    return sorted(found.items())


def _defined_in(obj: Any, module: str | None) -> bool:
    return isinstance(obj, types.FunctionType | type) and obj.__module__ == module


def _names(obj: Any) -> Iterator[str]:
    """The global names a function's code (nested functions and comprehensions included) or a
    class's methods and bases use."""
    if isinstance(obj, type):
        for base in obj.__bases__:
            yield base.__name__
        for member in vars(obj).values():
            for fn in _functions_of(member):
                yield from _code_names(fn.__code__)
    elif isinstance(obj, types.FunctionType):
        yield from _code_names(obj.__code__)


def _functions_of(member: Any) -> list[types.FunctionType]:
    """The functions a class attribute holds: a method, static/class method or property."""
    if isinstance(member, staticmethod | classmethod):
        member = member.__func__
    if isinstance(member, property):
        return [
            f for f in (member.fget, member.fset, member.fdel) if isinstance(f, types.FunctionType)
        ]
    return [member] if isinstance(member, types.FunctionType) else []


def _code_names(code: types.CodeType) -> Iterator[str]:
    stack = [code]
    while stack:
        current = stack.pop()
        yield from current.co_names
        stack.extend(c for c in current.co_consts if isinstance(c, types.CodeType))


def _source(obj: Any) -> str | None:
    """``obj``'s source with trailing white space dropped from each line, or None (no file)."""
    if obj in _sources:
        return _sources[obj]
    try:
        lines = inspect.getsource(obj).splitlines()
        text: str | None = "\n".join(line.rstrip() for line in lines).rstrip("\n")
    except Exception:  # a builtin, a REPL's function, a C class, a file it can't parse:
        text = None  # the fingerprint is a courtesy, never a reason for a run to fail
    _sources[obj] = text
    return text


def _code_digest(code: types.CodeType) -> str:
    """The byte code and constants of ``code`` and its nested code (not their addresses)."""
    parts = [code.co_code.hex()]
    for const in code.co_consts:
        parts.append(_code_digest(const) if isinstance(const, types.CodeType) else repr(const))
    return digest(*parts)
