"""A step's return value made JSON: what a result record (``result.json``) can hold.

A step function may return what JSON holds (dicts with string keys, lists, strings, numbers,
booleans, None) and these, converted before the record is written:

    NumPy scalars        ``np.int64`` -> int, ``np.float32`` -> float, ``np.bool_`` -> bool
                         (anything with ``.item()`` from the ``numpy`` module)
    NumPy arrays         -> (nested) lists, up to ``MAX_ARRAY_ITEMS`` elements
    tuples               -> lists (a set is refused: it has no order to keep)
    ``pathlib`` paths    -> str
    dataclasses          -> dicts of their fields
    nan, inf, -inf       written as the bare tokens ``NaN``, ``Infinity`` and ``-Infinity``
                         (as JSON5 and JavaScript spell them); ``load_result`` reads them back
                         as floats. Strict JSON parsers (``jq``) may refuse such a record.

Anything else (a tensor, a model, a DataFrame, an open file) is refused with the key path of
the value: ``result["stats"][2]: a Tensor (torch.Tensor) is not JSON; ...``. So is a record
larger than ``MAX_RESULT_BYTES`` (10 MiB): a result is a summary that the driver holds in
memory and a sweep's table shows; data belongs in files under ``output_path``. Either way
the step fails before anything is recorded as done, and its output folder is left as it is.

NumPy is never imported here: its values are recognised by their type's module.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
from dataclasses import dataclass
from typing import Any

MAX_ARRAY_ITEMS = 10_000  # elements of a NumPy array converted to a list; more is refused
MAX_RESULT_BYTES = 10 * 1024 * 1024  # of a result record; more is refused
_HINT = "return numbers, strings, lists or dicts, or write it to a file in output_path"


@dataclass(frozen=True)
class StoredResult:
    """A job's result record, left where the job wrote it (``path``, ``size`` bytes): the
    step's record is made by moving it, so the driver never holds the value."""

    path: str
    size: int


class NotJSON(TypeError):
    """A return value (or a part of it, at ``where``) that a result record can't hold."""


def to_json(value: Any) -> Any:
    """``value`` with its convertible parts converted (see the module docstring); raises
    NotJSON naming the key path (``result["a"][0]``) of the first part that isn't."""
    return _convert(value, "result", set())


def dumps(value: Any) -> bytes:
    """The result record of ``value``: ``{"value": ...}``, converted, within the size cap."""
    data = json.dumps({"value": to_json(value)}).encode()
    if len(data) > MAX_RESULT_BYTES:
        raise NotJSON(
            f"result: {_size(len(data))} of JSON, over the {_size(MAX_RESULT_BYTES)} a result "
            "may hold; return a summary and write the data to a file in output_path"
        )
    return data


def _convert(value: Any, where: str, path: set[int]) -> Any:
    if value is None or isinstance(value, (str, bool, int)):
        return value if type(value) in (str, bool, int) else _builtin(value)
    if isinstance(value, float):
        return float(value)
    kind = type(value)
    if kind.__module__ == "numpy":
        return _numpy(value, where, path)
    if isinstance(value, pathlib.PurePath):
        return str(value)
    if id(value) in path:
        raise NotJSON(f"{where}: refers to itself (a cycle); {_HINT}")
    if isinstance(value, dict):
        path.add(id(value))
        out = {_key(k, where): _convert(v, f"{where}[{_index(k)}]", path) for k, v in value.items()}
        path.discard(id(value))
        return out
    if isinstance(value, (list, tuple)):
        path.add(id(value))
        out_list = [_convert(v, f"{where}[{i}]", path) for i, v in enumerate(value)]
        path.discard(id(value))
        return out_list
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
        return _convert(fields, where, path)
    raise NotJSON(f"{where}: {_what(value)} is not JSON; {_HINT}")


def _builtin(value: Any) -> Any:
    """A subclass of str, bool or int (an enum member, say) as the plain value."""
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, int):
        return int.__index__(value)  # an IntEnum member's number, not its repr
    if isinstance(value, str):
        return str.__str__(value)  # a str-mixin Enum member's value ("red"), not "C.RED"
    return value


def _numpy(value: Any, where: str, path: set[int]) -> Any:
    size = getattr(value, "size", None)
    if hasattr(value, "tolist") and getattr(value, "ndim", 0) != 0:  # an array
        if isinstance(size, int) and size > MAX_ARRAY_ITEMS:
            raise NotJSON(
                f"{where}: an array of {size:,} elements is too large for a result (at most "
                f"{MAX_ARRAY_ITEMS:,}); save it to a file in output_path (numpy.save) and "
                "return its path"
            )
        return _convert(value.tolist(), where, path)
    if hasattr(value, "item"):  # a scalar (or a 0-d array)
        item = value.item()
        if type(item).__module__ != "numpy":
            return _convert(item, where, path)
    raise NotJSON(f"{where}: {_what(value)} is not JSON; {_HINT}")


def _key(key: Any, where: str) -> Any:
    if isinstance(key, str) or key is None or isinstance(key, (bool, int, float)):
        return key  # JSON writes numbers, booleans and None as strings, as json.dumps does
    if type(key).__module__ == "numpy" and hasattr(key, "item"):
        return key.item()
    raise NotJSON(f"{where}: the key {key!r} ({_what(key)}) is not a string; {_HINT}")


def _index(key: Any) -> str:
    """A key as Python (and the message's reader) writes it: ``"stats"``, ``2``."""
    return json.dumps(key) if isinstance(key, str) else repr(key)


def _what(value: Any) -> str:
    kind = type(value)
    name = kind.__qualname__
    article = "an" if name[:1].lower() in "aeiou" else "a"
    full = name if kind.__module__ == "builtins" else f"{kind.__module__}.{name}"
    return f"{article} {name} ({full})"


def _size(n: int) -> str:
    return f"{n / (1024 * 1024):.1f} MiB"
