"""Failures you can act on: the user's own frames (file:line and the source line), where
the log and the full traceback are, for thread steps, jobs and modules that fail to import;
and the CLI's step lines, prefixed with the step's name, with no log file of Hydra's."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from confpipe import Resources, StepSpec, run
from confpipe.config.functions import Functions
from confpipe.engine.frames import exception_line, frames, user_frames
from confpipe.engine.report import LineReporter
from confpipe.engine.status import error_path
from confpipe.errors import ConfigError, RunFailed
from tests import test_cli


def divide(output_path: str, by: float) -> float:
    return ratio(1.0, by)


def ratio(a: float, b: float) -> float:
    return a / b  # the failing line


FAILING_LINE = Path(__file__).read_text().splitlines().index("    return a / b  # the failing line")

CHAINED = """\
Traceback (most recent call last):
  File "/home/me/proj/load.py", line 4, in read
    return open(path).read()
           ^^^^^^^^^^
FileNotFoundError: [Errno 2] No such file or directory: 'x'

The above exception was the direct cause of the following exception:

Traceback (most recent call last):
  File "/usr/lib/python3.11/threading.py", line 975, in run
    self._target(*self._args, **self._kwargs)
  File "/venv/lib/python3.11/site-packages/confpipe/engine/lock.py", line 281, in locked
    value = fn(output_path=output_path, **config)
  File "/home/me/proj/steps.py", line 9, in train
    data = load(path)
  File "/home/me/proj/load.py", line 7, in load
    raise ValueError(f"cannot load {path}")
  File "/usr/lib/python3.11/json/__init__.py", line 346, in loads
    return _default_decoder.decode(s)
ValueError: cannot load x
with a second line
"""


def test_frames_of_the_last_exception_of_a_chain_and_only_the_users() -> None:
    assert [f.function for f in frames(CHAINED)] == ["run", "locked", "train", "load", "loads"]
    mine = user_frames(CHAINED)
    assert [(f.path, f.line, f.function, f.source) for f in mine] == [
        ("/home/me/proj/steps.py", 9, "train", "data = load(path)"),
        ("/home/me/proj/load.py", 7, "load", 'raise ValueError(f"cannot load {path}")'),
    ]
    assert [f.function for f in user_frames(CHAINED, 1)] == ["load"]
    # a clone of confpipe holds the user's experiments too: only its package is confpipe's
    clone = CHAINED.replace("/home/me/proj/", "/home/me/confpipe/experiments/").replace(
        "/venv/lib/python3.11/site-packages/confpipe/", "/home/me/confpipe/src/confpipe/"
    )
    assert [f.path for f in user_frames(clone)] == [
        "/home/me/confpipe/experiments/steps.py", "/home/me/confpipe/experiments/load.py",
    ]  # fmt: skip
    assert exception_line(CHAINED) == "ValueError: cannot load x"
    assert user_frames("no traceback at all") == []


def test_a_failing_thread_step_shows_its_file_line_and_source(tmp_path: Path) -> None:
    lines: list[str] = []
    step = StepSpec("divide", divide, {"by": 0.0})
    with pytest.raises(RunFailed):
        run(step, prefix=str(tmp_path), reporter=LineReporter(lines.append))
    output = step.output_under(str(tmp_path))
    at = lines.index("  failed: divide: ZeroDivisionError: float division by zero")
    here = os.path.relpath(__file__) if __file__.startswith(os.getcwd()) else __file__
    assert lines[at + 1 : at + 7] == [
        f"    File {here}:{FAILING_LINE - 3} in divide",
        "      return ratio(1.0, by)",
        f"    File {here}:{FAILING_LINE + 1} in ratio",
        "      return a / b  # the failing line",
        f"    log: {output}/.confpipe/log.txt",
        f"    error: {output}/.confpipe/error.txt",
    ]
    assert not any("status.json" in line for line in lines)
    error = Path(error_path(output)).read_text()  # plain text, not a JSON string
    assert error.startswith("Traceback (most recent call last):\n")
    assert f"line {FAILING_LINE + 1}, in ratio\n    return a / b  # the failing line\n" in error
    assert error.rstrip().endswith("ZeroDivisionError: float division by zero")
    log = Path(output, ".confpipe", "log.txt").read_text()  # it ends as a job's log does
    assert log.startswith("Traceback (most recent call last):\n")
    assert log.rstrip().endswith("ZeroDivisionError: float division by zero")
    assert not any("Traceback" in line for line in lines)  # the summary shows the frames


@pytest.mark.slow
def test_a_failing_local_job_shows_its_file_line_and_source(tmp_path: Path) -> None:
    lines: list[str] = []
    step = StepSpec("divide", divide, {"by": 0.0}, resources=Resources(cpu=1))
    with pytest.raises(RunFailed):
        run(step, prefix=str(tmp_path), reporter=LineReporter(lines.append))
    output = step.output_under(str(tmp_path))
    at = lines.index("  failed: divide: ZeroDivisionError: float division by zero")
    assert lines[at + 3].endswith(f"test_failures.py:{FAILING_LINE + 1} in ratio")
    assert lines[at + 4] == "      return a / b  # the failing line"
    assert lines[at + 5 :] == [
        f"    log: {output}/.confpipe/log.txt",
        f"    error: {output}/.confpipe/error.txt",
    ]
    error = Path(error_path(output)).read_text()
    assert error.startswith("Traceback (most recent call last):\n")  # the job's own, first
    assert "confpipe/backends/worker.py" in error.splitlines()[1]
    # the job's log, traceback included, is the step's log
    assert (
        "ZeroDivisionError: float division by zero" in Path(output, ".confpipe/log.txt").read_text()
    )


def test_an_import_time_error_names_the_file_and_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    package = tmp_path / "brokenpkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "steps.py").write_text("import os\n\ny = x + 1\n\n\ndef f(output_path):\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as caught:
        Functions().resolve("train", "brokenpkg.steps.f")
    assert str(caught.value) == (
        "steps.train.fn: importing 'brokenpkg.steps' failed: NameError: name 'x' is not "
        "defined (brokenpkg/steps.py:3: y = x + 1); fix the module"
    )
    sys.modules.pop("brokenpkg", None)


STEPFILE = """\
import logging

