"""YAML files loaded with a bound on what their aliases expand to (no "billion laughs").

PyYAML shares the object an alias (``*a``) refers to, so a file of nested anchors loads in
a blink; OmegaConf then copies every shared branch into nodes of its own, and ten lines
that expand to 10^9 leaves grow for minutes to gigabytes. ``install()`` makes the loader
OmegaConf uses (``OmegaConf.load``, hence every config file Hydra reads, and
``OmegaConf.create`` of a YAML string) count the nodes its aliases add before anything is
built, and refuse a file where they add more than ``MAX_ALIAS_NODES``, or where an alias
contains itself, with one line naming the file. Plain files, however large, pay one walk
over their nodes.
"""

from __future__ import annotations

from typing import Any

from confpipe.errors import ConfigError

__all__ = ["MAX_ALIAS_NODES", "check_aliases", "install"]

MAX_ALIAS_NODES = 10_000  # nodes that aliases may add to a document


def install() -> None:
    """Make OmegaConf's YAML loader refuse documents whose aliases expand past the bound."""
    from omegaconf import _utils, basecontainer

    if getattr(_utils.get_yaml_loader, "_confpipe_bounded", False):
        return
    base: Any = _utils.get_yaml_loader()

    class BoundedLoader(base):  # type: ignore[misc]
        def construct_document(self, node: Any) -> Any:
            check_aliases(node, self.name)
            return super().construct_document(node)

    def get_yaml_loader() -> Any:  # one class for every load: OmegaConf built one per call
        return BoundedLoader

    get_yaml_loader._confpipe_bounded = True  # type: ignore[attr-defined]
    _utils.get_yaml_loader = get_yaml_loader
    basecontainer.get_yaml_loader = get_yaml_loader  # type: ignore[attr-defined]


def check_aliases(root: Any, name: str) -> None:
    """ConfigError if the YAML node graph ``root`` (of file ``name``) is more than
    ``MAX_ALIAS_NODES`` nodes larger expanded than as written, or holds an alias to itself."""
    sizes: dict[int, int] = {}  # a node's size once expanded, by id
    open_: set[int] = set()  # the nodes on the path being walked
    stack: list[tuple[Any, bool]] = [(root, False)]
    while stack:
        node, finished = stack.pop()
        key = id(node)
        if finished:
            open_.discard(key)
            sizes[key] = 1 + sum(sizes[id(child)] for child in _children(node))
            continue
        if key in sizes:
            continue
        if key in open_:
            raise ConfigError(f"{name}: a YAML alias contains itself; remove the loop")
        open_.add(key)
        stack.append((node, True))
        stack.extend((child, False) for child in _children(node))
    added = sizes[id(root)] - len(sizes)
    if added > MAX_ALIAS_NODES:
        raise ConfigError(
            f"{name}: its YAML aliases expand to {added:,} more nodes, past the "
            f"{MAX_ALIAS_NODES:,} allowed; write the values out or nest fewer aliases"
        )


def _children(node: Any) -> list[Any]:
    value = node.value
    if not isinstance(value, list):  # a scalar
        return []
    if value and isinstance(value[0], tuple):  # a mapping's (key, value) pairs
        return [part for pair in value for part in pair]
    return value
