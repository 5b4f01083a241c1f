"""Progress reporters: plain lines off a terminal, a live table on one, the final summary."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest

from confpipe.backends.resources import Resources
from confpipe.cli.progress import JobLogs, LiveReporter, PlainReporter, reporter_for
from confpipe.engine.outcome import Outcome
from confpipe.engine.plan import THREAD, StepPlan
from confpipe.engine.spec import StepSpec
from confpipe.engine.status import jobs_dir
from confpipe.errors import StepFailed
from confpipe.storage import store_for
from tests import stepfns


def plans() -> list[StepPlan]:
    a = StepSpec("a", stepfns.add, {"a": 1, "b": 2})
    b = StepSpec("b", stepfns.add, {"a": 1, "b": 3}, resources=Resources(cpu=2))
    c = StepSpec("c", stepfns.add, {"a": 1, "b": 4})
    return [
        StepPlan(a, "a", "/p/a", Outcome.CACHED, "succeeded earlier", THREAD, None),
        StepPlan(b, "b", "/p/b", Outcome.WILL_RUN, "no previous output", "local job", b.resources),
        StepPlan(c, "c", "/p/c", Outcome.WILL_RUN, "no previous output", THREAD, None),
    ]


def job_failure() -> StepFailed:
    err = StepFailed(
        "b",
        "ValueError: boom\n  job folder: /p/b/jobs/1\n"
        "  last lines of log.txt:\n    loading\n    boom",
    )
    err.log_path = "/p/b/jobs/1/log.txt"
    return err


def test_plain_lines_and_summary_with_failure_log() -> None:
    lines: list[str] = []
    reporter = PlainReporter(lines.append)
    a, b, c = plans()
    reporter.planned([a, b, c], dry_run=False)
    reporter.started(b)
    reporter.finished(b, Outcome.FAILED, 1.5, job_failure())
    reporter.finished(c, Outcome.DEP_FAILED, 0.0, None)
    reporter.close()
    text = "\n".join(lines)
    assert lines[0] == "plan: 3 steps, 1 cached, 2 to run"
    assert "start b [local job (cpu=2)]" in text
    assert "failed b (1.5s): StepFailed: step 'b': ValueError: boom" in text
    assert "  |     boom" in text  # the job's log tail follows the failure
    assert "summary: 0 ran, 1 cached, 1 failed, 1 not run" in text
    assert "    log: /p/b/jobs/1/log.txt" in text


def test_live_table_shows_states_and_the_failing_log_tail() -> None:
    stream = io.StringIO()
    reporter = LiveReporter(stream)
    reporter.console.width = 160
    a, b, c = plans()
    reporter.planned([a, b, c], dry_run=False)
    reporter.started(c)
    reporter.finished(b, Outcome.FAILED, 1.5, job_failure())
    reporter.console.print(reporter)
    frame = stream.getvalue()
    for text in (
        "cached",
        "running",
        "failed",
        "local job (cpu=2)",
        "b: last lines of its log",
        "boom",
    ):
        assert text in frame
    reporter.close()
    assert "summary: 0 ran, 1 cached, 1 failed" in stream.getvalue()


def test_reporter_for_picks_plain_lines_off_a_terminal() -> None:
    assert isinstance(reporter_for(io.StringIO()), PlainReporter)


@pytest.mark.parametrize("root", ["local", "memory"])
def test_a_running_jobs_log_is_tailed_into_the_live_table(tmp_path: Path, root: str) -> None:
    out = str(tmp_path / "b") if root == "local" else f"memory://progress-{os.getpid()}/b"
    store = store_for(out)
    store.write(f"{jobs_dir(out)}/20260101-000000.000-0-aaaa/log.txt", b"old attempt\n")
    lines = "".join(f"epoch {i}\n" for i in range(9)).encode()
    store.write(f"{jobs_dir(out)}/20260101-000001.000-1-bbbb/log.txt", lines)
    assert JobLogs(every=0, lines=3).tail(out) == ["epoch 6", "epoch 7", "epoch 8"]
    assert JobLogs(every=0).tail(str(tmp_path / "never-ran")) == []

    stream = io.StringIO()
    reporter = LiveReporter(stream)
    reporter.console.width = 160
    a, b, c = plans()
    b = StepPlan(b.spec, "b", out, b.state, b.reason, b.where, b.resources)
    reporter.planned([a, b, c], dry_run=False)
    reporter.started(b)
    reporter.console.print(reporter)
    reporter.close()
    assert "b: its job's log" in stream.getvalue() and "epoch 8" in stream.getvalue()
