"""Progress reporters: plain lines off a terminal, a live table on one, the final summary."""

from __future__ import annotations

import fcntl
import io
import os
import pty
import re
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest

from confpipe.backends.resources import Resources
from confpipe.cli.progress import LiveReporter, PlainReporter, Points, reporter_for
from confpipe.engine.outcome import Outcome
from confpipe.engine.plan import THREAD, StepPlan, labels_of
from confpipe.engine.spec import StepSpec
from confpipe.errors import StepFailed
from tests import stepfns

ROOT = Path(__file__).resolve().parents[1]


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


def live(
    steps: list[StepPlan], width: int = 80, height: int = 24, points: Points | None = None
) -> tuple[io.StringIO, LiveReporter]:
    """A live reporter drawing on a ``width`` x ``height`` terminal, told the plan."""
    stream = io.StringIO()
    reporter = LiveReporter(stream, points=points)
    reporter.console.width, reporter.console.height = width, height
    reporter.planned(steps, dry_run=False)
    return stream, reporter


def test_live_table_shows_states_and_the_failing_log_tail() -> None:
    stream, reporter = live(plans(), width=160)
    _, b, c = plans()
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
    stream, reporter = live(plans(), width=160)
    c = plans()[2]
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
    stream, reporter = live(plans())
    c = plans()[2]
    reporter.started(c)
    reporter.stopping([c], 5.0)
    assert "stopping… (waiting up to 5 s for 1 running step; Ctrl-C again" in stream.getvalue()
    reporter.console.print(reporter)
    (row,) = [line for line in stream.getvalue().splitlines() if " c " in f"{line} "]
    assert row.startswith("stopping") and "running" not in row
    assert "3 steps: 0 of 2 done, 0 running, 1 stopping, 1 cached" in stream.getvalue()
    reporter.close()


def sweep_plans(points: int) -> tuple[list[StepPlan], Points]:
    """A shared ``data`` step, then ``train`` and ``evaluate`` for each point (lr=i): names
    repeat, each step with its point's label."""
    data = StepSpec("data", stepfns.add, {"a": 0, "b": 0})
    specs, labels = [data], {data.identity: f"shared by {points} points"}
    for i in range(points):
        train = StepSpec("train", stepfns.add, {"a": data, "b": i}, resources=Resources(cpu=2))
        evaluate = StepSpec("evaluate", stepfns.add, {"a": train, "b": i})
        specs += [train, evaluate]
        labels |= {train.identity: f"lr={i}e-4", evaluate.identity: f"lr={i}e-4"}
    label = labels_of(specs)
    found = [
        StepPlan(
            s,
            label[s.identity],
            f"/home/me/project/outputs/{s.identity}",
            Outcome.CACHED if s is data else Outcome.WILL_RUN,
            "succeeded earlier" if s is data else "no previous output",
            "local job" if s.resources else THREAD,
            s.resources,
        )
        for s in specs
    ]
    return found, Points(points, labels)


def test_at_80_by_24_each_step_is_one_line_running_first_with_the_rest_counted() -> None:
    steps, points = sweep_plans(15)  # 31 steps: taller than the screen
    stream, reporter = live(steps, points=points)
    train_0, eval_0, train_1, eval_1 = steps[1:5]
    reporter.finished(train_0, Outcome.FAILED, 2.0, job_failure())
    reporter.finished(eval_0, Outcome.DEP_FAILED, 0.0, None)
    reporter.finished(train_1, Outcome.SUCCEEDED, 3.0, None)
    reporter.started(steps[-2])  # the last point's train, listed last in the plan
    reporter.started(eval_1)
    reporter.console.print(reporter)
    frame = stream.getvalue().splitlines()
    reporter.close()
    assert max(len(line) for line in frame) <= 80
    title, head, *rows, more = frame
    assert title == "15 points, 31 steps: 3 of 30 done, 2 running, 1 failed, 1 dep failed, 1 cached"
    assert head.split() == ["state", "time", "step", "where", "output", "/", "reason"]
    assert len(rows) == 24 - 8
    assert rows[0].split()[:4] == ["running", "0.0s", "train", "lr=14e-4"]
    assert rows[1].split()[:4] == ["running", "0.0s", "evaluate", "lr=1e-4"]
    assert rows[2].split()[:5] == ["failed", "2.0s", "train", "lr=0e-4", "local"]
    assert rows[2].endswith("ValueError: boom")
    assert rows[3].split()[:3] == ["dep", "failed", "evaluate"]
    assert rows[3].endswith("not run: dependency train fai…")  # not "no previous output"
    assert rows[4].split()[:4] == ["will", "run", "train", "lr=2e-4"]  # the waiting, in order
    assert more == "… and 15 more: 13 will run, 1 succeeded, 1 cached"
    assert not any(train_0.spec.hash in line for line in frame)  # the hash: not even once


