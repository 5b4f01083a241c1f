"""confpipe: config-driven ML pipelines of content-addressed, cached and locked steps."""

from confpipe.errors import (
    ConfigError,
    ConfpipeError,
    Interrupted,
    LeaseLost,
    PreviousFailure,
    RunFailed,
    StepFailed,
)
from confpipe.lock import LockOptions
from confpipe.pipeline import Summary, run
from confpipe.remote import remote
from confpipe.spec import GPU, Ref, Resources, StepSpec
from confpipe.status import StepState, load_result

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
