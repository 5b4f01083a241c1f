"""The ``backend`` config node that every backend's settings extend, and how to set a missing one.

``BackendConf`` is the node's schema: the backend's ``kind`` and the local backend's budget
(``cpu``, ``memory``, ``gpus``), which the other kinds keep null. A backend with settings of its own
extends it (``confpipe.backends.gcp.settings.GcpConf``): OmegaConf accepts the subclass in
the ``backend`` node, and the backend reads the very same class. A setting may say what it
is and give an example in its field's metadata (``how_to_set``), which ``missing_setting``
puts in the message for a setting left unset.

The classes are structured configs, not frozen: OmegaConf makes a frozen dataclass's node
read-only, and Hydra merges the YAML and the command line into it. Backends treat an
instance as a value and never change it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["BackendConf", "how_to_set", "missing_setting"]


@dataclass
class BackendConf:
    """The ``backend`` group's node; ``cpu``/``memory``/``gpus`` are the local backend's
    budget (null: this machine's)."""

    kind: str = "local"
    cpu: float | None = None
    memory: Any = None  # a size
    gpus: Any = None  # a count, or a list of device ids (null: what `nvidia-smi -L` lists)


def how_to_set(what: str, example: str) -> dict[str, str]:
    """A setting's field metadata: what it is and an example value, for ``missing_setting``."""
    return {"what": what, "example": example}


def missing_setting(schema: type, key: str) -> str:
    """The message for ``backend.KEY`` of ``schema`` left unset: what it is and how to set it."""
    fields = dataclasses.fields(schema) if dataclasses.is_dataclass(schema) else ()
    meta: Mapping[str, str] = next((f.metadata for f in fields if f.name == key), {})
    what, example = meta.get("what", "a value"), meta.get("example", "...")
    return f"backend.{key}: missing; set {what}, e.g. backend.{key}={example}"
