"""``python -m confpipe`` / ``confpipe``: the Hydra app; user errors as one line, no traceback.

Exit codes: 0 all steps succeeded or were cached, 1 a step failed, 2 bad config or usage
(nothing was run or written), 130 interrupted. ``CONFPIPE_FULL_ERROR=1`` adds the traceback.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import traceback
from typing import Any

import hydra
from omegaconf import DictConfig

from confpipe import compose_once, schema
from confpipe.errors import ConfigError, ConfpipeError, Interrupted, RunFailed
from confpipe.progress import reporter_for

log = logging.getLogger("confpipe")
PLAN_FORMATS = ("table", "mermaid", "dot")


def main() -> None:
    """Entry point of ``python -m confpipe`` and the ``confpipe`` command."""
    # Hydra prints its own errors (several lines, exit 1) unless told to raise them: we do,
    # so that every config error becomes one line with exit code 2.
    os.environ["HYDRA_FULL_ERROR"] = "1"
    if "" not in sys.path and os.getcwd() not in sys.path:  # as `python -m` does: the user's
        sys.path.insert(0, os.getcwd())  # experiment modules import from the working dir
    sys.argv[1:] = flags_first(sys.argv[1:])
    from confpipe.status import git_commit

    # the manifest wants the git commit: ask git while Hydra composes, not after
    threading.Thread(target=git_commit, name="confpipe-git", daemon=True).start()
    schema.register()
    compose_once.install(multirun=bool(_MULTIRUN & set(sys.argv[1:])))
    from confpipe.compiler import register_resolver

    register_resolver()  # ${step:NAME} must resolve whenever Hydra or OmegaConf resolves
    try:
        _app()
    except SystemExit:
        raise
    except KeyboardInterrupt:
        print("confpipe: interrupted", file=sys.stderr)
        sys.exit(Interrupted.exit_code)
    except BaseException as err:
        sys.exit(report(err))


_MULTIRUN = {"-m", "--multirun"}
_FLAGS = {*_MULTIRUN, "-r", "--run", "--resolve", "-i", "--info"}


def flags_first(args: list[str]) -> list[str]:
    """Hydra's flags before its overrides: ``+experiment=train -m lr=1,2`` works as documented
    (Hydra's own parser refuses a flag after an override)."""
    flags = [a for a in args if a in _FLAGS]
    return flags + [a for a in args if a not in _FLAGS]


def report(err: BaseException) -> int:
    """Print ``err`` for a user and return the exit code."""
    full = os.environ.get("CONFPIPE_FULL_ERROR") == "1"
    if isinstance(err, ConfpipeError):
        message, code = str(err), err.exit_code
    else:
        from confpipe.explain import explain

        explained = explain(err)
        if explained is None:  # not a user error: a bug, show everything
            traceback.print_exception(err)
            return 1
        message, code = explained, 2
    if full:
        traceback.print_exception(err)
    elif code == 2:
        message += "  (CONFPIPE_FULL_ERROR=1 shows the traceback)"
    print(f"confpipe: error: {message}", file=sys.stderr)
    return code


@hydra.main(config_path="conf", config_name="config", version_base=None)
def _app(cfg: DictConfig) -> None:
    # Errors are reported here: raised through Hydra, they would get a line of its own.
    try:
        launch(cfg)
    except KeyboardInterrupt:
        print("confpipe: interrupted", file=sys.stderr)
        sys.exit(Interrupted.exit_code)
    except Exception as err:
        sys.exit(report(err))


def launch(cfg: DictConfig) -> None:
    """Compile the composed config, run it, write the manifest."""
    from hydra.core.hydra_config import HydraConfig

    from confpipe.compiler import compile_steps, run_options
    from confpipe.manifest import write_manifest
    from confpipe.pipeline import run

    if cfg.plan_format not in PLAN_FORMATS:
        raise ConfigError(
            f"plan_format: {cfg.plan_format!r} is unknown; use one of {', '.join(PLAN_FORMATS)}"
        )
    options = run_options(cfg)
    steps = compile_steps(cfg, backend=options["backend"])
    if not steps:
        raise ConfigError(
            "no steps to run: choose an experiment with +experiment=NAME "
            f"(available: {', '.join(_experiments()) or 'none found'})"
        )
    reporter: Any = reporter_for(sys.stderr, str(cfg.plan_format))
    _configure_logging(reporter)
    hydra_cfg = HydraConfig.get()
    experiment = hydra_cfg.runtime.choices.get("experiment")
    try:
        run(steps, reporter=reporter, **options)
    except (RunFailed, Interrupted):
        _manifest(write_manifest, reporter, experiment, options, hydra_cfg)
        raise
    if not options["dry_run"]:
        path = _manifest(write_manifest, reporter, experiment, options, hydra_cfg)
        print(f"manifest: {path}", file=sys.stderr)


def _experiments() -> list[str]:
    from hydra.core.global_hydra import GlobalHydra

    return sorted(GlobalHydra.instance().config_loader().get_group_options("experiment"))


def _manifest(write: Any, reporter: Any, experiment: Any, options: Any, hydra_cfg: Any) -> str:
    plans = [row.plan for row in reporter.tally.rows.values()]
    ends = {key: row.state for key, row in reporter.tally.rows.items()}
    shown = {k: v for k, v in options.items() if k not in ("backend", "lock_options")}
    return str(write(options["prefix"], experiment, plans, ends, shown, hydra_cfg.overrides.task))


def _configure_logging(reporter: Any) -> None:
    """confpipe's own log lines (lease waits, takeovers) on stderr, in step with the display."""
    console = getattr(reporter, "console", None)
    handler: logging.Handler
    if console is not None:
        from rich.logging import RichHandler

        handler = RichHandler(console=console, show_path=False, show_time=False)
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("confpipe: %(message)s"))
    log.handlers[:] = [handler]
    log.setLevel(logging.INFO)
    log.propagate = False