log = logging.getLogger("stepfile")


def talk(output_path: str, n: int) -> int:
    for i in range(n):
        print(f"read {i} files")
    log.info("tokenized %d shards", n)
    return n


def broken(output_path: str, up: str) -> None:
    total = 0
    total += 1 / 0
"""

EXPERIMENT = """\
# @package _global_
steps:
  talk:
    fn: stepfile.talk
    config: {n: 3}
  broken:
    fn: stepfile.broken
    config: {up: "${step:talk}"}
  job:
    fn: stepfile.talk
    config: {n: 1}
    resources: {cpu: 1}
"""


def cli(work: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return test_cli.cli("--config-dir", "confs", *args, cwd=work)


@pytest.fixture
def work(tmp_path: Path) -> Path:
    (tmp_path / "stepfile.py").write_text(STEPFILE)
    (tmp_path / "confs" / "experiment").mkdir(parents=True)
    (tmp_path / "confs" / "experiment" / "mine.yaml").write_text(EXPERIMENT)
    return tmp_path


@pytest.mark.slow
def test_the_cli_prefixes_step_lines_and_shows_a_failure_to_act_on(work: Path) -> None:
    out = cli(work, "+experiment=mine", "hydra/job_logging=default")
    assert out.returncode == 1, out.stderr
    err = out.stderr.splitlines()
    assert "talk | read 0 files" in err and "talk | read 2 files" in err
    assert any(
        line.startswith("talk | ") and "INFO stepfile: tokenized 3 shards" in line for line in err
    )
    at = err.index("  failed: broken: ZeroDivisionError: division by zero")
    assert err[at + 1 : at + 3] == ["    File stepfile.py:15 in broken", "      total += 1 / 0"]
    assert err[at + 3].startswith(f"    log: {work}/outputs/broken-")
    assert err[at + 3].endswith("/.confpipe/log.txt")
    assert err[at + 4].endswith("/.confpipe/error.txt")
    talk = next(work.glob("outputs/talk-*"))
    assert (talk / ".confpipe" / "log.txt").read_text().splitlines()[:3] == [
        "read 0 files", "read 1 files", "read 2 files",
    ]  # fmt: skip
    # Hydra's job logging, asked for, writes no log file of its own
    assert sorted(p.name for p in work.iterdir()) == ["confs", "outputs", "stepfile.py"]


@pytest.mark.slow
def test_hydra_verbose_shows_confpipes_debug_lines(work: Path) -> None:
    quiet = cli(work, "+experiment=mine", "run_only=[job]")
    assert quiet.returncode == 0, quiet.stderr
    assert "job | read 0 files" in quiet.stderr.splitlines()  # a job's lines are echoed too
    assert "submitted job" not in quiet.stderr
    verbose = cli(
        work, "+experiment=mine", "run_only=[job]", "steps.job.config.n=2", "hydra.verbose=true"
    )
    assert verbose.returncode == 0, verbose.stderr
    assert "confpipe: step 'job': submitted job " in verbose.stderr  # a debug line


@pytest.mark.slow
def test_an_import_time_error_exits_2_naming_file_and_line(work: Path) -> None:
    (work / "stepfile.py").write_text("y = undefined_name\n" + STEPFILE)
    out = cli(work, "+experiment=mine")
    assert out.returncode == 2
    assert (
        "steps.broken.fn: importing 'stepfile' failed: NameError: name 'undefined_name' is not "
        "defined (stepfile.py:1: y = undefined_name); fix the module" in out.stderr
    ) or "steps.talk.fn: importing 'stepfile' failed" in out.stderr
    assert "(stepfile.py:1: y = undefined_name)" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1
    assert not (work / "outputs").exists()
