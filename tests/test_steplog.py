"""Every step has a log: what a thread step or a job prints and logs lands in its own
``.confpipe/log.txt``, each line is echoed with the step's name, and nothing else changes."""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from pathlib import Path

import pytest

from confpipe import Resources, RunFailed, StepSpec, run
from confpipe.engine import steplog
from confpipe.engine.report import LineReporter
from confpipe.engine.status import log_path
from confpipe.storage import store_for
from tests import stepfns
from tests.waits import eventually

log = logging.getLogger(__name__)


def chatty(output_path: str, name: str, lines: int = 200, pause: float = 0.0005) -> str:
    """Print, write to stderr and log ``lines`` times each, marking every line with ``name``."""
    for i in range(lines):
        print(f"{name} out {i}")
        sys.stderr.write(f"{name} err {i}\n")
        log.info("%s info %d", name, i)
        log.debug("%s debug %d", name, i)
        if i % 20 == 0:
            time.sleep(pause)  # let the other steps' threads interleave
    return name


def levels(output_path: str) -> None:
    log.debug("a debug record")
    log.info("an info record")
    log.warning("a warning record")


def flood(output_path: str, lines: int) -> int:
    for i in range(lines):
        print(f"flood {i}")
    return lines


def silent_or_loud(output_path: str, flag: str) -> None:
    if os.path.exists(flag):
        print("the first attempt spoke")
        raise RuntimeError("first attempt fails")


def read_log(output: str) -> list[str]:
    return Path(log_path(output)).read_text().splitlines()


def test_concurrent_thread_steps_keep_their_logs_apart(tmp_path: Path) -> None:
    names = [f"s{i}" for i in range(8)]
    steps = [StepSpec(name, chatty, {"name": name}) for name in names]
    echoed: list[str] = []
    summary = run(steps, prefix=str(tmp_path), reporter=LineReporter(echoed.append))
    for name in names:
        lines = read_log(summary.outputs[name])
        assert all(f" {name} " in f" {line} " for line in lines), name
        assert sum(line == f"{name} out {i}" for i in range(200) for line in [lines[3 * i]]) == 200
        assert sum(f"{name} err " in line for line in lines) == 200
        infos = [line for line in lines if f"{name} info" in line]
        assert len(infos) == 200
        assert infos[0].endswith(f"INFO tests.test_steplog: {name} info 0")
        assert not any("debug" in line for line in lines)  # INFO by default
    # each echoed line carries the name of the step that printed it, and only its own
    step_lines = [line for line in echoed if " | " in line]
    assert len(step_lines) >= 8 * steplog.ECHO_BURST  # past its burst, a step's echo is paced
    for line in step_lines:
        prefix, _, text = line.partition(" | ")
        assert f" {prefix} " in f" {text} " or text.startswith("... "), line


def test_logger_records_reach_the_log_from_log_level_up(tmp_path: Path) -> None:
    def logged(level: str) -> list[str]:
        out = run(
            StepSpec("levels", levels, {}, version=level), prefix=str(tmp_path), log_level=level
        ).outputs["levels"]
        return [line.split(" ", 2)[2] for line in read_log(out)]

    assert logged("INFO") == [
        "INFO tests.test_steplog: an info record",
        "WARNING tests.test_steplog: a warning record",
    ]
    assert logged("WARNING") == ["WARNING tests.test_steplog: a warning record"]
    assert logged("DEBUG")[0] == "DEBUG tests.test_steplog: a debug record"


