"""Config errors as one line that names the key and the fix, whoever raised them.

``explain(exc)`` reads an exception Hydra or OmegaConf raised while composing, merging or
resolving a config (an unknown key, a wrong type, a missing value, a bad override or YAML)
and says what is wrong, where, and how to fix it, on one line. The wording it uses is
shared with the compiler's own checks, so that a mistake reads the same whether Hydra or
the compiler found it: ``unknown_key``, ``bad_value``,
``missing_value`` and ``listing``.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from collections.abc import Mapping, Sequence

from omegaconf.errors import OmegaConfBaseException

from confpipe.backends.settings import BackendConf
from confpipe.config.schema import LockConf, RunConf, field_types, schema_fields
from confpipe.errors import ConfigError, ConfpipeError, did_you_mean

MAX_LISTED = 30
_TYPE_WORDS = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}
_MISSING_FIXES = {  # field -> (what to set, an example)
    "fn": ("the step function's dotted path", "experiments.tokenize.tokenize"),
    "type": ("an accelerator type", "nvidia-l4"),
}
_OVERRIDE_EXAMPLES = {"fn": "module.function", "type": "nvidia-l4"}
_UNKNOWN = object()


def explain(exc: BaseException) -> str | None:
    """One line naming the key (or file, or override) and the fix, for an OmegaConf or Hydra
    error raised while composing, merging or resolving a config; None if ``exc`` isn't one."""
    if isinstance(exc, ConfpipeError):
        return _one_line(str(exc))
    if type(exc).__module__.startswith("yaml"):  # a YAML syntax error, e.g. in an experiment
        mark = getattr(exc, "problem_mark", None)
        where = f"{mark.name}:{mark.line + 1}:{mark.column + 1}" if mark else "YAML"
        problem = getattr(exc, "problem", None) or _first_line(exc)
        return _one_line(f"{where}: invalid YAML: {problem}")
    if isinstance(exc, OmegaConfBaseException):
        return _explain_omegaconf(exc)
    if type(exc).__module__.startswith("hydra."):
        return _explain_hydra(exc)
    if isinstance(exc, AssertionError | AttributeError) and _from_omegaconf(exc):
        return _explain_null_parent(exc)
    if isinstance(exc, ValueError) and str(exc).startswith("Only one of --run, --multirun"):
        return f"{exc}: e.g. drop -m to print one run's config with --cfg job"
    return None


def config_error(exc: BaseException) -> ConfigError:
    """A ConfigError with ``explain(exc)`` (or the error's first line) as its message."""
    return ConfigError(explain(exc) or f"{type(exc).__name__}: {_first_line(exc)}")


def unknown_key(full_key: str, valid: Sequence[str]) -> str:
    """The message for a key the schema doesn't have, with a suggestion and the valid keys."""
    key = full_key.rsplit(".", 1)[-1]
    return f"{full_key}: unknown key{did_you_mean(key, valid)}; valid keys: {', '.join(valid)}"


def bad_value(full_key: str, hint: object, value: object = _UNKNOWN) -> str | None:
    """``{key}: 'abc' is not an integer``, from a schema field's declared type ``hint``;
    None if there are no words for that type."""
    nullable = typing.get_origin(hint) in (typing.Union, types.UnionType)
    args = [a for a in typing.get_args(hint) if a is not type(None)] if nullable else []
    base = args[0] if len(args) == 1 else hint  # Optional[X] -> X
    nullable = nullable and len(args) == 1
    example = ""
    if isinstance(base, type) and base in _TYPE_WORDS:
        expected = _TYPE_WORDS[base]
    elif typing.get_origin(base) is list:
        expected, example = "a list", f"; e.g. {full_key}=[a,b]"
    elif typing.get_origin(base) is dict:
        expected, example = "a mapping", f"; e.g. {full_key}={{KEY:value}}"
    elif isinstance(base, type) and dataclasses.is_dataclass(base):
        expected = f"a mapping with keys {', '.join(schema_fields(base))}"
    else:
        return None
    shown = "this value" if value is _UNKNOWN else "null" if value is None else f"{value!r:.60}"
    return f"{full_key}: {shown} is not {expected}{' or null' if nullable else ''}{example}"


def missing_value(full_key: str, *, absent: bool = False) -> str:
    """The message for a mandatory field: left at ``???`` or, with ``absent``, not given."""
    field_name = full_key.rsplit(".", 1)[-1]
    if absent:
        what, example = _MISSING_FIXES.get(field_name, ("a value", ""))
        return f"{full_key}: missing; set it to {what}" + (f", e.g. {example}" if example else "")
    override = _OVERRIDE_EXAMPLES.get(field_name)
    fix = f"e.g. {full_key}={override}" if override else "set a value"
    return f"{full_key}: missing mandatory value (???); {fix}"


