"""``python -m confpipe`` / ``confpipe``: the Hydra app; user errors as one line, no traceback.

A run by default; ``status``, ``show``, ``logs``, ``report`` (given a run's overrides) and
``gc PREFIX`` look at what ran instead (``confpipe.cli.commands``).
Exit codes: 0 all steps succeeded or were cached, 1 a step failed, 2 bad config or usage
(nothing was run or written), 130 interrupted by Ctrl-C, 143 by SIGTERM (which stops a run
as cleanly as Ctrl-C does; both are named where the stop is reported).
``CONFPIPE_FULL_ERROR=1`` adds the traceback.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import traceback

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from confpipe import interrupt
from confpipe.cli import commands, completion, sweepend
from confpipe.cli.launch import launch
from confpipe.cli.sweepend import failed_points
from confpipe.config import compose as compose_once
from confpipe.config import schema
from confpipe.config.compiler import register_resolver
from confpipe.config.explain import explain
from confpipe.config.search import shipped_conf
from confpipe.engine.status import git_commit
from confpipe.errors import ConfpipeError, Interrupted, RunFailed
from confpipe.redact import hide_given_values


def main() -> None:
    """Entry point of ``python -m confpipe`` and the ``confpipe`` command."""
    # Hydra prints its own errors (several lines, exit 1) unless told to raise them: we do,
    # so that every config error becomes one line with exit code 2.
    os.environ["HYDRA_FULL_ERROR"] = "1"
    interrupt.raise_on_sigterm()  # `kill`, a scheduler's stop: clean up as Ctrl-C does
    if completion.wants_install(sys.argv[1:]):  # Hydra's script can't call python -m confpipe
        print(completion.BASH_SCRIPT)
        sys.exit(0)
    sys.argv[1:] = completion.query_args(sys.argv[1:], commands.COMMANDS)
    if "" not in sys.path and os.getcwd() not in sys.path:  # as `python -m` does: the user's
        sys.path.insert(0, os.getcwd())  # experiment modules import from the working dir
    try:  # a command's own words (status STEP --json...) are not Hydra's to parse
        request, args = commands.split(sys.argv[1:])
    except ConfpipeError as err:
        sys.exit(report(err))
    commands.set_request(request)
    if request is not None and (request.help or request.command == "gc"):
        sys.exit(_command_without_config(request))
    sys.argv[1:] = flags_first(args)
    if request is None:  # the manifest wants the git commit: ask git while Hydra composes
        threading.Thread(target=git_commit, name="confpipe-git", daemon=True).start()
    schema.register()
    compose_once.install(multirun=bool(_MULTIRUN & set(sys.argv[1:])))
    register_resolver()  # ${step:NAME} must resolve whenever Hydra or OmegaConf resolves
    try:
        _app()
    except SystemExit:
        raise
    except KeyboardInterrupt:
        sys.exit(_interrupted())
    except RunFailed as err:
        if failed_points():  # a sweeper gave up on failed points (Optuna's max_failure_rate)
            sys.exit(sweepend.end())
        sys.exit(report(err))
    except BaseException as err:
        sys.exit(report(err))
    sys.exit(sweepend.end())  # a sweep: the trials' table, the failed points (or exit 0)


def _command_without_config(request: commands.Request) -> int:
    """``gc PREFIX`` and a command's ``--help``: no Hydra config to compose."""
    try:
        return commands.answer_alone(request)
    except KeyboardInterrupt:
        return _interrupted()
    except SystemExit:
        raise
    except BaseException as err:
        return report(err)


def _interrupted() -> int:
    """Say that a signal stopped us (before or between steps) and return its exit code."""
    print(f"confpipe: {interrupt.interrupted()}", file=sys.stderr)
    return interrupt.exit_code()


_MULTIRUN = {"-m", "--multirun"}
_FLAGS = {*_MULTIRUN, "-r", "--run", "--resolve", "-i", "--info"}


def flags_first(args: list[str]) -> list[str]:
    """Hydra's flags before its overrides: ``+experiment=train -m lr=1,2`` works as documented
    (Hydra's own parser refuses a flag after an override)."""
    flags = [a for a in args if a in _FLAGS]
    return flags + [a for a in args if a not in _FLAGS]


BROKEN_PIPE = 141  # 128 + SIGPIPE, as a shell reports a command whose reader went away


def report(err: BaseException) -> int:
    """Print ``err`` for a user and return the exit code."""
    full = os.environ.get("CONFPIPE_FULL_ERROR") == "1"
    if isinstance(err, BrokenPipeError):  # `... | head`: the reader left; nothing to tell it
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return BROKEN_PIPE
    if isinstance(err, Interrupted):  # a stop asked for, not an error: named by its signal
        print(f"confpipe: {err}", file=sys.stderr)
        return interrupt.exit_code()
    if isinstance(err, ConfpipeError):
        message, code = str(err), err.exit_code
    else:
        explained = explain(err)
        if explained is None:  # not a user error: a bug, show everything
            traceback.print_exception(err)
            return 1
        message, code = explained, 2
    if full:
        traceback.print_exception(err)
    elif code == 2:
        message += "  (CONFPIPE_FULL_ERROR=1 shows the traceback)"
    if code == 2:  # a config error may quote an override: its env values hidden
        message = hide_given_values(message, sys.argv)
    print(f"confpipe: error: {message}", file=sys.stderr)
    return code


@hydra.main(config_path=shipped_conf(), config_name="config", version_base=None)
def _app(cfg: DictConfig) -> None:
    # Errors are reported here: raised through Hydra, they would get a line of its own.
    try:
        request = commands.current()
        if request is not None:  # status, show, logs, report: for this config
            code = commands.answer_config(cfg, HydraConfig.get())
            if code:
                sys.exit(code)
            return
        launch(cfg)  # one config; a -m sweep goes to confpipe.cli.sweep's launcher instead
    except KeyboardInterrupt:
        sys.exit(_interrupted())
    except Exception as err:
        if _one_of_many():  # Hydra's launcher runs the other points, then raises the first error
            raise
        sys.exit(report(err))


def _one_of_many() -> bool:
    """True when another launcher (``hydra/launcher=basic``) runs this as one sweep point."""
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN
