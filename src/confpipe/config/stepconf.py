"""A step's plain data checked against StepConf, ResourcesConf and GPUConf: keys, types, units.

``RunConf.steps`` is plain data (see ``confpipe.config.schema``), so the checks OmegaConf would
make on typed nodes are made here, with the same wording: unknown keys with a suggestion,
values of the wrong type, mandatory fields (``fn``, ``gpu.type``). Values are converted as
OmegaConf converts them, so a config that composed against typed steps compiles alike:
``cpu: "4"`` is 4.0, ``spot: yes`` is true, ``version: 1`` is ``"1"``. Then what no type
can say: positive CPUs, sizes and durations in units (a size must name its unit), gpu or
tpu but not both.
"""

from __future__ import annotations

import functools
import types
import typing
from typing import Any

from confpipe.backends.resources import Resources
from confpipe.config.explain import bad_value, missing_value, unknown_key
from confpipe.config.schema import StepConf, field_types, mandatory_fields, schema_fields
from confpipe.errors import ConfigError

_TRUE, _FALSE = frozenset({"yes", "y", "on", "true"}), frozenset({"no", "n", "off", "false"})


def check_step(name: str, step: Any) -> dict[str, Any]:
    """``steps.NAME`` checked against StepConf: the fields it gives, converted to their types
    (``resources`` too, as a mapping: ``to_resources`` reads its units)."""
    key = f"steps.{name}"
    fields = _fields(key, step, StepConf)
    output_path = fields.get("output_path")
    if output_path is not None and not output_path.strip():
        raise ConfigError(
            f"{key}.output_path: must not be empty; remove it to write under {{prefix}}/{name}-HASH"
        )
    return fields


def to_resources(name: str, block: dict[str, Any] | None) -> Resources | None:
    """A step's checked ``resources`` block as Resources (which checks every value)."""
    if block is None:
        return None
    return Resources.from_config(block, key=f"steps.{name}.resources")


def _fields(key: str, raw: Any, cls: type) -> dict[str, Any]:
    """``raw`` checked against schema dataclass ``cls``: the fields it gives, converted."""
    if not isinstance(raw, dict):
        raise _bad(key, cls, raw)
    hints = field_types(cls)
    fields: dict[str, Any] = {}
    mandatory = mandatory_fields(cls)
    for name, value in raw.items():
        hint = hints.get(name)
        if hint is None:
            raise ConfigError(unknown_key(f"{key}.{name}", schema_fields(cls)))
        if value is None and name in mandatory:
            raise ConfigError(missing_value(f"{key}.{name}", absent=True))
        fields[name] = _conform(f"{key}.{name}", value, hint)
    for name in mandatory:
        if name not in fields:
            raise ConfigError(missing_value(f"{key}.{name}", absent=True))
    return fields


def _conform(key: str, value: Any, hint: Any) -> Any:
    """``value`` as a field of type ``hint`` holds it; ConfigError if it can't.

    OmegaConf's rules for typed nodes: null only where the type says ``| None`` (an empty
    mapping or list where it doesn't); str takes any scalar; int takes an int or a string
    of one; float an int, a float or a string of a number; bool true/false, yes/no, on/off,
    y/n or an integer.
    """
    nullable, base, item = _type(hint)
    if base is Any:  # sizes and durations, read by to_resources
        return value
    if value is None:
        if nullable:
            return None
        if base is dict or base is list:  # e.g. ``env:`` left empty in YAML
            return base()
        raise _bad(key, hint, value)
    if base is str:
        if isinstance(value, dict | list):
            raise _bad(key, hint, value)
        return value if type(value) is str else str(value)
    if base is float or base is int:
        if type(value) in ((float, int, str) if base is float else (int, str)):
            try:
                return base(value)
            except ValueError:
                pass
        raise _bad(key, hint, value)
    if base is bool:
        converted = _bool(value)
        if converted is None:
            raise _bad(key, hint, value)
        return converted
    if base is dict:
        if not isinstance(value, dict):
            raise _bad(key, hint, value)
        for k in value:
            if not isinstance(k, str):
                raise ConfigError(f"{key}.{k}: keys must be strings, got {k!r}; quote it in YAML")
        if item is Any:
            return value
        return {k: _conform(f"{key}.{k}", v, item) for k, v in value.items()}
    if base is list:
        if not isinstance(value, list):
            raise _bad(key, hint, value)
        return [_conform(f"{key}[{i}]", v, item) for i, v in enumerate(value)]
    if not isinstance(value, dict):  # a schema dataclass such as GPUConf
        raise _bad(key, hint, value)
    return _fields(key, value, base)


@functools.cache
def _type(hint: Any) -> tuple[bool, Any, Any]:
    """``(nullable, base, item)``: ``str | None`` is (True, str, None), ``dict[str, int]`` is
    (False, dict, int), ``GPUConf | None`` is (True, GPUConf, None)."""
    nullable = False
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        nullable, hint = True, args[0] if len(args) == 1 else Any
    origin = typing.get_origin(hint)
    if origin in (dict, list):
        return nullable, origin, typing.get_args(hint)[-1]
    return nullable, hint, None


def _bool(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value != 0
    if isinstance(value, str):
        lowered = value.lower()
        if lowered in _TRUE or lowered in _FALSE:
            return lowered in _TRUE
        try:
            return int(value) != 0
        except ValueError:
            return None
    return None


def _bad(key: str, hint: Any, value: Any) -> ConfigError:
    return ConfigError(bad_value(key, hint, value) or f"{key}: unexpected value {value!r:.60}")