def test_a_dep_failed_step_says_which_dependency_failed_not_its_planned_reason() -> None:
    lines: list[str] = []
    reporter = PlainReporter(lines.append)
    a, b, c = plans()
    c = StepPlan(
        StepSpec("c", stepfns.add, {"a": b.spec, "b": 4}), "c", "/p/c", Outcome.WILL_RUN,
        "no previous output", THREAD, None,
    )  # fmt: skip
    reporter.planned([a, b, c], dry_run=False)
    reporter.finished(b, Outcome.FAILED, 1.5, job_failure())
    reporter.finished(c, Outcome.DEP_FAILED, 0.0, None)
    assert lines[-1] == "dep failed c (0.0s): not run: dependency b failed"
    assert reporter.tally.rows[c.spec.identity].why == "not run: dependency b failed"


def test_a_sweep_step_is_started_with_its_point_in_plain_lines() -> None:
    steps, points = sweep_plans(2)
    lines: list[str] = []
    reporter = PlainReporter(lines.append, points=points)
    reporter.planned(steps, dry_run=False)
    reporter.started(steps[0])
    reporter.started(steps[3])
    assert lines == [
        "plan: 2 sweep points -> 5 unique steps, 1 cached, 4 to run",
        "start data (shared by 2 points) [thread]",
        f"start {steps[3].label} (lr=1e-4) [local job (cpu=2)]",
    ]


DISP_FNS = """\
import time


def data(output_path):
    time.sleep(0.6)  # drawn running, at least once
    return 1


def train(output_path, data, lr):
    time.sleep(0.2)
    if lr == 3:
        raise ValueError("diverged")
    return {"loss": 1 / lr}


def evaluate(output_path, model):
    return 1
"""

DISP = """\
# @package _global_
steps:
  data: {fn: dispfns.data}
  train: {fn: dispfns.train, config: {data: "${step:data}", lr: 1}}
  evaluate: {fn: dispfns.evaluate, config: {model: "${step:train}"}}
"""

_ESCAPES = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07]*\x07|\x1b[=>]")


def on_a_terminal(args: list[str], cwd: Path, columns: int, lines: int) -> tuple[int, str]:
    """Run ``python -m confpipe ARGS`` on a pseudo-terminal of ``columns`` x ``lines``; its
    exit code and all it drew, without the terminal's escape codes."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", lines, columns, 0, 0))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": str(columns), "LINES": str(lines)}
    env["TERM"] = "xterm-256color"
    proc = subprocess.Popen(
        [sys.executable, "-m", "confpipe", *args], cwd=cwd, env=env,
        stdin=slave, stdout=slave, stderr=slave, close_fds=True,
    )  # fmt: skip
    os.close(slave)
    chunks = []
    try:
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the terminal's other side closed
                break
            if not chunk:
                break
            chunks.append(chunk)
        code = proc.wait(timeout=120)
    finally:
        proc.kill()
        os.close(master)
    # a cursor move or erase starts a line anew (the live table redraws in place)
    moves = "ABCDEFGHJK"
    text = _ESCAPES.sub(
        lambda m: "\n" if m.group().endswith(tuple(moves)) else "",
        b"".join(chunks).decode(errors="replace"),
    )
    return code, text.replace("\r", "\n")


@pytest.mark.slow
def test_a_sweep_taller_than_an_80_by_24_terminal_is_drawn_one_line_a_step(
    tmp_path: Path,
) -> None:
    (tmp_path / "dispfns.py").write_text(DISP_FNS)
    (tmp_path / "confs" / "experiment").mkdir(parents=True)
    (tmp_path / "confs" / "experiment" / "disp.yaml").write_text(DISP)
    lrs = ",".join(str(lr) for lr in range(1, 13))  # 12 points: 25 steps
    args = ["--config-dir", "confs", "+experiment=disp", "-m", f"steps.train.config.lr={lrs}"]
    code, drawn = on_a_terminal(args, tmp_path, 80, 24)
    assert code == 1, drawn  # a point failed
    lines = drawn.splitlines()
    drawn_live = lines[: lines.index("summary: 23 ran, 0 cached, 1 failed, 1 not run")]
    assert max(len(line) for line in drawn_live) <= 80, max(drawn_live, key=len)
    last = " ".join(drawn.split()[-9:])  # the terminal may fold it: it's a message
    assert last == "confpipe: 1 sweep point failed: lr=3: train: ValueError: diverged"
    assert "Error executing job" not in drawn
    titles = [line for line in lines if line.startswith("12 points, 25 steps: ")]
    assert titles[-1] == (
        "12 points, 25 steps: 25 of 25 done, 0 running, 1 failed, 1 dep failed, 0 cached"
    )
    assert any(line.startswith("… and ") and " more: " in line for line in lines)
    frame = lines[len(lines) - lines[::-1].index(titles[-1]) :]  # the last frame drawn
    failed = next(line for line in frame if line.startswith("failed"))
    assert failed.split()[2:4] == ["train", "lr=3"] and failed.endswith("ValueError: diverged")
    blocked = next(line for line in frame if line.startswith("dep failed"))
    assert blocked.split()[2:4] == ["evaluate", "lr=3"]
    assert blocked.endswith("not run: dependency train failed")  # not "no previous output"
    assert any(" data  shared by 12 points " in line for line in drawn_live)
    assert not any(" running " in f" {line} " for line in frame[1:])  # it's all over
