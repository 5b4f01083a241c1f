"""The Hydra launcher: a ``-m`` sweep's points compiled and merged into one DAG, run once.

Steps of equal identity are one step, so the upstream steps the points share run once and
the points themselves run side by side. Each point's config is built by applying its own
overrides to the sweep's composed config (Hydra's compose costs ~60 ms a point); a point
that changes a config group (``backend=gcp``) or a ``hydra.`` key is composed by Hydra.
Registered as ``hydra/launcher=confpipe`` by the thin ``hydra_plugins.confpipe_launcher``.
"""

from __future__ import annotations

import contextlib
import copy
import pickle
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra._internal.config_loader_impl import ConfigLoaderImpl
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from hydra.core.utils import JobReturn, JobStatus
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf, open_dict

from confpipe.cli import commands, results
from confpipe.cli.launch import Prepared, close_backend, prepare, run_and_record
from confpipe.cli.progress import Display, LiveReporter, Points
from confpipe.cli.sweepend import note_failed, point_names, study
from confpipe.engine.outcome import Outcome
from confpipe.engine.status import load_result
from confpipe.errors import ConfigError, ConfpipeError, RunFailed
from confpipe.redact import redact_overrides

__all__ = ["ConfpipeLauncher", "point_labels", "tidy_sweep_dir"]


class _PointReturn(JobReturn):
    """A point's JobReturn whose ``return_value`` raises a failed point's error without
    Hydra's line "Error executing job with overrides" (of one point: the CLI ends with one
    line naming every failed point)."""

    @property
    def return_value(self) -> Any:
        if self.status is JobStatus.FAILED:
            raise self._return_value
        return self._return_value

    @return_value.setter
    def return_value(self, value: Any) -> None:
        self._return_value = value


