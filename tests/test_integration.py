"""Real launches in real processes: exactly-once, kill -9 takeover, fencing, Ctrl-C.

The core ones run on a local prefix and on gs:// (fake-gcs-server, tests/conftest.py): the
launched processes inherit STORAGE_EMULATOR_HOST. WORKDIR (call log, flags) stays local.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from confpipe import LockOptions, StepState, load_result, run
from confpipe.engine.outcome import Outcome
from confpipe.engine.owner import read_holder
from confpipe.engine.status import read_status, status_path
from confpipe.storage import store_for
from tests.pipelines import dag30, slow

ROOT = Path(__file__).resolve().parents[1]


def launch(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.pipelines", *args],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def finish(proc: subprocess.Popen[str], timeout: float = 60) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def wait_for(path: Path, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.02)


@pytest.fixture(params=["local", "gs"])
def prefix(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Where the launches put their outputs: a local folder, or a fresh gs:// prefix."""
    if request.param == "local":
        return str(tmp_path / "out")
    return str(request.getfixturevalue("gs_prefix"))


@pytest.mark.slow
def test_four_launches_run_every_step_exactly_once(tmp_path: Path, prefix: str) -> None:
    work = str(tmp_path)
    # a lease long enough that even a starved CI machine never sees a takeover here
    procs = [launch("dag30", prefix, work, "--sleep", "0.05", "--lease", "30") for _ in range(4)]
    results = [finish(p) for p in procs]
    for code, _, err in results:
        assert code == 0, err
    names = [line.split()[0] for line in (tmp_path / "calls.log").read_text().splitlines()]
    assert Counter(names) == {f"s{i:02d}": 1 for i in range(30)}
    code, out, err = finish(launch("dag30", prefix, work, "--sleep", "0.05", "--lease", "30"))
    assert code == 0, err
    assert json.loads(out.splitlines()[-1])["ran"] == 0
    assert len((tmp_path / "calls.log").read_text().splitlines()) == 30


def slow_output(tmp_path: Path, prefix: str) -> str:
    return slow(str(tmp_path), job=False)[0].output_under(prefix)


@pytest.mark.slow
def test_kill_9_then_a_new_launch_takes_over(tmp_path: Path, prefix: str) -> None:
    work = str(tmp_path)
    (tmp_path / "seconds").write_text("60")
    first = launch("slow", prefix, work, "--lease", "1.5")
    wait_for(tmp_path / "started")
    first.kill()  # SIGKILL: no cleanup at all; its lease stays behind
    finish(first)
    output = slow_output(tmp_path, prefix)
    status = read_status(store_for(output), output)
    assert status is not None and status.state is StepState.RUNNING
    time.sleep(1.6)  # the lease goes stale: a dry run says the next launch takes it over
    options = LockOptions(heartbeat_interval=0.3, lease_timeout=1.5)
    (plan,) = run(slow(work, job=False), prefix=prefix, dry_run=True, lock_options=options).plan
    assert plan.state is Outcome.WILL_RUN and plan.reason.endswith(": will take it over")
    (tmp_path / "seconds").write_text("0")
    code, out, err = finish(launch("slow", prefix, work, "--lease", "1.5"))
    assert code == 0, err
    # stale by now; on gs:// (whose clock is a lower bound) maybe not yet, but it is gone
    assert "took over the stale lease" in err or "is gone: taking it over" in err
    second_pid = json.loads(out.splitlines()[-1])["pid"]
    assert load_result(output) == second_pid


@pytest.mark.slow
def test_a_launch_whose_lease_was_taken_never_writes_success(tmp_path: Path, prefix: str) -> None:
    work = str(tmp_path)
    (tmp_path / "seconds").write_text("3")
    frozen = launch("slow", prefix, work, "--lease", "1.0")
    wait_for(tmp_path / "started")
    os.kill(frozen.pid, signal.SIGSTOP)  # alive but silent: its heartbeat stops
    try:
        (tmp_path / "seconds").write_text("0")
        code, out, err = finish(launch("slow", prefix, work, "--lease", "1.0"))
        assert code == 0, err
        winner = json.loads(out.splitlines()[-1])["pid"]
    finally:
        os.kill(frozen.pid, signal.SIGCONT)
    code, _, err = finish(frozen)
    assert code == 0, err  # the step is done, by the other launch: not a failure
    assert "lease lost (" in err or "lease given up" in err
    assert "step slow: done by another launch" in err
    output = slow_output(tmp_path, prefix)
    status = read_status(store_for(output), output)
    assert status is not None and status.state is StepState.SUCCESS
    assert f":{winner}:" in status.worker
    assert load_result(output) == winner


