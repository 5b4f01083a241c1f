"""The Hydra launcher: a ``-m`` sweep's points compiled and merged into one DAG, run once.

Steps of equal identity are one step, so the upstream steps the points share run once and
the points themselves run side by side. Each point's config is built by applying its own
overrides to the sweep's composed config (Hydra's compose costs ~60 ms a point); a point
that changes a config group (``backend=gcp``) or a ``hydra.`` key is composed by Hydra.
Registered as ``hydra/launcher=confpipe`` by the thin ``hydra_plugins.confpipe_launcher``.
"""

from __future__ import annotations

import copy
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from hydra.core.utils import JobReturn, JobStatus
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf, open_dict

from confpipe.errors import ConfigError, Interrupted, RunFailed
from confpipe.spec import StepSpec

__all__ = ["ConfpipeLauncher"]

_NOT_DONE = {"failed", "dep failed", "cancelled"}  # StepEnd values of a step that didn't finish


@dataclass(frozen=True)
class _Point:
    overrides: list[str]
    cfg: DictConfig
    steps: list[StepSpec]


class ConfpipeLauncher(Launcher):
    """Hydra launcher that runs every point of a sweep in one confpipe DAG.

    Hydra instantiates only classes defined under ``hydra_plugins``: it runs the subclass
    ``hydra_plugins.confpipe_launcher.ConfpipeLauncher``.
    """

    def __init__(self) -> None:
        super().__init__()
        self.config: DictConfig | None = None
        self.hydra_context: HydraContext | None = None
        self.task_function: TaskFunction | None = None

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        self.config = config
        self.hydra_context = hydra_context
        self.task_function = task_function  # unused: the points run as one DAG, not as jobs

    def launch(
        self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int
    ) -> Sequence[JobReturn]:
        """Compose and compile every point, run the merged DAG, one JobReturn per point."""
        from confpipe.cli import PLAN_FORMATS, _configure_logging
        from confpipe.compiler import compile_steps, run_options
        from confpipe.manifest import write_manifest
        from confpipe.pipeline import run
        from confpipe.progress import reporter_for

        assert self.config is not None and self.hydra_context is not None
        if not job_overrides:
            return []
        compose = _Composer(self.config, self.hydra_context)
        points: list[_Point] = []
        options: dict[str, Any] = {}
        first_key: dict[str, Any] = {}
        for overrides in job_overrides:
            cfg = compose(list(overrides))
            key = _options_key(cfg)
            if not points:
                if cfg.plan_format not in PLAN_FORMATS:
                    raise ConfigError(
                        f"plan_format: {cfg.plan_format!r} is unknown; "
                        f"use one of {', '.join(PLAN_FORMATS)}"
                    )
                options, first_key = run_options(cfg), key
            elif key != first_key:
                raise ConfigError(_differing(first_key, key, overrides))
            steps = compile_steps(cfg, backend=options["backend"])
            if not steps:
                raise ConfigError(
                    "no steps to run: choose an experiment with +experiment=NAME "
                    f"(sweep point: {' '.join(overrides)})"
                )
            points.append(_Point(list(overrides), cfg, steps))

        reporter: Any = reporter_for(sys.stderr, str(points[0].cfg.plan_format))
        _configure_logging(reporter)
        hydra_cfg = self.config.hydra
        experiment = hydra_cfg.runtime.choices.get("experiment")
        failed: RunFailed | None = None
        try:
            run([s for p in points for s in p.steps], reporter=reporter, **options)
        except RunFailed as err:
            failed = err
        except Interrupted:
            _write_manifest(write_manifest, reporter, experiment, options, hydra_cfg)
            raise
        if not options["dry_run"]:
            path = _write_manifest(write_manifest, reporter, experiment, options, hydra_cfg)
            print(f"manifest: {path}", file=sys.stderr)
        rows = reporter.tally.rows
        return [_job_return(point, rows, hydra_cfg, failed) for point in points]