@dataclass(frozen=True)
class _Point(results.Point):
    cfg: DictConfig  # its config, for the sweeper's JobReturn


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
        if not job_overrides:
            return []
        points, first = self._prepare(job_overrides, initial_job_idx)
        try:
            if commands.current() is not None:  # status, show, logs, report: nothing runs
                return self._answer(points, first)
            return self._run(points, first)
        finally:
            close_backend(first.options)  # built by the first point, shared by the others

    def _prepare(
        self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int
    ) -> tuple[list[_Point], Prepared]:
        """Every point composed, checked and compiled, before anything runs; and the first
        point's preparation, whose run options (and backend) every point shares."""
        assert self.config is not None and self.hydra_context is not None
        compose = _Composer(self.config, self.hydra_context)
        points: list[_Point] = []
        first: Prepared | None = None
        first_key: dict[str, Any] = {}
        # imported here, as launch.prepare imports the compiler: not in Hydra's plugin scan
        from confpipe.config.functions import Functions

        functions = Functions()  # each step function looked up and checked once, not per point
        try:
            for num, overrides in enumerate(job_overrides, initial_job_idx):
                cfg, steps_only = compose(list(overrides), num)
                key = first_key if first is not None and steps_only else _options_key(cfg)
                if first is not None and key != first_key:
                    raise ConfigError(_differing(first_key, key, overrides))
                prepared = prepare(
                    cfg,
                    options=first.options if first else None,
                    point=_label(overrides),
                    functions=functions,
                )
                first, first_key = first or prepared, first_key or key  # its backend is built
                sweep = points[0].sweep if points and steps_only else _sweep_settings(cfg)
                results.check_names(sweep, {s.name for s in prepared.steps})
                points.append(_Point(list(overrides), prepared.steps, sweep, cfg))
        except BaseException:
            if first is not None:
                close_backend(first.options)
            raise
        assert first is not None
        return points, first

    def _run(self, points: list[_Point], first: Prepared) -> list[JobReturn]:
        """Run the points' merged steps once; one JobReturn per point."""
        assert self.config is not None
        dry_run = first.options.dry_run
        _check_adaptive(self.config.hydra, points, dry_run)
        # the sweep's folder, as Hydra's launchers make it: sweepers save their results there
        # (Optuna: optimization_results.yaml); it holds nothing else of confpipe's
        Path(str(self.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)

        steps = [s for p in points for s in p.steps]
        hydra_cfg = self.config.hydra
        done = run_and_record(steps, first, hydra_cfg, points=point_labels(points))
        reporter = done.reporter
        if dry_run:
            return [_job_return(p, reporter, None, hydra_cfg) for p in points]
        adaptive = _adaptive(hydra_cfg)
        rows = _results(points, reporter, done.manifest, shown=adaptive is None)
        returns = [
            _job_return(p, reporter, r, hydra_cfg) for p, r in zip(points, rows, strict=True)
        ]
        note_failed(returns)
        if adaptive is not None:  # one table of every trial when the study is over
            study.add(rows, [p.sweep for p in points], adaptive, hydra_cfg)
        return returns

    def _answer(self, points: list[_Point], first: Prepared) -> list[JobReturn]:
        """Answer the command for the merged points (exit with its code if not 0)."""
        assert self.config is not None
        hydra_cfg = self.config.hydra
        sweeper = _adaptive(hydra_cfg)
        if sweeper is not None:
            raise ConfigError(
                f"hydra/sweeper: {sweeper} picks its points as it runs, so a command can't "
                "name them; give the values with the default sweeper (-m KEY=A,B)"
            )
        code = commands.answer_points(points, first.options, hydra_cfg, points[0].cfg)
        if code:
            raise SystemExit(code)
        return [_completed(p, hydra_cfg) for p in points]


def point_labels(points: Sequence[results.Point]) -> Points:
    """Each step's sweep point as its row shows it: the point's swept values (``lr=3e-4``),
    or ``shared by 3 points`` for a step several points have in common."""
    named = point_names([p.overrides for p in points])
    owners: dict[str, list[int]] = {}
    for i, point in enumerate(points):
        for spec in point.steps:
            owners.setdefault(spec.identity, []).append(i)
    labels: dict[str, str] = {}
    for identity, found in owners.items():
        if len(found) > 1:
            labels[identity] = f"shared by {len(found)} points"
        elif named[found[0]]:
            labels[identity] = named[found[0]]
    return Points(len(points), labels if len(points) > 1 else {})


def tidy_sweep_dir(folder: Path) -> None:
    """Remove a grid sweep's folder in the temp folder (the default ``hydra.sweep.dir``): it
    holds only Hydra's ``multirun.yaml``, which the sweep's manifest records better; and
    ``confpipe-sweeps`` itself if that leaves it empty. A folder the user chose is kept, as
    is any folder holding more (a sweeper's results, another sweep's folder)."""
    if folder.parent.name != "confpipe-sweeps":
        return
    (folder / "multirun.yaml").unlink(missing_ok=True)
    with contextlib.suppress(OSError):  # not empty: something else wrote there
        folder.rmdir()
        folder.parent.rmdir()


_GRID_SWEEPERS = ("BasicSweeper", "ConfpipeSweeper")  # sweepers that read no return value


def _adaptive(hydra_cfg: DictConfig) -> str | None:
    """The sweeper's class name if it reads the points' return values (Optuna), else None."""
    target = str(OmegaConf.select(hydra_cfg, "sweeper._target_", default="") or "")
    return None if target.endswith(_GRID_SWEEPERS) else target.rsplit(".", 1)[-1] or "?"


def _check_adaptive(hydra_cfg: DictConfig, points: Sequence[_Point], dry_run: bool) -> None:
    """An adaptive sweeper (Optuna) needs each point's objective: refuse a sweep that can't
    give one before anything runs."""
    sweeper = _adaptive(hydra_cfg)
    if sweeper is None:
        return
    if any(not results.names(p.sweep.get("objective")) for p in points):
        raise ConfigError(
            f"sweep.objective: {sweeper} needs a number from each point to search on; set "
            "sweep.objective=STEP.KEY (a key of a step's returned dict, e.g. eval.eval_loss)"
        )
    if dry_run:
        raise ConfigError(
            f"dry_run: {sweeper} needs each point's objective, which a dry run doesn't "
            "compute; run it for real, or dry-run the same values with the default sweeper"
        )


def _sweep_settings(cfg: DictConfig) -> dict[str, Any]:
    """The point's ``sweep`` settings (metrics, objective) as plain data."""
    node = cfg.get("sweep")
    data = OmegaConf.to_container(node, resolve=True) if node is not None else {}
    return {str(k): v for k, v in data.items()} if isinstance(data, dict) else {}


def _results(
    points: Sequence[_Point], reporter: Display, manifest: str | None, *, shown: bool = True
) -> list[results.PointResult]:
    """The points' results: shown as a table below the summary (if ``shown``: an adaptive
    sweep's are shown all at once when it ends), written next to the manifest
    (``{prefix}/sweeps/`` instead of ``manifests/``) if there is one."""
    from rich.console import Console  # rich costs a cached run's start-up: only when shown

    ends = {
        key: (row.state, row.plan.output, row.error) for key, row in reporter.tally.rows.items()
    }
    rows = results.results(points, ends, load_result)
    # on a terminal the live display's console; in a log, wide enough not to fold the columns
    if isinstance(reporter, LiveReporter):
        console = reporter.console
    else:
        console = Console(file=sys.stderr, width=200)
    if shown:
        console.print(results.table(rows, f"{len(rows)} sweep points"))
    if manifest is not None:
        stem = manifest.rsplit("/manifests/", 1)
        paths = results.write(rows, f"{stem[0]}/sweeps/{stem[1].removesuffix('.json')}")
        print(f"results: {paths[0]} (and .json)", file=sys.stderr)
    for name in results.unreported(points, rows):
        step = name.split(".", 1)[0]
        print(
            f"confpipe: sweep.metrics: {name} is in no point's results; check the key against "
            f"what step {step} returns (confpipe.load_result of its output)",
            file=sys.stderr,
        )
    return rows


class _Composer:
    """Each point's config: its extra overrides applied to a copy of the sweep's config, or
    Hydra's full compose when an override needs the defaults list (groups, ``hydra.``)."""

    def __init__(self, master: DictConfig, context: HydraContext) -> None:
        self.master = master
        self.loader = context.config_loader
        self.parser = OverridesParser.create(config_loader=self.loader)
        self.parsed: dict[str, Override] = {}
        self.groups: dict[str, bool] = {}
        # what the sweep's config already has: its overrides that are not sweeps (a sweeper
        # may spell them anew: dry_run=true comes back as dry_run=True)
        given = [self._parse(o) for o in master.hydra.overrides.task]
        self.common = {_same(o) for o in given if not o.is_sweep_override()}
        base = copy.deepcopy(master)
        with open_dict(base):
            del base["hydra"]
        self.base = base
        # each point copies it: unpickled, a copy costs a sixth of a deepcopy (1,000 points:
        # a second); a config that cannot be pickled is deep-copied
        try:
            self.pickled: bytes | None = pickle.dumps(base, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception:
            self.pickled = None
        # a config that reads ${hydra:...} (job.num, override_dirname...) gets each point's
        # own Hydra config, composed by Hydra (slower: about a compose per point)
        self.per_job = "${hydra:" in OmegaConf.to_yaml(base)

    def __call__(self, overrides: list[str], num: int) -> tuple[DictConfig, bool]:
        """Point ``num``'s config, and whether its own overrides set only step settings (then
        its run options are the sweep's)."""
        extra = [o for o in map(self._parse, overrides) if _same(o) not in self.common]
        if self.per_job or not all(self._plain(o) for o in extra):
            cfg = self.loader.load_sweep_config(self.master, overrides)
            with open_dict(cfg):
                cfg.hydra.job.id = cfg.hydra.job.num = num  # as Hydra's launchers number them
            HydraConfig.instance().set_config(cfg)  # ${hydra:...} is this point's, as it compiles
            with open_dict(cfg):
                del cfg["hydra"]
            return cfg, False
        cfg = copy.deepcopy(self.base) if self.pickled is None else pickle.loads(self.pickled)
        ConfigLoaderImpl._apply_overrides_to_config(extra, cfg)
        return cfg, all(o.key_or_group.startswith("steps.") for o in extra)

    def _parse(self, override: str) -> Override:
        """``override`` parsed, once per distinct string (most recur in every point)."""
        parsed = self.parsed.get(override)
        if parsed is None:
            parsed = self.parsed[override] = self.parser.parse_overrides([override])[0]
        return parsed

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


def _same(override: Override) -> tuple[Any, ...]:
    """What an override does, however it is spelled."""
    value = override.value()
    return (override.type, override.key_or_group, override.package, type(value), repr(value))


def _options_key(cfg: DictConfig) -> dict[str, Any]:
    """The run options (everything but ``steps``) as plain data, to compare points."""
    keys = [str(k) for k in cfg if k not in ("steps", "hydra", "sweep")]  # sweep: per point
    data = OmegaConf.to_container(OmegaConf.masked_copy(cfg, keys), resolve=True)
    assert isinstance(data, dict)
    return {str(k): v for k, v in data.items()}


def _differing(first: Mapping[str, Any], other: Mapping[str, Any], overrides: Sequence[str]) -> str:
    keys = sorted(k for k in first.keys() | other.keys() if first.get(k) != other.get(k))
    return (
        f"{', '.join(keys)}: run options differ between sweep points ({_label(overrides)}); "
        "a sweep runs as one DAG, so sweep only step settings (steps.NAME.config.KEY=a,b)"
    )


def _completed(point: _Point, hydra_cfg: DictConfig) -> JobReturn:
    """The point's JobReturn: COMPLETED, no value."""
    ret = _PointReturn(
        overrides=point.overrides, cfg=point.cfg, hydra_cfg=hydra_cfg, working_dir=None,
        task_name=str(hydra_cfg.job.name),
    )  # fmt: skip
    ret.status, ret.return_value = JobStatus.COMPLETED, None
    return ret


def _job_return(
    point: _Point,
    reporter: Display,
    row: results.PointResult | None,
    hydra_cfg: DictConfig,
) -> JobReturn:
    """What the sweeper gets for a point: its objective (``sweep.objective``) or its result
    row; FAILED, with the steps' errors, when a step of it failed or was blocked."""
    ret = _completed(point, hydra_cfg)
    if row is None:  # a dry run: nothing ran
        return ret
    if row.status in (results.PointStatus.FAILED, results.PointStatus.NOT_RUN):
        errors: dict[str, BaseException] = {}
        blocked: dict[str, str] = {}
        for spec in point.steps:
            step = reporter.tally.rows.get(spec.identity)
            if step is not None and step.state is Outcome.FAILED:
                errors[spec.name] = step.error or RuntimeError("failed")
            elif step is not None and step.state.stopped:
                blocked[spec.name] = step.state.value
        ret.status, ret.return_value = JobStatus.FAILED, RunFailed(errors, blocked)
        return ret
    if row.error:  # no objective value (see results.results)
        ret.status, ret.return_value = JobStatus.FAILED, ConfpipeError(row.error)
        return ret
    wants_objective = bool(results.names(point.sweep.get("objective")))
    if not row.finished and wants_objective and _adaptive(hydra_cfg) is not None:  # run_only
        error = (
            f"sweep.objective: no value, run_only left out this point's steps ({row.status.value})"
        )
        ret.status, ret.return_value = JobStatus.FAILED, ConfpipeError(error)
        return ret
    objective = results.objective_of(row, point.sweep) if wants_objective and row.finished else None
    ret.return_value = row.as_dict() if objective is None else objective
    return ret


def _label(overrides: Sequence[str]) -> str:
    """A point's overrides as a message names it, env values hidden."""
    return " ".join(redact_overrides(overrides))
