"""The Hydra schema: structured configs for run options, steps and resources, and their units.

``register()`` stores ``RunConf`` in Hydra's ConfigStore as ``confpipe_schema``; the
package's ``conf/config.yaml`` lists it first in its defaults, so every run option from YAML
or the command line is merged into typed nodes and an unknown key or a wrong type fails
while composing (``confpipe.config.explain`` turns that failure into one line).

``steps`` is plain data on purpose: typed, OmegaConf makes composing large sweeps several
times slower and refuses ``+steps.new.fn=...``. ``StepConf``, ``ResourcesConf`` and
``GPUConf`` still define what a step may say; ``confpipe.config.stepconf`` checks every step
against them (keys, types, units) when the config is compiled, so the ``steps`` node is
left open to overrides of any key.

Sizes (``16GiB``) and durations (``2h``) stay strings here; ``parse_size`` and
``parse_duration`` read them.

The backends own their settings' schemas (``confpipe.backends.settings.BackendConf``, the
``backend`` node, and ``confpipe.backends.gcp.settings.GcpConf``): the classes Hydra checks
the config against are the ones the backends read. A backend with settings of its own
extends ``BackendConf``, is registered as ``confpipe_{kind}_schema`` (outside the
``backend`` group, whose options ``--help`` lists), and its ``conf/backend/{kind}.yaml``
starts with ``defaults: [/confpipe_{kind}_schema@_here_, _self_]``; OmegaConf accepts the
subclass in the ``backend`` node. ``backend_schema(kind)`` names the class, for configs
merged without Hydra.
"""

from __future__ import annotations

import dataclasses
import functools
import typing
from dataclasses import dataclass, field
from typing import Any

from omegaconf import MISSING

from confpipe.backends.registry import settings_class, settings_classes
from confpipe.backends.settings import BackendConf

SCHEMA_NAME = "confpipe_schema"


@dataclass
class LockConf:
    heartbeat_interval: float = 30
    lease_timeout: float = 90


@dataclass
class GPUConf:
    type: str = MISSING
    count: int = 1


@dataclass
class ResourcesConf:
    """A step's ``resources:`` block; present means the step runs as a job."""

    cpu: float = 1
    memory: Any = None  # a size with its unit: 16GiB, 512MiB, 100B
    disk: Any = None  # a size with its unit
    gpu: GPUConf | None = None
    tpu: str | None = None
    spot: bool = False
    max_retries: int = 0
    timeout: Any = None  # a duration: 2h, 1h30m, or seconds
    env: dict[str, str] = field(default_factory=dict)
    secret_env: dict[str, str] = field(default_factory=dict)
    pip_extras: list[str] = field(default_factory=list)
    machine_type: str | None = None  # gcp: an explicit machine type


@dataclass
class StepConf:
    """One step: ``fn(output_path=..., **config)``; ``${step:NAME}`` in config makes an edge."""

    fn: str = MISSING
    config: dict[str, Any] = field(default_factory=dict)
    resources: ResourcesConf | None = None
    version: str | None = None
    output_path: str | None = None  # relative: under the prefix; absolute, ~/..., URL: as is


def backend_schema(kind: object) -> type[BackendConf]:
    """The schema class of backend ``kind`` (``BackendConf`` for local and unknown kinds)."""
    return settings_class(kind)


@dataclass
class SweepConf:
    """What a ``-m`` sweep reports per point (confpipe.cli.results)."""

    metrics: list[str] = field(default_factory=list)  # STEP.KEY of step results, per point
    objective: Any = None  # STEP.KEY, or a list of them: each point's value(s) for the sweeper


@dataclass
class RunConf:
    prefix: str = "outputs"
    dry_run: bool = False
    run_only: Any = None  # a step name or glob, or a list of them (the compiler checks)
    force_run_failed: bool = True
    max_concurrent: int = 32
    detach: bool = False
    plan_format: str = "table"
    log_level: str = "INFO"
    rerun_on_code_change: bool = False
    report_html: str | None = None
    lock: LockConf = field(default_factory=LockConf)
    backend: BackendConf = field(default_factory=BackendConf)
    sweep: SweepConf = field(default_factory=SweepConf)
    steps: dict[str, Any] = field(default_factory=dict)  # name -> StepConf, as plain data


def register() -> None:
    """Store ``RunConf`` in Hydra's ConfigStore as ``confpipe_schema`` (safe to call again).

    The ``steps`` node is not in struct mode, so an override may set any key under a step,
    present in the YAML or not (``steps.X.resources.cpu=4``, ``steps.new.fn=...``); the
    compiler checks every step's keys. Run options stay strict: ``+`` adds a key there.
    Each backend's own schema is ``confpipe_{kind}_schema`` (outside the ``backend`` group,
    so that ``--help`` lists only real backends), its mappings (``labels``) open to any key.
    """
    from hydra.core.config_store import ConfigStore
    from omegaconf import OmegaConf

    node = OmegaConf.structured(RunConf)
    OmegaConf.set_struct(node.steps, False)
    store = ConfigStore.instance()
    store.store(name=SCHEMA_NAME, node=node, provider="confpipe")
    for kind, cls in settings_classes().items():
        if cls is BackendConf:  # the backend node's own type: nothing to register
            continue
        backend = OmegaConf.structured(cls)
        for name, hint in typing.get_type_hints(cls).items():
            if typing.get_origin(hint) is dict:  # its keys are the user's: labels.team=lm
                OmegaConf.set_struct(backend[name], False)
        store.store(name=f"confpipe_{kind}_schema", node=backend, provider="confpipe")


@functools.cache
def schema_fields(cls: type) -> tuple[str, ...]:
    """The field names of a schema dataclass, in order (empty for anything else)."""
    return tuple(f.name for f in dataclasses.fields(cls)) if dataclasses.is_dataclass(cls) else ()


@functools.cache
def field_types(cls: type) -> dict[str, Any]:
    """Each field's declared type (``float``, ``str | None``, ``GPUConf | None``, ...)."""
    return typing.get_type_hints(cls) if dataclasses.is_dataclass(cls) else {}


@functools.cache
def mandatory_fields(cls: type) -> frozenset[str]:
    """The fields without a default (``???`` in OmegaConf terms), such as ``StepConf.fn``."""
    if not dataclasses.is_dataclass(cls):
        return frozenset()
    return frozenset(f.name for f in dataclasses.fields(cls) if f.default is MISSING)
