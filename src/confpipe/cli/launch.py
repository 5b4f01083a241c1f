"""One launch of composed configs: check the options, compile, run, report, record.

``prepare`` turns a composed config into the run options and its steps (every config error
raised before anything runs); ``run_and_record`` runs steps with those options under a
reporter and writes the manifest (none for a single run whose every step was cached: it
made nothing new). The CLI launches one config through both, then shows the results of its
last steps on stdout and writes the HTML report if ``report_html`` asks; the sweep launcher
(``confpipe.cli.sweep``) prepares every point, then runs and records their merged steps
once. The backend the options were built with is closed when the launch ends.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from confpipe.cli import results
from confpipe.cli.manifest import write_manifest
from confpipe.cli.plan import PLAN_FORMATS
from confpipe.cli.progress import Display, Points, configure_logging, reporter_for
from confpipe.engine.options import RunOptions
from confpipe.engine.outcome import Outcome
from confpipe.engine.spec import StepSpec
from confpipe.engine.status import load_result
from confpipe.errors import ConfigError, Interrupted, RunFailed

if TYPE_CHECKING:
    from confpipe.config.functions import Functions

__all__ = ["LaunchResult", "Prepared", "close_backend", "launch", "prepare", "run_and_record"]


@dataclass(frozen=True)
class LaunchResult:
    """What ``run_and_record`` did: the reporter (its tally says how each step ended), the
    manifest's path (None for a dry run, or if it could not be written) and the RunFailed,
    if steps failed."""

    reporter: Display
    manifest: str | None
    failed: RunFailed | None


@dataclass(frozen=True)
class Prepared:
    """A composed config made ready to run: its run options and the compiled steps."""

    options: RunOptions
    steps: list[StepSpec]
    plan_format: str


def prepare(
    cfg: DictConfig,
    *,
    options: RunOptions | None = None,
    point: str = "",
    functions: Functions | None = None,
) -> Prepared:
    """Check ``cfg``'s run options (or reuse ``options`` built from an equal config) and
    compile its steps. ``point`` names a sweep point in the error for a config with no step;
    ``functions``: the step functions the sweep's other points looked up.

    The backend of options built here is the caller's to close (``close_backend``) once
    this returns; if it raises, it has closed it."""
    # Hydra imports this module in its plugin scan (hydra_plugins.confpipe_launcher), in any
    # Hydra app: the compiler registers the ${step:} resolver, so it is imported only here
    from confpipe.config.compiler import compile_steps, run_options

    if cfg.plan_format not in PLAN_FORMATS:
        raise ConfigError(
            f"plan_format: {cfg.plan_format!r} is unknown; use one of {', '.join(PLAN_FORMATS)}"
        )
    built = options is None
    options = options if options is not None else run_options(cfg)
    try:
        steps = compile_steps(cfg, backend=options.backend, functions=functions)
        if not steps:
            where = f" (sweep point: {point})" if point else ""
            raise ConfigError(
                f"no steps to run: choose an experiment with +experiment=NAME"
                f"{where or _available()}"
            )
    except BaseException:
        if built:
            close_backend(options)
        raise
    return Prepared(options, steps, str(cfg.plan_format))


def close_backend(options: RunOptions) -> None:
    """Close the backend the options were built with (from the config), once, at the end."""
    if options.backend is not None:
        options.backend.close()


def run_and_record(
    steps: Sequence[StepSpec],
    prepared: Prepared,
    hydra_cfg: Any,
    *,
    points: Points | None = None,
) -> LaunchResult:
    """Run ``steps`` with ``prepared``'s options; write the manifest (not for a dry run, nor
    for a single run whose every step was cached: a sweep's has its results beside it).

    Interrupted is raised once the manifest is written. ``points``: the sweep points merged
    into ``steps`` (their number in the plan line, each step's point on its row).
    """
    from confpipe.engine.pipeline import run_steps  # the engine: not for Hydra's plugin scan

    options = prepared.options
    reporter = reporter_for(sys.stderr, prepared.plan_format, points=points)
    configure_logging(reporter)
    experiment = hydra_cfg.runtime.choices.get("experiment")
    overrides = list(hydra_cfg.overrides.task)
    failed: RunFailed | None = None
    try:
        run_steps(steps, options, reporter)
    except RunFailed as err:
        failed = err
    except Interrupted:
        _manifest(reporter, experiment, options, overrides)
        raise
    manifest = None
    if not options.dry_run:
        rows = reporter.tally.rows.values()
        cached = all(row.state is Outcome.CACHED for row in rows)
        if cached and points is None:
            print(f"manifest: none written (all {len(rows)} steps cached)", file=sys.stderr)
        else:
            manifest = _manifest(reporter, experiment, options, overrides)
            why = f" (all {len(rows)} steps cached; the sweep's results go beside it)"
            if manifest is not None:
                print(f"manifest: {manifest}{why if cached else ''}", file=sys.stderr)
    return LaunchResult(reporter, manifest, failed)


def launch(cfg: DictConfig) -> None:
    """Compile the composed config, run it, write the manifest, show the last steps' results
    and write the HTML report (``report_html``); raise RunFailed if a step failed. The
    backend is closed at the end, whatever happened."""
    prepared = prepare(cfg)
    try:
        hydra_cfg = HydraConfig.get()
        done = run_and_record(prepared.steps, prepared, hydra_cfg)
        if not prepared.options.dry_run:
            overrides = list(hydra_cfg.overrides.task)
            _besides(
                "show the results", show_results, prepared.steps, done.reporter, overrides, cfg
            )
            if cfg.report_html:
                _besides("write the report", write_html, str(cfg.report_html), prepared, hydra_cfg)
    finally:
        close_backend(prepared.options)
    if done.failed is not None:
        raise done.failed


def show_results(
    steps: Sequence[StepSpec], reporter: Display, overrides: list[str], cfg: DictConfig
) -> None:
    """The run's last steps' results on stdout, after the progress: their numbers as a table
    (a sweep's, of one row; ``sweep.metrics`` chooses them as for a sweep) and each one's
    JSON result on a line, cut short where long. The last steps are those no other step of
    the run depends on (with ``run_only``, of the steps it ran)."""
    ends = {
        key: (row.state, row.plan.output, row.error) for key, row in reporter.tally.rows.items()
    }
    node = cfg.get("sweep")
    sweep = OmegaConf.to_container(node, resolve=True) if node is not None else {}
    settings = {str(k): v for k, v in sweep.items()} if isinstance(sweep, dict) else {}
    ran = [s for s in steps if s.identity in ends]  # run_only: the steps it chose, and deps
    point = results.Point(overrides, ran, settings)
    row, values = results.run_results(point, ends, load_result)
    if row.metrics:  # a failure is told by the summary above: no table of it alone
        from rich.console import Console  # rich costs a cached run's start-up: only for a table

        # on a terminal as wide as it is; in a pipe or a file, wide enough not to fold columns
        console = Console(width=None if sys.stdout.isatty() else 200)
        console.print(results.table([row], "results", label="run"))
    for spec, value in values:
        print(f"result of {spec.name}: {results.compact(value)}", flush=True)


def write_html(path: str, prepared: Prepared, hydra_cfg: Any) -> None:
    """The run's HTML report at ``path`` (``report_html=PATH``), from every step's records."""
    # the report's modules (and the read of every record) only when one is asked for
    from confpipe.cli.history import gather
    from confpipe.cli.report import write_report
    from confpipe.engine.pipeline import survey

    histories = gather(survey(prepared.steps, prepared.options))
    experiment = hydra_cfg.runtime.choices.get("experiment")
    written = write_report(path, histories, title=f"confpipe: {experiment or 'run'}")
    print(f"report: {written}", file=sys.stderr)


def _besides(what: str, fn: Any, *args: Any) -> None:
    """Call ``fn(*args)``, something shown or written beside a run that is over: if it fails,
    say so in a line; the steps' records are written, so the run stands without it."""
    try:
        fn(*args)
    except Exception as err:
        print(f"confpipe: could not {what}: {err}", file=sys.stderr)


def _available() -> str:
    names = sorted(GlobalHydra.instance().config_loader().get_group_options("experiment"))
    return f" (available: {', '.join(names) or 'none found'})"


def _manifest(
    reporter: Display,
    experiment: Any,
    options: RunOptions,
    overrides: Sequence[str],
) -> str | None:
    plans = [row.plan for row in reporter.tally.rows.values()]
    ends = {key: row.state for key, row in reporter.tally.rows.items()}
    shown = {  # the backend and lock options are in the config, not repeated here
        f.name: getattr(options, f.name)
        for f in dataclasses.fields(options)
        if f.name not in ("backend", "lock_options")
    }
    try:
        return write_manifest(options.prefix, experiment, plans, ends, shown, overrides)
    except Exception as err:  # the steps' own records are written: the run stands without it
        print(f"confpipe: could not write the manifest: {err}", file=sys.stderr)
        return None
