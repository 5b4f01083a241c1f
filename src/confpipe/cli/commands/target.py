"""What a command answers for: the steps of exactly the config named, planned read-only.

The config is composed and compiled as for a run (``launch.prepare``), then every step and
all its dependencies are planned by ``engine.pipeline.survey``, which reads the records and
writes nothing. A ``-m`` sweep's points are merged as a run merges them: steps of equal
identity are one step.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig

from confpipe.cli.launch import close_backend, prepare
from confpipe.cli.results import Point
from confpipe.engine.options import RunOptions
from confpipe.engine.pipeline import survey
from confpipe.engine.plan import StepPlan
from confpipe.errors import ConfigError, did_you_mean

__all__ = ["Target", "of_config", "of_points"]

_LISTED = 20  # step names an error lists


@dataclass(frozen=True)
class Target:
    """The planned steps (dependencies first), a title (the experiment), the config's lease
    timeout, a sweep's points and where ``report`` writes if the config says
    (``report_html``)."""

    plans: list[StepPlan]
    title: str
    lease_timeout: float  # lock.lease_timeout: a lease without heartbeat this long is stale
    points: list[Point] | None = None
    report_html: str | None = None

    def pick(self, names: Sequence[str]) -> list[StepPlan]:
        """The plans named (a name, or ``NAME-HASH`` where a sweep has several of a name), in
        the order given; ConfigError naming the steps there are for a name that's none."""
        chosen: list[StepPlan] = []
        for name in names:
            found = [p for p in self.plans if name in (p.label, p.spec.name, p.spec.identity)]
            if not found:
                known = list(dict.fromkeys(p.spec.name for p in self.plans))
                shown = ", ".join(known[:_LISTED])
                more = f" (and {len(known) - _LISTED} more)" if len(known) > _LISTED else ""
                raise ConfigError(
                    f"{name}: no such step in this config{did_you_mean(name, known)}; "
                    f"steps: {shown}{more}"
                )
            chosen += [p for p in found if p not in chosen]
        return chosen


def of_config(cfg: DictConfig, hydra_cfg: Any, command: str) -> Target:
    """The target of one composed config."""
    if not cfg.get("steps"):
        raise ConfigError(
            f"{command}: choose the run to look at with +experiment=NAME (and the overrides "
            f"it ran with), e.g. confpipe {command} +experiment=NAME"
        )
    prepared = prepare(cfg)
    try:
        plans = survey(prepared.steps, prepared.options)
    finally:
        close_backend(prepared.options)
    timeout = prepared.options.lock_options.lease_timeout
    return Target(plans, title(hydra_cfg), timeout, None, _report_html(cfg))


def of_points(
    points: Sequence[Point], options: RunOptions, hydra_cfg: Any, cfg: DictConfig
) -> Target:
    """The target of a sweep's compiled points, planned with the run options they share
    (whose backend the caller closes)."""
    plans = survey([s for p in points for s in p.steps], options)
    timeout = options.lock_options.lease_timeout
    return Target(plans, title(hydra_cfg), timeout, list(points), _report_html(cfg))


def title(hydra_cfg: Any) -> str:
    """The experiment's name (``run`` without one)."""
    choices = hydra_cfg.runtime.choices if hydra_cfg is not None else {}
    return str(choices.get("experiment") or "run")


def _report_html(cfg: DictConfig) -> str | None:
    value = cfg.get("report_html")
    return None if value is None else str(value)
