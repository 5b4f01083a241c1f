"""``confpipe report``: the run's HTML page, written by ``confpipe.cli.report``.

This module gathers what the page shows — every step's records with its log tail, and for
a ``-m`` sweep the results row of each point — and hands it to ``write_report``. The page
goes to ``report_html=PATH`` if given (a path or URL), else to
``./confpipe-report-{experiment}.html`` in the working directory; the path is printed.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

from confpipe.cli import results
from confpipe.cli.commands.args import Request
from confpipe.cli.commands.target import Target
from confpipe.cli.history import StepHistory, gather
from confpipe.engine.outcome import Outcome
from confpipe.engine.status import StepState

__all__ = ["default_path", "ends_of", "run"]

_ENDS = {  # a record's end state as the run's tally would have it
    StepState.SUCCESS: Outcome.CACHED,
    StepState.FAILED: Outcome.FAILED,
    StepState.DEP_FAILED: Outcome.DEP_FAILED,
}


def run(target: Target, request: Request) -> int:
    # the page's renderer: only the report command needs it
    from confpipe.cli.report import write_report

    histories = gather(target.plans, results=True, logs=True)
    sweep = None
    if target.points is not None:
        values = {h.plan.output: h.result for h in histories if h.has_result}
        sweep = results.results(target.points, ends_of(histories), values.get)
    path = target.report_html or default_path(target.title)
    written = write_report(path, histories, title=target.title, sweep=sweep)
    print(written or path)
    return 0


def default_path(title: str) -> str:
    """``confpipe-report-{experiment}.html``, in the working directory."""
    return os.path.abspath(f"confpipe-report-{title.replace('/', '_')}.html")


def ends_of(histories: Sequence[StepHistory]) -> Mapping[str, results.End]:
    """How each step that ended ended, by identity, as ``results.results`` takes it: steps
    still RUNNING or never run are left out (their points are partial)."""
    ends: dict[str, results.End] = {}
    for h in histories:
        state = None if h.status is None else _ENDS.get(h.status.state)
        if state is not None:
            error = _error(h.status.error) if h.status and h.status.error else None
            ends[h.plan.spec.identity] = (state, h.plan.output, error)
    return ends


def _error(recorded: str) -> BaseException:
    """The status record's ``Type: message`` as an exception of that type's name, so that a
    results row says ``ValueError: ...`` as the run's own table did."""
    name, sep, message = recorded.partition(": ")
    if not sep or not name.isidentifier():
        return RuntimeError(recorded)
    kind: type[Exception] = type(name, (Exception,), {})
    return kind(message)
