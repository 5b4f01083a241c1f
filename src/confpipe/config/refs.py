"""``${step:NAME}``: the resolver, the steps read with each reference as a marker, and the
markers linked to StepSpecs (the DAG's edges).

``${step:NAME}`` resolves to a marker string, so it survives inside longer strings and
lists. ``steps_data`` reads the config's steps in one ``OmegaConf.to_container`` pass and
turns plain ``${step:NAME}`` interpolations into markers itself (OmegaConf's parser costs
about a millisecond per interpolation); any other interpolation is resolved by OmegaConf.
While a config is shown (``showing_paths``), the resolver gives the output path instead.
``link`` then makes each marker in a step's config NAME's StepSpec (the whole string), a
``Ref`` (the marker then text: ``${step:tok}/shards``) or a ``Template`` (anything else).
"""

from __future__ import annotations

import contextlib
import contextvars
import re
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from omegaconf import DictConfig, OmegaConf, SCMode
from omegaconf.errors import OmegaConfBaseException

from confpipe.config.explain import config_error
from confpipe.engine.spec import Ref, StepSpec, Template
from confpipe.errors import ConfigError

_START, _END = "\x00confpipe-step:", "\x00"
_MARKER = re.compile("\x00confpipe-step:([^\x00]*)\x00")
_PLAIN_REF = re.compile(r"\$\{step:([A-Za-z_][\w.\-]*)\}")
_NOT_PLAIN = frozenset({"true", "false", "null", "nan", "inf"})


# While a config is shown (``--cfg job --resolve``): a function giving each step's output
# path from the config's root, which the resolver then shows instead of its marker
_showing: contextvars.ContextVar[Callable[[Any], Mapping[str, str]] | None] = (
    contextvars.ContextVar("confpipe_showing", default=None)
)
_shown: dict[int, Mapping[str, str]] = {}  # the paths of each root shown, by id


def _step_marker(name: object, _root_: Any = None) -> str:
    paths_of = _showing.get()
    if paths_of is None or _root_ is None:
        return f"{_START}{name}{_END}"
    if id(_root_) not in _shown:
        token = _showing.set(None)  # the compile below resolves with markers, as a run does
        try:
            _shown[id(_root_)] = paths_of(_root_)
        except Exception:  # a config that doesn't compile: its references stay as written
            _shown[id(_root_)] = {}
        finally:
            _showing.reset(token)
    return _shown[id(_root_)].get(str(name), f"${{step:{name}}}")


@contextlib.contextmanager
def showing_paths(paths_of: Callable[[Any], Mapping[str, str]]) -> Iterator[None]:
    """Within the block, ``${step:NAME}`` resolves to NAME's output path, which
    ``paths_of(root config)`` gives (``${step:NAME}`` as written where it can't): for
    showing a config, never for running it."""
    token = _showing.set(paths_of)
    try:
        yield
    finally:
        _showing.reset(token)
        _shown.clear()


def register_resolver() -> None:
    """Register the ``${step:NAME}`` resolver with OmegaConf (once; safe to call again)."""
    if not OmegaConf.has_resolver("step"):
        OmegaConf.register_new_resolver("step", _step_marker)


register_resolver()


def steps_data(cfg: DictConfig | Mapping[str, Any]) -> Any:
    """``cfg.steps`` as plain data, interpolations resolved, ``${step:NAME}`` as markers.

    OmegaConf parses every interpolation with an ANTLR parser (about a millisecond each), so
    the plain ``${step:NAME}`` form is replaced here; any other interpolation (or an escape)
    is resolved by OmegaConf itself, node by node.
    """
    if not isinstance(cfg, DictConfig):  # plain data: OmegaConf only if an interpolation needs it
        made: list[Any] = []

        def made_node() -> Any:
            if not made:
                made.append(OmegaConf.create(dict(cfg))["steps"])
            return made[0]

        return _resolve_strings(cfg.get("steps"), (), made_node)
    try:
        node = cfg.get("steps")
        if not OmegaConf.is_config(node):
            return node
        raw = OmegaConf.to_container(node, structured_config_mode=SCMode.DICT)
    except OmegaConfBaseException as err:
        raise config_error(err) from None
    return _resolve_strings(raw, (), lambda: node)