class _Composer:
    """Each point's config: its extra overrides applied to a copy of the sweep's config, or
    Hydra's full compose when an override needs the defaults list (groups, ``hydra.``)."""

    def __init__(self, master: DictConfig, context: HydraContext) -> None:
        self.master = master
        self.loader = context.config_loader
        self.parser = OverridesParser.create(config_loader=self.loader)
        self.common = set(OmegaConf.to_container(master.hydra.overrides.task))  # type: ignore[arg-type]
        self.groups: dict[str, bool] = {}
        base = copy.deepcopy(master)
        with open_dict(base):
            del base["hydra"]
        self.base = base

    def __call__(self, overrides: list[str]) -> DictConfig:
        extra = self.parser.parse_overrides([o for o in overrides if o not in self.common])
        if not all(self._plain(o) for o in extra):
            cfg = self.loader.load_sweep_config(self.master, overrides)
            with open_dict(cfg):
                del cfg["hydra"]
            return cfg
        from hydra._internal.config_loader_impl import ConfigLoaderImpl

        cfg = copy.deepcopy(self.base)
        ConfigLoaderImpl._apply_overrides_to_config(extra, cfg)
        return cfg

    def _plain(self, override: Override) -> bool:
        """True for a config value override; False for a group or Hydra override."""
        if override.is_hydra_override() or override.package is not None:
            return False
        if override.is_sweep_override():
            return False
        key = override.key_or_group
        if key not in self.groups:
            self.groups[key] = bool(self.loader.get_group_options(key.replace(".", "/")))
        return not self.groups[key]


def _options_key(cfg: DictConfig) -> dict[str, Any]:
    """The run options (everything but ``steps``) as plain data, to compare points."""
    keys = [str(k) for k in cfg if k not in ("steps", "hydra")]
    data = OmegaConf.to_container(OmegaConf.masked_copy(cfg, keys), resolve=True)
    assert isinstance(data, dict)
    return {str(k): v for k, v in data.items()}


def _differing(first: Mapping[str, Any], other: Mapping[str, Any], overrides: Sequence[str]) -> str:
    keys = sorted(k for k in first.keys() | other.keys() if first.get(k) != other.get(k))
    return (
        f"{', '.join(keys)}: run options differ between sweep points ({' '.join(overrides)}); "
        "a sweep runs as one DAG, so sweep only step settings (steps.NAME.config.KEY=a,b)"
    )


def _write_manifest(
    write: Any, reporter: Any, experiment: Any, options: Mapping[str, Any], hydra_cfg: Any
) -> str:
    plans = [row.plan for row in reporter.tally.rows.values()]
    ends = {key: row.state for key, row in reporter.tally.rows.items()}
    shown = {k: v for k, v in options.items() if k not in ("backend", "lock_options")}
    overrides = list(hydra_cfg.overrides.task)
    return str(write(options["prefix"], experiment, plans, ends, shown, overrides))


def _job_return(
    point: _Point, rows: Mapping[str, Any], hydra_cfg: DictConfig, failed: RunFailed | None
) -> JobReturn:  # fmt: skip
    """The point's steps, how each ended and where its output is; FAILED if one didn't end."""
    result: dict[str, dict[str, Any]] = {}
    errors: dict[str, BaseException] = {}
    blocked: dict[str, str] = {}
    for spec in point.steps:
        row = rows.get(spec.identity)
        if row is None:  # not needed: run_only left it out
            result[spec.name] = {"state": "skipped", "hash": spec.hash, "output": None}
            continue
        state = str(row.state)
        result[spec.name] = {"state": state, "hash": spec.hash, "output": row.plan.output}
        if state == "failed":
            errors[spec.name] = row.error or RuntimeError("failed")
        elif state in _NOT_DONE:
            blocked[spec.name] = state
    ret = JobReturn(
        overrides=point.overrides, cfg=point.cfg, hydra_cfg=hydra_cfg, working_dir=None,
        task_name=str(hydra_cfg.job.name),
    )  # fmt: skip
    ret.status = JobStatus.COMPLETED
    ret.return_value = result
    if failed is not None and (errors or blocked):
        ret.status = JobStatus.FAILED
        ret.return_value = RunFailed(errors, blocked)
    return ret
