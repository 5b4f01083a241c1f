"""The commands that look at what ran: ``status``, ``show``, ``logs``, ``report`` and ``gc``.

``cli.main`` peels a command's own words off the command line (``args.split``) and keeps
the request here; Hydra composes the rest as for a run, and the Hydra app (one config) or
the sweep launcher (``-m``: every point) answers with the composed config instead of
launching. ``gc PREFIX`` needs no config: ``cli.main`` calls ``gc`` directly.

args     the request: command, STEP names, flags
target   the config's steps, planned read-only (``engine.pipeline.survey``)
status, show, logs, report, gc   one module per command, each with ``run``

The commands write nothing, except what ``gc --yes`` deletes and the page ``report`` writes.
Their exit codes are a run's: 0 ok, 1 (``logs``) the step failed or has no log, 2 bad
usage or config, as one line.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence
from typing import Any

from omegaconf import DictConfig

from confpipe.cli.commands.args import COMMANDS, USAGE, Request, split
from confpipe.cli.results import Point
from confpipe.engine.options import RunOptions

__all__ = [
    "COMMANDS", "Request", "answer_alone", "answer_config", "answer_points", "current",
    "print_err", "set_request", "split",
]  # fmt: skip

_request: Request | None = None  # this process's command, if it runs one (see cli.main)


def set_request(request: Request | None) -> None:
    global _request
    _request = request


def current() -> Request | None:
    """The command this process answers, or None when it runs a pipeline."""
    return _request


def answer_config(cfg: DictConfig, hydra_cfg: Any) -> int:
    """Run the current command for one composed config; its exit code."""
    request = _current()
    # the engine and the command modules: imported only when a command runs (a run's start-up
    # and Hydra's plugin scan, which imports cli.sweep and so this package, never need them)
    from confpipe.cli.commands import target

    return _module(request).run(target.of_config(cfg, hydra_cfg, request.command), request)  # type: ignore[no-any-return]


def answer_points(
    points: Sequence[Point], options: RunOptions, hydra_cfg: Any, cfg: DictConfig
) -> int:
    """Run the current command for a ``-m`` sweep's compiled points; its exit code."""
    request = _current()
    from confpipe.cli.commands import target  # as in answer_config

    return _module(request).run(target.of_points(points, options, hydra_cfg, cfg), request)  # type: ignore[no-any-return]


def answer_alone(request: Request) -> int:
    """``gc PREFIX`` (needs no config) and a command's ``--help``."""
    if request.help:
        print(USAGE)
        return 0
    return _module(request).run(request)  # type: ignore[no-any-return]


def _current() -> Request:
    assert _request is not None, "no command requested"
    return _request


def _module(request: Request) -> Any:
    return importlib.import_module(f"confpipe.cli.commands.{request.command}")


def print_err(message: str) -> None:
    """A line for the user on stderr, as the CLI prints its notes."""
    print(f"confpipe: {message}", file=sys.stderr)