def markers(value: Any, key: str) -> Iterator[tuple[str, str]]:
    """``(key, NAME)`` for every ``${step:NAME}`` in ``value`` (strings, lists, dicts)."""
    if isinstance(value, str):
        if _START in value:
            for name in _MARKER.findall(value):
                yield key, name
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from markers(v, f"{key}.{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from markers(v, f"{key}[{i}]")


def as_written(text: str) -> str:
    """``text`` with each marker back as the ``${step:NAME}`` it was written as (for messages)."""
    return _MARKER.sub(lambda m: f"${{step:{m.group(1)}}}", text) if _START in text else text


def refuse_refs(key: str, value: Any, what: str) -> None:
    """ConfigError if ``value`` holds a ``${step:NAME}``: only a step's config may."""
    if isinstance(value, str) and _START not in value:
        return  # the common case, without a generator
    for where, name in markers(value, key):
        raise ConfigError(
            f"{where}: ${{step:{name}}} is only allowed in a step's config (where it passes "
            f"{name}'s output path and adds an edge), not in {what}"
        )


def link(value: Any, specs: Mapping[str, StepSpec]) -> Any:
    """``value`` with each marker replaced: StepSpec, Ref(step, suffix) or Template(parts)."""
    if isinstance(value, str):
        if _START not in value:
            return value
        pieces = _MARKER.split(value)  # text, name, text, name, ..., text
        texts, names = pieces[0::2], pieces[1::2]
        if len(names) == 1 and not texts[0]:
            step = specs[names[0]]
            return Ref(step, texts[1]) if texts[1] else step
        parts: list[str | StepSpec] = []
        for i, text in enumerate(texts):
            if text:
                parts.append(text)
            if i < len(names):
                parts.append(specs[names[i]])
        return Template(tuple(parts))
    if isinstance(value, dict):
        return {k: link(v, specs) for k, v in value.items()}
    if isinstance(value, list):
        return [link(v, specs) for v in value]
    return value


def _resolve_strings(value: Any, path: tuple[Any, ...], steps: Callable[[], Any]) -> Any:
    if isinstance(value, str):
        if "${" in value and "\\" not in value:
            value = _PLAIN_REF.sub(_plain_marker, value)
        if "${" in value or value == "???":
            return _resolve_node(steps, path)
        return value
    if isinstance(value, Mapping):
        return {k: _resolve_strings(v, (*path, k), steps) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_resolve_strings(v, (*path, i), steps) for i, v in enumerate(value)]
    return value


def _plain_marker(match: re.Match[str]) -> str:
    name = match.group(1)  # names OmegaConf would read as something else go the slow way
    return match.group(0) if name.lower() in _NOT_PLAIN else _step_marker(name)


def _resolve_node(steps: Callable[[], Any], path: tuple[Any, ...]) -> Any:
    """The value at ``path`` under ``steps`` as OmegaConf resolves it (one node, the slow way)."""

    def node() -> Any:
        value = steps()
        for key in path:
            value = value[key]
        return value

    return resolved(node)


def resolved(get: Callable[[], Any]) -> Any:
    """What ``get()`` returns, as plain data with every interpolation resolved; OmegaConf's
    errors (raised while getting or resolving) become one-line ConfigErrors."""
    try:
        value = get()
        if OmegaConf.is_config(value):
            return OmegaConf.to_container(
                value, resolve=True, throw_on_missing=True, structured_config_mode=SCMode.DICT
            )
        return value
    except OmegaConfBaseException as err:
        raise config_error(err) from None