def test_a_run_puts_streams_handlers_and_levels_back(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = logging.getLogger()
    before = (sys.stdout, sys.stderr, root.level, list(root.handlers))
    run(StepSpec("chatty", chatty, {"name": "x", "lines": 2}), prefix=str(tmp_path))
    assert (sys.stdout, sys.stderr, root.level, list(root.handlers)) == before
    print("after the run")
    out = capsys.readouterr().out
    assert out == "after the run\n"  # the step's lines went to its log, not to stdout


def test_output_outside_steps_goes_where_it_went(tmp_path: Path) -> None:
    """While a run routes output, a thread that runs no step prints as before, and warnings
    it logs with no handler configured still reach stderr (as logging's last resort)."""
    seen: list[str] = []

    class Stream:
        def write(self, text: str) -> int:
            seen.append(text)
            return len(text)

        def flush(self) -> None:
            pass

    saved = sys.stdout
    sys.stdout = Stream()  # type: ignore[assignment]
    try:
        with steplog.routing(logging.INFO):
            print("not a step's")
            other = threading.Thread(target=print, args=("another thread",))
            other.start()
            other.join()
    finally:
        sys.stdout = saved
    assert "".join(seen) == "not a step's\nanother thread\n"


def test_a_flood_of_lines_is_rate_limited_on_the_terminal_not_in_the_log(tmp_path: Path) -> None:
    echoed: list[str] = []
    start = time.perf_counter()
    out = run(
        StepSpec("flood", flood, {"lines": 10_000}), prefix=str(tmp_path),
        reporter=LineReporter(echoed.append),
    ).outputs["flood"]  # fmt: skip
    took = time.perf_counter() - start
    assert read_log(out) == [f"flood {i}" for i in range(10_000)]
    shown = [line for line in echoed if line.startswith("flood | ")]
    assert steplog.ECHO_BURST <= len(shown) < 2_000
    assert shown[: steplog.ECHO_BURST] == [f"flood | flood {i}" for i in range(steplog.ECHO_BURST)]
    assert "more line(s) not shown here; all are in" in shown[-1]
    assert took < 3.0


def test_a_fresh_attempt_starts_a_fresh_log(tmp_path: Path) -> None:
    flag = tmp_path / "flag"
    flag.touch()
    step = StepSpec("step", silent_or_loud, {"flag": str(flag)})
    with pytest.raises(Exception, match="failed"):
        run(step, prefix=str(tmp_path / "out"))
    out = step.output_under(str(tmp_path / "out"))
    assert read_log(out)[:2] == ["the first attempt spoke", "Traceback (most recent call last):"]
    flag.unlink()
    run(step, prefix=str(tmp_path / "out"))
    assert not os.path.exists(log_path(out))  # silent: no log, and not the last attempt's


def test_a_log_that_cant_be_written_is_said_but_does_not_fail_the_step(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    step = StepSpec("chatty", chatty, {"name": "x", "lines": 1})
    out = step.output_under(str(tmp_path))
    os.makedirs(log_path(out))  # a folder where the log file goes
    assert run(step, prefix=str(tmp_path)).ran == [step.identity]
    assert f"could not write {log_path(out)}" in caplog.text


def test_a_cached_step_writes_no_log(tmp_path: Path) -> None:
    step = StepSpec("chatty", chatty, {"name": "x", "lines": 1})
    out = run(step, prefix=str(tmp_path)).outputs["chatty"]
    os.unlink(log_path(out))
    run(step, prefix=str(tmp_path))
    assert not os.path.exists(log_path(out))


@pytest.mark.slow
def test_a_jobs_prints_and_logging_end_in_the_steps_log(tmp_path: Path) -> None:
    echoed: list[str] = []
    step = StepSpec("job", chatty, {"name": "j", "lines": 3}, resources=Resources(cpu=1))
    out = run(step, prefix=str(tmp_path), reporter=LineReporter(echoed.append)).outputs["job"]
    lines = read_log(out)
    assert lines[:2] == ["j out 0", "j err 0"]
    assert lines[2].endswith("INFO tests.test_steplog: j info 0")
    assert len(lines) == 9  # no DEBUG at the default level
    assert "job | j out 2" in echoed
    assert any(e.endswith("INFO tests.test_steplog: j info 2") for e in echoed)

    debug = run(
        StepSpec("job", chatty, {"name": "j", "lines": 1}, resources=Resources(cpu=1)),
        prefix=str(tmp_path), log_level="DEBUG",
    ).outputs["job"]  # fmt: skip
    assert read_log(debug)[-1].endswith("DEBUG tests.test_steplog: j debug 0")


def waits_for(output_path: str, flag: str) -> None:
    print("first line, before the wait")
    deadline = time.monotonic() + 30
    while not os.path.exists(flag) and time.monotonic() < deadline:
        time.sleep(0.05)
    print("last line")


@pytest.mark.slow
def test_a_gs_log_is_uploaded_while_the_step_runs_and_when_it_ends(
    gs_prefix: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(steplog, "FLUSH_EVERY", 0.3)
    flag = tmp_path / "flag"
    step = StepSpec("wait", waits_for, {"flag": str(flag)})
    out = step.output_under(gs_prefix)
    runner = threading.Thread(target=run, args=(step,), kwargs={"prefix": gs_prefix})
    runner.start()
    store = store_for(out)

    def uploaded() -> bytes | None:
        blob = store.read(log_path(out))
        return None if blob is None else blob.data

    try:
        eventually(lambda: uploaded() == b"first line, before the wait\n", "the first upload")
    finally:
        flag.touch()
        runner.join(60)
    assert uploaded() == b"first line, before the wait\nlast line\n"


@pytest.mark.slow
def test_a_batch_jobs_log_on_gs_becomes_the_steps_log(gs_prefix: str) -> None:
    from confpipe.backends.gcp.batch import BatchBackend
    from confpipe.backends.gcp.settings import GcpConf
    from confpipe.testing.batch import FakeBatch

    echoed: list[str] = []
    step = StepSpec("job", chatty, {"name": "b", "lines": 2}, resources=Resources(cpu=2))
    with FakeBatch() as fake:  # made after gs_prefix: its "image" environment finds the fake
        conf = GcpConf(project="p", image="img", batch_endpoint=fake.endpoint, poll_interval=0.05)
        backend = BatchBackend(conf, None)
        try:
            out = run(
                step, prefix=gs_prefix, backend=backend, reporter=LineReporter(echoed.append)
            ).outputs["job"]
        finally:
            backend.close()
    blob = store_for(out).read(log_path(out))
    assert blob is not None
    lines = blob.data.decode().splitlines()
    assert "b out 1" in lines and any(
        x.endswith("INFO tests.test_steplog: b info 1") for x in lines
    )
    assert "job | b out 1" in echoed


def test_a_step_that_calls_sys_exit_ends_its_log_with_the_reason(tmp_path: Path) -> None:
    """sys.exit() in a thread step fails it (the runner records it); its log says why, as an
    exception's traceback would."""
    path = str(tmp_path / "log.txt")

    def leaves() -> None:
        print("giving up")
        sys.exit(3)

    with pytest.raises(SystemExit):
        steplog.captured(leaves, path=path)()
    text = Path(path).read_text()
    assert text.startswith("giving up\n") and "SystemExit: 3" in text


def silent_unless(output_path: str, flag: str, fail: str) -> None:
    """Prints and fails while ``fail`` exists; otherwise waits, silent, for ``flag``."""
    if os.path.exists(fail):
        print("the first attempt's line")
        raise RuntimeError("first attempt")
    deadline = time.monotonic() + 30
    while not os.path.exists(flag) and time.monotonic() < deadline:
        time.sleep(0.02)


@pytest.mark.slow
def test_a_gs_retry_removes_the_earlier_log_as_it_begins_not_as_it_ends(
    gs_prefix: str, tmp_path: Path
) -> None:
    flag, fail = tmp_path / "flag", tmp_path / "fail"
    fail.touch()
    step = StepSpec("step", silent_unless, {"flag": str(flag), "fail": str(fail)})
    out = step.output_under(gs_prefix)
    store = store_for(out)
    with pytest.raises(RunFailed):
        run(step, prefix=gs_prefix)
    blob = store.read(log_path(out))
    assert blob is not None and b"the first attempt's line" in blob.data
    fail.unlink()
    runner = threading.Thread(target=run, args=(step,), kwargs={"prefix": gs_prefix})
    runner.start()
    try:
        eventually(lambda: store.read(log_path(out)) is None, "the earlier log removed")
        assert not flag.exists() and runner.is_alive()  # while the step still runs
    finally:
        flag.touch()
        runner.join(60)
    assert store.read(log_path(out)) is None  # silent: no log, and not the earlier one


@pytest.mark.slow
def test_a_first_attempt_on_gs_sends_no_request_for_an_earlier_log(gs_prefix: str) -> None:
    store = store_for(gs_prefix)
    requests: list[tuple[str, str]] = []
    real = store.fs._call

    async def counted(method: str, path: str, *args: object, **kwargs: object) -> object:
        requests.append((method, path))
        return await real(method, path, *args, **kwargs)

    store.fs._call = counted
    try:
        run(StepSpec("silent", stepfns.noop, {"n": 1}), prefix=gs_prefix)
    finally:
        del store.fs._call
    assert requests and not [path for _, path in requests if "log.txt" in path]
