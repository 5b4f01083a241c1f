"""Env values given on the command line, hidden wherever confpipe writes or prints them.

``+steps.pre.resources.env.TOKEN=s3cr3t`` hands the job a value that may be a secret;
confpipe records and shows which overrides a launch had (the manifest, ``info.json``'s argv,
the sweep table, point labels, error messages), so every one of those goes through
``redact_overrides`` first: the key stays, the value becomes ``***``
(``+steps.pre.resources.env.TOKEN=***``). A whole mapping keeps its names:
``steps.pre.resources.env={A:1,B:2}`` -> ``steps.pre.resources.env={A:***,B:***}``.
Both ``env`` and ``secret_env`` are hidden, under any step or ``backend``: any key whose
last part is ``env`` or ``secret_env``, or whose part before the last one is.
``hide_given_values`` hides them in an error message (Hydra's own quote the override), and
``public_resources`` keeps a step's env and secret_env by their names only, as recorded and
shown.

A floor module (it imports nothing of confpipe): the engine hides ``sys.argv`` in every
``info.json``, the cli the overrides it records and prints.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

HIDDEN = "***"

_ENV_PARTS = frozenset({"env", "secret_env"})
# a Hydra override: an optional +, ++ or ~ prefix, a dotted key (an optional @package
# suffix), then = and the value (or none, for a ~ deletion)
_OVERRIDE = re.compile(r"^(?P<key>(?:\+\+|\+|~)?[\w.\-/\[\]]+(?:@[\w.\-/]*)?)=(?P<value>.*)$", re.S)
# an env mapping inside a bigger one's value: {cpu: 1, env: {A: 1}}
_NESTED = re.compile(r"(?<![\w])['\"]?(?:secret_env|env)['\"]?\s*:\s*\{")
# a name in a mapping's value: {NAME: v, ...} (quoted or not)
_NAME = re.compile(r"""^\s*(?P<name>'[^']*'|"[^"]*"|[^:{}\s,]+)\s*:""")


def redact_overrides(overrides: Iterable[str]) -> list[str]:
    """Each override with the value of an ``env`` or ``secret_env`` key replaced by ``***``;
    any other argument unchanged (so it serves a whole argv too)."""
    return [redact_override(o) for o in overrides]


redact_argv = redact_overrides


def redact_override(override: str) -> str:
    """One override with an env value hidden, else the override itself."""
    match = _OVERRIDE.match(override)
    if not match or not match["value"]:
        return override
    key = match["key"].lstrip("+~").split("@", 1)[0]
    parts = key.split(".")
    if parts[-1] in _ENV_PARTS:
        return f"{match['key']}={_hide_mapping(match['value'])}"
    if len(parts) > 1 and parts[-2] in _ENV_PARTS:
        return f"{match['key']}={HIDDEN}"
    if _NESTED.search(match["value"]):  # steps.pre.resources={cpu:1,env:{A:1}}
        return f"{match['key']}={_hide_nested(match['value'])}"
    return override


def _hide_nested(value: str) -> str:
    """Each ``env: {...}`` / ``secret_env: {...}`` mapping inside ``value`` hidden."""
    out, pos = [], 0
    for found in _NESTED.finditer(value):
        if found.start() < pos:
            continue
        end = _closing(value, found.end() - 1)
        out += [value[pos : found.end() - 1], _hide_mapping(value[found.end() - 1 : end])]
        pos = end
    return "".join([*out, value[pos:]])


def _closing(text: str, start: int) -> int:
    """The index after the bracket that closes the one at ``start`` (or the text's end)."""
    depth = 0
    for i in range(start, len(text)):
        depth += {"{": 1, "}": -1}.get(text[i], 0)
        if depth == 0:
            return i + 1
    return len(text)


def _hide_mapping(value: str) -> str:
    """``{A:1,B:2}`` as ``{A:***,B:***}``; anything else (null, a ${ref}) as ``***``."""
    text = value.strip()
    if not (text.startswith("{") and text.endswith("}")):
        return value if text in ("", "null", "{}") else HIDDEN
    names = []
    for item in _split_top(text[1:-1]):
        name = _NAME.match(item)
        names.append(f"{name['name']}:{HIDDEN}" if name else HIDDEN)
    return "{" + ",".join(n for n in names if n) + "}" if names else "{}"


def _split_top(body: str) -> list[str]:
    """The mapping's items: ``body`` split at commas outside brackets and quotes."""
    items, depth, quote, start = [], 0, "", 0
    for i, char in enumerate(body):
        if quote:
            quote = "" if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char in "{[(":
            depth += 1
        elif char in "}])":
            depth -= 1
        elif char == "," and depth == 0:
            items.append(body[start:i])
            start = i + 1
    items.append(body[start:])
    return [item for item in items if item.strip()]


def public_resources(resources: dict[str, Any]) -> dict[str, Any]:
    """A step's resources as confpipe records and shows them: ``env`` and ``secret_env``
    by their names only (their values may be secret, or name one)."""
    return {k: sorted(v) if k in _ENV_PARTS and v else v for k, v in resources.items()}


def hide_given_values(text: str, argv: Iterable[str]) -> str:
    """``text`` (an error message) with every env value given in ``argv`` replaced by ``***``:
    a message may quote an override or its value (Hydra's, OmegaConf's or confpipe's own)."""
    for value in sorted(_given_values(argv), key=len, reverse=True):
        text = text.replace(value, HIDDEN)
    return text


def _given_values(argv: Iterable[str]) -> set[str]:
    """The env values in ``argv``'s overrides: each whole value and its items (a sweep's, a
    mapping's), of three characters or more (shorter ones would hide parts of a message)."""
    values: set[str] = set()
    for arg in argv:
        match = _OVERRIDE.match(arg)
        if match and match["value"] and redact_override(arg) != arg:
            items = re.split(r"""[\s,{}\[\]:'"]+""", match["value"])
            values.update(item for item in [match["value"], *items] if len(item) >= 3)
    values.discard(HIDDEN)
    return values