def interrupt(tmp_path: Path, *extra: str, prefix: str | None = None) -> tuple[int, str, float]:
    prefix, work = prefix or str(tmp_path / "out"), str(tmp_path)
    (tmp_path / "seconds").write_text("60")
    proc = launch("slow", prefix, work, *extra)
    wait_for(tmp_path / "started")
    time.sleep(0.3)
    sent = time.monotonic()
    proc.send_signal(signal.SIGINT)
    code, _, err = finish(proc, timeout=30)
    return code, err, time.monotonic() - sent


@pytest.mark.slow
def test_ctrl_c_cancels_a_local_job_and_records_the_step_failed(tmp_path: Path) -> None:
    code, err, took = interrupt(tmp_path, "--job")
    assert code == 130, err
    assert took < 15
    job_pid = int((tmp_path / "started").read_text())
    assert not pid_alive(job_pid)
    output = slow(str(tmp_path), job=True)[0].output_under(str(tmp_path / "out"))
    assert_interrupted(output)
    # an interruption is no failure to fix: force_run_failed=False runs the step again
    steps = slow(str(tmp_path), job=True)
    (plan,) = run(steps, prefix=str(tmp_path / "out"), dry_run=True, force_run_failed=False).plan
    assert plan.state is Outcome.WILL_RUN and plan.reason.endswith(
        "was interrupted (Ctrl-C or SIGTERM)"
    )
    (tmp_path / "seconds").write_text("0")
    code, out, err = finish(
        launch("slow", str(tmp_path / "out"), str(tmp_path), "--job", "--strict")
    )
    assert code == 0, err
    assert json.loads(out.splitlines()[-1])["ran"] == 1


@pytest.mark.slow
def test_a_local_job_dies_with_its_driver_and_a_new_launch_runs_the_step_alone(
    tmp_path: Path,
) -> None:
    prefix, work = str(tmp_path / "out"), str(tmp_path)
    (tmp_path / "seconds").write_text("60")
    first = launch("slow", prefix, work, "--job", "--lease", "1.5")
    wait_for(tmp_path / "started")
    job_pid = int((tmp_path / "started").read_text())
    first.kill()  # SIGKILL: the driver can't cancel its job; the job must notice
    finish(first)
    assert not pid_alive(job_pid)  # within 5 s: it would have slept 60
    (tmp_path / "seconds").write_text("0")
    code, _, err = finish(launch("slow", prefix, work, "--job", "--lease", "1.5"))
    assert code == 0, err
    assert load_result(slow(work, job=True)[0].output_under(prefix)) != job_pid


@pytest.mark.slow
def test_ctrl_c_during_a_thread_step_exits_promptly(tmp_path: Path, prefix: str) -> None:
    code, err, took = interrupt(tmp_path, prefix=prefix)
    assert code == 130, err
    assert took < 15
    assert_interrupted(slow_output(tmp_path, prefix))


def assert_interrupted(output: str) -> None:
    store = store_for(output)
    status = read_status(store, output)
    assert status is not None and status.state is StepState.FAILED
    assert status.error and "nterrupt" in status.error
    assert status.interrupted and not status.is_failure()
    if "://" in output:  # on a remote store, look through the store (released, not gone)
        assert read_holder(store, output) is None
        assert store.read(status_path(output)) is not None
    else:
        assert not Path(output, ".confpipe", "lease.json").exists()
        assert Path(status_path(output)).exists()


def pid_alive(pid: int) -> bool:
    for _ in range(50):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        time.sleep(0.1)
    return True


def test_dag30_shape_has_fan_out_and_diamonds(tmp_path: Path) -> None:
    steps = dag30(str(tmp_path), 0)
    children = Counter(d.name for s in steps for d in s.dependencies)
    assert max(children.values()) >= 3  # fan-out
    assert sum(len(s.dependencies) == 2 for s in steps) >= 10  # joins -> diamonds