def listing(names: Sequence[str]) -> str:
    """``a, b, c`` for a message; past the first 30 names, ``..., (N more)``."""
    shown = ", ".join(names[:MAX_LISTED])
    more = len(names) - MAX_LISTED
    return f"{shown}, ... ({more} more)" if more > 0 else shown


def _explain_hydra(exc: BaseException) -> str | None:
    from hydra.errors import MissingConfigException, OverrideParseException

    message = str(exc)
    if isinstance(exc, OverrideParseException):
        lines = message.splitlines()
        detail = _one_line(
            "\n".join(line for line in lines if not line.startswith(("Error parsing", "See ")))
        )
        quoted = _quoted(exc.override)
        fix = f"; quote the value, e.g. '{quoted}' (in the shell)" if quoted else ""
        return (
            f"override {exc.override!r}: Hydra's override grammar can't read it ({detail}){fix} "
            "(see https://hydra.cc/docs/advanced/override_grammar/basic)"
        )
    if isinstance(exc, MissingConfigException) and exc.missing_cfg_file and exc.options:
        group, _, name = exc.missing_cfg_file.rpartition("/")
        options = list(exc.options)
        return _one_line(
            f"{group}={name}: no config {name!r} in group {group!r}"
            f"{did_you_mean(name, options)}; available: {', '.join(options)}"
        )
    present = re.search(r"already at '([^']+)'.*?remove \+ prefix: '([^\n]*)'\n", message, re.S)
    if present:  # +key=value for a key the config has
        key, plain = present.groups()
        return f"{key}: already set; override it with {plain} (or ++{plain}: add or override)"
    twice = re.match(r"Multiple values for ([\w/]+)\.", message)
    if twice:  # +experiment=a +experiment=b
        group = twice.group(1)
        return (
            f"{group}: chosen twice; choose one (+{group}=NAME), or sweep over several with "
            f"-m +{group}=A,B"
        )
    unpackaged = _unpackaged(message)
    if unpackaged is not None:
        return unpackaged
    inner = _omegaconf_cause(exc)
    if inner is not None:
        explained = _explain_omegaconf(inner, _add_hint(message))
        where = re.match(r"In '([^']+)':", message)
        return f"{where.group(1)}: {explained}" if where else explained
    parsed = re.search(r"In '([^']+)': (\w+) raised while composing config:\n(.*)", message, re.S)
    if parsed:  # an error merging a config file; Hydra kept only its text
        return f"{parsed.group(1)}: {_explain_text(parsed.group(2), parsed.group(3))}"
    if "No match in the defaults list" in message and _add_hint(message):
        key = re.search(r"Could not override '([^']+)'", message)
        name = key.group(1) if key else "this group"
        return f"{name}: not in the defaults list; use {_add_hint(message)}"
    text = re.split(r"\n\s*Config search path", message)[0]
    return _one_line(text)


