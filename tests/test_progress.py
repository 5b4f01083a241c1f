"""Progress reporters: plain lines off a terminal, a live table on one, the final summary."""

from __future__ import annotations

import io
import time

from confpipe.backends.resources import Resources
from confpipe.cli.progress import LiveReporter, PlainReporter, reporter_for
from confpipe.engine.outcome import Outcome
from confpipe.engine.plan import THREAD, StepPlan
from confpipe.engine.spec import StepSpec
from confpipe.errors import StepFailed
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


JOB_TRACE = """\
Traceback (most recent call last):
  File "/site/lib/python3.11/site-packages/confpipe/backends/worker.py", line 61, in main
    value = fn(**kwargs)
            ^^^^^^^^^^^^
  File "/home/me/project/steps.py", line 12, in train
    loss = fit(data)
  File "/home/me/project/model.py", line 3, in fit
    raise ValueError("boom")
ValueError: boom
"""


def job_failure() -> StepFailed:
    err = StepFailed(
        "b",
        "ValueError: boom\n  job folder: /p/b/jobs/1\n"
        "  last lines of log.txt:\n    loading\n    boom",
        remote_traceback=JOB_TRACE,
    )
    err.log_path = "/p/b/jobs/1/log.txt"
    return err


def test_plain_lines_and_summary_with_failure_log() -> None:
    lines: list[str] = []
    reporter = PlainReporter(lines.append)
    a, b, c = plans()
    reporter.planned([a, b, c], dry_run=False)
    reporter.started(b)
    reporter.step_output(b, "loading")
    reporter.finished(b, Outcome.FAILED, 1.5, job_failure())
    reporter.finished(c, Outcome.DEP_FAILED, 0.0, None)
    reporter.close()
    text = "\n".join(lines)
    assert lines[0] == "plan: 3 steps, 1 cached, 2 to run"
    assert "start b [local job (cpu=2)]" in text
    assert "b | loading" in lines
    assert "failed b (1.5s): ValueError: boom" in text
    assert "summary: 0 ran, 1 cached, 1 failed, 1 not run" in text
    # the failure as the job's traceback tells it: the user's frames, not confpipe's
    summary = lines[lines.index("summary: 0 ran, 1 cached, 1 failed, 1 not run") + 1 :]
    assert summary == [
        "  failed: b: ValueError: boom",
        "    File /home/me/project/steps.py:12 in train",
        "      loss = fit(data)",
        "    File /home/me/project/model.py:3 in fit",
        '      raise ValueError("boom")',
        "    log: /p/b/.confpipe/log.txt",
        "    error: /p/b/.confpipe/error.txt",
    ]


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
    for text in ("cached", "running", "failed", "local job (cpu=2)", "ValueError: boom"):
        assert text in frame
    reporter.close()
    assert "summary: 0 ran, 1 cached, 1 failed" in stream.getvalue()
    assert "File /home/me/project/model.py:3 in fit" in stream.getvalue()


def test_reporter_for_picks_plain_lines_off_a_terminal() -> None:
    assert isinstance(reporter_for(io.StringIO()), PlainReporter)


def test_live_display_prints_steps_lines_above_the_table_in_batches() -> None:
    stream = io.StringIO()
    reporter = LiveReporter(stream)
    reporter.console.width = 160
    a, b, c = plans()
    reporter.planned([a, b, c], dry_run=False)
    reporter.started(c)
    start = time.perf_counter()
    for i in range(10_000):
        reporter.step_output(c, f"line {i}")
    took = time.perf_counter() - start
    reporter.close()
    text = stream.getvalue()
    assert "c | line 0" in text and "c | line 9999" in text
    assert text.index("c | line 9999") < text.index("summary:")
    assert took < 1.0, f"10,000 lines took {took:.2f}s to hand over"


def test_an_interrupted_run_says_it_is_stopping_at_once_and_what_it_waits_for() -> None:
    lines: list[str] = []
    reporter = PlainReporter(lines.append)
    a, b, c = plans()
    reporter.planned([a, b, c], dry_run=False)
    reporter.started(b)
    reporter.started(c)
    reporter.stopping([b, c], 5.0)
    assert lines[-1] == (
        "stopping… (waiting up to 5 s for 2 running steps; Ctrl-C again to leave now)"
    )
    reporter.finished(b, Outcome.CANCELLED, 5.0, None)
    reporter.finished(c, Outcome.SUCCEEDED, 1.0, None)
    reporter.close()
    assert "cancelled b (5.0s): stopped: interrupted (Ctrl-C)" in lines
    assert "summary: 1 ran, 1 cached, 0 failed, 1 cancelled (Ctrl-C)" in lines


def test_the_live_table_shows_the_steps_it_waits_for_as_stopping_not_running() -> None:
    stream = io.StringIO()
    reporter = LiveReporter(stream)
    reporter.console.width = 80
    a, b, c = plans()
    reporter.planned([a, b, c], dry_run=False)
    reporter.started(c)
    reporter.stopping([c], 5.0)
    assert "stopping… (waiting up to 5 s for 1 running step; Ctrl-C again" in stream.getvalue()
    reporter.console.print(reporter)
    (row,) = [line for line in stream.getvalue().splitlines() if " c " in f"{line} "]
    assert row.startswith("stopping") and "running" not in row
    reporter.close()
