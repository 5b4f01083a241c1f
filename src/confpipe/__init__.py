"""confpipe: config-driven ML pipelines of content-addressed, cached and locked steps.

The public API is imported lazily (PEP 562), so that ``python -m confpipe.worker`` in a job
does not pay for the driver's modules.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from confpipe.backends.resources import GPU, Resources
    from confpipe.engine.lock import LockOptions
    from confpipe.engine.pipeline import Summary, run
    from confpipe.engine.remote import remote
    from confpipe.engine.spec import Ref, StepSpec
    from confpipe.engine.status import StepState, load_result
    from confpipe.errors import (
        ConfigError,
        ConfpipeError,
        Interrupted,
        LeaseLost,
        PreviousFailure,
        RunFailed,
        StepFailed,
    )

_WHERE = {
    "ConfigError": "errors",
    "ConfpipeError": "errors",
    "Interrupted": "errors",
    "LeaseLost": "errors",
    "PreviousFailure": "errors",
    "RunFailed": "errors",
    "StepFailed": "errors",
    "LockOptions": "engine.lock",
    "Summary": "engine.pipeline",
    "run": "engine.pipeline",
    "remote": "engine.remote",
    "GPU": "backends.resources",
    "Ref": "engine.spec",
    "Resources": "backends.resources",
    "StepSpec": "engine.spec",
    "StepState": "engine.status",
    "load_result": "engine.status",
}

__all__ = [
    "GPU",
    "ConfigError",
    "ConfpipeError",
    "Interrupted",
    "LeaseLost",
    "LockOptions",
    "PreviousFailure",
    "Ref",
    "Resources",
    "RunFailed",
    "StepFailed",
    "StepSpec",
    "StepState",
    "Summary",
    "load_result",
    "remote",
    "run",
]


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'confpipe' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"confpipe.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