def _quoted(override: str) -> str | None:
    """``key=["^b$"]`` for ``key=[^b$]``: the override with its value (or each item of a
    list) quoted, if Hydra's grammar reads that; else None."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    key, sep, value = override.partition("=")
    if not sep or not value:
        return None
    if value.startswith("[") and value.endswith("]"):
        value = "[" + ",".join(_quote(item.strip()) for item in value[1:-1].split(",")) + "]"
    else:
        value = _quote(value)
    try:
        OverridesParser.create().parse_overrides([f"{key}={value}"])
    except Exception:  # still not Hydra's grammar: no advice is better than a wrong one
        return None
    return f"{key}={value}"


def _quote(text: str) -> str:
    if text[:1] in "'\"" and text[-1:] == text[:1]:
        return text
    return f'"{text}"' if '"' not in text else f"'{text}'"


def _unpackaged(message: str) -> str | None:
    """A group's file without ``# @package _global_`` first: Hydra put its keys under the
    group's name (``experiment:``), which the schema doesn't know; say so, not "unknown key"."""
    source = re.match(r"In '(([^'/]+)/[^']+)': Config(?:Key|Attribute)Error raised", message)
    unknown = re.search(r"\n\s*full_key: (\S+)\n", message)
    if source is None or unknown is None or unknown.group(1) != source.group(2):
        return None
    file, group = source.groups()
    return (
        f"{file}: its keys landed under '{group}:', not at the top level; add "
        "'# @package _global_' as its first line"
    )


def _explain_omegaconf(exc: BaseException, add_hint: str | None = None) -> str:
    from omegaconf.errors import (
        ConfigKeyError,
        GrammarParseError,
        InterpolationKeyError,
        MissingMandatoryValue,
        UnsupportedInterpolationType,
        ValidationError,
    )

    full_key = str(getattr(exc, "full_key", "") or getattr(exc, "key", "") or "config")
    first = _first_line(exc)
    object_type = getattr(exc, "object_type", None)
    if isinstance(exc, ConfigKeyError | AttributeError) and ("not in" in first):
        return _unknown_key_text(full_key, object_type, getattr(exc, "parent_node", None), add_hint)
    if isinstance(exc, MissingMandatoryValue):
        return missing_value(full_key)
    if isinstance(exc, UnsupportedInterpolationType):
        name = first.rsplit(" ", 1)[-1]
        hint = did_you_mean(name, ["step", "oc.env", "oc.select", "oc.decode", "oc.create"])
        return f"{full_key}: unknown resolver {name!r}{hint}; write ${{step:NAME}} for a step"
    if isinstance(exc, InterpolationKeyError):
        return f"{full_key}: {first}; fix the interpolation or add that key"
    if isinstance(exc, GrammarParseError):
        return f"{full_key}: bad interpolation syntax ({first}); write ${{step:NAME}} or ${{a.key}}"
    if isinstance(exc, ValidationError):
        value = getattr(exc, "value", None)  # None: not known
        shown = _UNKNOWN if value is None else value
        declared = _field_type(object_type, full_key)
        return bad_value(full_key, declared, shown) or f"{full_key}: {first}"
    return f"{full_key}: {first}"


def _explain_text(kind: str, text: str) -> str:
    """The message of an OmegaConf error Hydra only kept as text ("... raised while composing")."""
    first = text.strip().splitlines()[0] if text.strip() else kind
    key_match = re.search(r"full_key: (\S+)", text)
    type_match = re.search(r"object_type=(\w+)", text)
    full_key = key_match.group(1) if key_match else "config"
    cls = _schemas().get(type_match.group(1)) if type_match else None
    if kind in ("ConfigKeyError", "ConfigAttributeError") and "not in" in first:
        return _unknown_key_text(full_key, cls, None, None)
    if kind == "ValidationError":
        value = re.match(r"Value '(.*)' (?:of type|is not)", first)
        shown = value.group(1) if value else _UNKNOWN
        return bad_value(full_key, _field_type(cls, full_key), shown) or f"{full_key}: {first}"
    return f"{full_key}: {first}"


def _unknown_key_text(
    full_key: str, object_type: object, parent: object, add_hint: str | None
) -> str:
    if isinstance(object_type, type) and dataclasses.is_dataclass(object_type):
        return unknown_key(full_key, schema_fields(object_type))
    key = full_key.rpartition(".")[2]
    known = [str(k) for k in parent] if isinstance(parent, Mapping) else []
    fix = f"use {add_hint}" if add_hint else "write it with a leading '+'"
    return f"{full_key}: no such key{did_you_mean(key, known)}; to add it {fix}"


def _field_type(object_type: object, full_key: str) -> object:
    if not isinstance(object_type, type):
        return None
    return field_types(object_type).get(full_key.rsplit(".", 1)[-1])


def _schemas() -> dict[str, type]:
    """The typed schema classes by name, backend subclasses included."""
    found: dict[str, type] = {}
    todo: list[type] = [RunConf, LockConf, BackendConf]
    while todo:
        cls = todo.pop()
        found[cls.__name__] = cls
        todo += cls.__subclasses__()
    return found


def _explain_null_parent(exc: BaseException) -> str:
    """OmegaConf can't set a key under a null structured node (a backend's optional block)."""
    key = re.search(r"full_key: (\S+)", str(exc))
    tb, update_key = exc.__traceback__, None
    while tb is not None:  # OmegaConf.update's own ``key`` names the override's key
        if tb.tb_frame.f_code.co_name == "update" and "omegaconf" in tb.tb_frame.f_code.co_filename:
            update_key = tb.tb_frame.f_locals.get("key")
        tb = tb.tb_next
    name = key.group(1) if key else str(update_key or "an override's key")
    return (
        f"{name}: can't be set from the command line while its block is null (an OmegaConf "
        "limitation); give the block a value in YAML first, e.g. an empty one: {}"
    )


def _omegaconf_cause(exc: BaseException) -> BaseException | None:
    seen: BaseException | None = exc.__cause__ or exc.__context__
    while seen is not None:
        if isinstance(seen, OmegaConfBaseException):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def _from_omegaconf(exc: BaseException) -> bool:
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return tb is not None and "omegaconf" in tb.tb_frame.f_code.co_filename


def _add_hint(message: str) -> str | None:
    match = re.search(r"use (\+\S+)", message)
    return match.group(1) if match else None


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "msg", None) or exc).strip()
    return text.splitlines()[0].strip() if text else type(exc).__name__


def _one_line(text: str) -> str:
    """Hydra's multi-line message as one line: lines joined by ``; ``, spaces collapsed."""
    lines = [" ".join(line.split()) for line in text.strip().splitlines()]
    lines = [line for line in lines if line.strip("^ ")]  # drop caret-only pointer lines
    return "; ".join([*(line.removesuffix(".") for line in lines[:-1]), *lines[-1:]])
