"""Leases under faults: a dead holder on this machine, a holder whose store stalls.

A launch killed on this machine is taken over at once (its lease names its process); a
holder that cannot reach its store stops its step before its lease can be taken, and the
launch that took it over does the work once, while the first reports it done by another
launch.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from confpipe import LockOptions, StepSpec
from confpipe.cancel import CancelScope, current
from confpipe.engine.cache import Records, cache
from confpipe.engine.lock import (
    Holder,
    Lease,
    dead_local_holder,
    lock,
    read_holder,
    try_acquire,
    warn_timing,
)
from confpipe.engine.outcome import Outcome
from confpipe.engine.owner import process_record
from confpipe.engine.status import StepState, lease_path, read_status
from confpipe.storage import Blob, LocalStore, Store, store_for
from tests.pipelines import slow
from tests.waits import alive, eventually

ROOT = Path(__file__).resolve().parents[1]
LONG = LockOptions(heartbeat_interval=12, lease_timeout=60)


def launch(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.pipelines", *args],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def lease_of(process: dict[str, Any], owner: str = "gone@here:1:abc") -> bytes:
    return json.dumps({"owner": owner, "token": "t", "time": 0, **process}).encode()


# -- item: a dead owner on this same machine ---------------------------------------------


def test_a_lease_names_its_process_and_a_live_one_is_not_gone(tmp_path: Path) -> None:
    store, out = LocalStore(), str(tmp_path / "out")
    lease = try_acquire(store, "s", out, "me", LONG, CancelScope())
    assert isinstance(lease, Lease)
    try:
        holder = read_holder(store, out)
        assert holder is not None and holder.record["pid"] == os.getpid()
        if sys.platform == "linux":
            assert {"boot", "pidns", "start"} <= set(holder.record)
        assert not dead_local_holder(holder)  # this very process
    finally:
        lease.release()


@pytest.mark.skipif(sys.platform != "linux", reason="the shortcut needs /proc (Linux)")
def test_a_holder_is_gone_only_when_everything_proves_it() -> None:
    here = process_record()
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()  # reaped: its pid is free
    gone = {**here, "pid": child.pid}
    assert dead_local_holder(Holder("x", 1.0, gone))
    reused = {**here, "start": here["start"] + 1}  # our pid, but another process's start
    assert dead_local_holder(Holder("x", 1.0, reused))
    for key, other in [("host", "elsewhere"), ("boot", "another-boot"), ("pidns", "pid:[1]")]:
        assert not dead_local_holder(Holder("x", 1.0, {**gone, key: other}))
    old = {k: v for k, v in gone.items() if k not in ("boot", "pidns", "start")}
    assert not dead_local_holder(Holder("x", 1.0, old))  # a lease from before: no shortcut
    assert not dead_local_holder(Holder("x", 1.0, {}))


@pytest.mark.skipif(sys.platform != "linux", reason="the shortcut needs /proc (Linux)")
def test_a_fresh_lease_of_a_gone_process_is_taken_over_at_once(tmp_path: Path) -> None:
    store, out = LocalStore(), str(tmp_path / "out")
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    os.makedirs(out)
    assert store.create(lease_path(out), lease_of({**process_record(), "pid": child.pid}))
    lease = try_acquire(store, "s", out, "me", LONG, CancelScope())
    assert isinstance(lease, Lease)  # not a Holder: no wait for the 60 s lease
    lease.release()


@pytest.mark.slow
@pytest.mark.skipif(sys.platform != "linux", reason="the shortcut needs /proc (Linux)")
def test_a_launch_killed_on_this_machine_is_taken_over_without_waiting_its_lease(
    tmp_path: Path,
) -> None:
    prefix, work = str(tmp_path / "out"), str(tmp_path)
    (tmp_path / "seconds").write_text("600")
    first = launch("slow", prefix, work, "--lease", "60")
    eventually(lambda: (tmp_path / "started").exists(), "the first launch's step", 30)
    first.kill()  # kill -9 mid-step: its lease (60 s) stays behind
    first.communicate(timeout=30)
    output = slow(work, job=False)[0].output_under(prefix)
    holder = read_holder(store_for(output), output)
    assert holder is not None and holder.age < 60 and dead_local_holder(holder)
    (tmp_path / "seconds").write_text("0")
    started = time.monotonic()
    second = launch("slow", prefix, work, "--lease", "60")
    out, err = second.communicate(timeout=60)
    took = time.monotonic() - started
    assert second.returncode == 0, err
    assert took < 15, f"waited {took:.0f}s for a dead launch's lease"
    line = f"step slow: its launch (pid {first.pid} on this machine) is gone: taking it over"
    assert line in err
    assert json.loads(out.splitlines()[-1])["ran"] == 1


# -- item: a holder that cannot reach its store stops before its lease can be taken ---------


class StallingStore:
    """A real store whose writes stall while ``stall()`` lasts (a frozen bucket), then land."""

    def __init__(self, inner: Store, retry_window: float = 0.0) -> None:
        self.inner, self.retry_window = inner, retry_window
        self.flowing = threading.Event()
        self.flowing.set()

    def stall(self) -> None:
        self.flowing.clear()

    def resume(self) -> None:
        self.flowing.set()

    @property
    def fs(self) -> Any:
        return self.inner.fs

    def now(self) -> float:
        return self.inner.now()

    def read(self, path: str) -> Blob | None:
        return self.inner.read(path)

    def read_many(self, paths: Any) -> list[Blob | None]:
        return self.inner.read_many(paths)

    def create(self, path: str, data: bytes) -> str | None:
        self.flowing.wait()
        return self.inner.create(path, data)

    def replace(self, path: str, data: bytes, version: str) -> str | None:
        self.flowing.wait()
        return self.inner.replace(path, data, version)

    def delete(self, path: str, version: str) -> bool:
        self.flowing.wait()
        return self.inner.delete(path, version)

    def write(self, path: str, data: bytes) -> None:
        self.flowing.wait()
        self.inner.write(path, data)


EVENTS: list[tuple[str, str, float]] = []  # (launch, what, monotonic time)


def cooperative(output_path: str, who: str, seconds: float) -> str:
    """A thread step that stops when its cancel scope is set (as a lost lease sets it)."""
    EVENTS.append((who, "start", time.monotonic()))
    if current().wait(seconds):
        EVENTS.append((who, "stopped", time.monotonic()))
        raise RuntimeError("stopped")
    EVENTS.append((who, "done", time.monotonic()))
    return who


def launch_in_thread(
    store: Store, spec: StepSpec, out: str, owner: str, options: LockOptions, who: str,
    seconds: float,
) -> tuple[threading.Thread, list[Any]]:  # fmt: skip
    """One launch's executable for the step, as pipeline.executable composes it, in a thread."""
    records = Records(store, spec, owner)
    fn = lock(
        cooperative, store=store, step=spec.name, owner=owner, options=options,
        scope=CancelScope(), hooks=records,
    )  # fmt: skip
    run_it = cache(fn, records)
    got: list[Any] = []

    def go() -> None:
        try:
            got.append(run_it(output_path=out, who=who, seconds=seconds))
        except BaseException as err:
            got.append(err)

    thread = threading.Thread(target=go)
    thread.start()
    return thread, got


@pytest.mark.slow
def test_a_holder_whose_store_stalls_stops_before_its_lease_can_be_taken_over(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    options = LockOptions(heartbeat_interval=0.2, lease_timeout=1.0)  # gives up after 0.8 s
    spec = StepSpec("s", cooperative, {"who": "a or b", "seconds": "a's or b's"})
    out, plain = str(tmp_path / "s"), LocalStore()
    stalling = StallingStore(plain)
    EVENTS.clear()
    first, first_got = launch_in_thread(stalling, spec, out, "launch-a", options, "a", 10)
    eventually(lambda: EVENTS, "launch a's step")
    stalling.stall()  # its heartbeats no longer land; its step would take 10 s
    second, second_got = launch_in_thread(plain, spec, out, "launch-b", options, "b", 0.3)
    second.join(30)
    assert second_got == ["b"]  # launch b took the stale lease over and did the work
    stalling.resume()  # the bucket comes back: launch a's stalled writes land (and lose)
    first.join(30)
    assert first_got == [Outcome.CACHED]  # done by another launch: not a failure
    whats = [(who, what) for who, what, _ in EVENTS]
    assert whats == [("a", "start"), ("a", "stopped"), ("b", "start"), ("b", "done")]
    stopped, b_started = EVENTS[1][2], EVENTS[2][2]
    assert stopped < b_started  # a stopped before b could take the lease: never both
    status = read_status(plain, out)
    assert status is not None and status.state is StepState.SUCCESS
    assert status.worker == "launch-b"
    said = [r.getMessage() for r in caplog.records if r.name == "confpipe"]
    assert any(m.startswith("step s: lease given up: its heartbeat has not reached") for m in said)
    assert "step s: done by another launch (not a failure)" in said


def test_a_lease_too_short_for_the_stores_retry_window_is_warned_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    slow_store = StallingStore(LocalStore(), retry_window=30)
    warn_timing(LockOptions(heartbeat_interval=30, lease_timeout=90), slow_store)  # defaults
    assert not caplog.records
    for _ in range(2):
        warn_timing(LockOptions(heartbeat_interval=31, lease_timeout=90), slow_store)
    (record,) = caplog.records
    assert record.getMessage() == (
        "lock.lease_timeout=90s is under 2 x lock.heartbeat_interval (31s) + the store's retry "
        "window (30s): a store that is slow for a while makes a launch give its steps up; "
        "raise lock.lease_timeout to 92s or more"
    )


HELD_JOB = """\
import json, logging, sys
from confpipe import ConfpipeError, LockOptions, Resources, StepSpec, run
from tests import jobfns
logging.basicConfig(level=logging.INFO, format="%(message)s")
prefix, work = sys.argv[1:3]
config = {"pid_file": f"{work}/pid", "release": f"{work}/release"}
step = StepSpec("held", jobfns.hold, config, resources=Resources(cpu=1))
try:
    summary = run([step], prefix=prefix, lock_options=LockOptions(0.8, 4.0))
except ConfpipeError as err:
    print(f"error: {err}", file=sys.stderr)
    sys.exit(err.exit_code)
print(json.dumps({"ran": len(summary.ran)}))
"""


@pytest.mark.slow
def test_a_frozen_bucket_stops_the_holders_job_before_another_launch_runs_it(
    tmp_path: Path, fake_gcs: Any, gs_prefix: str
) -> None:
    # the case: two launches, a 4 s lease, the bucket frozen for longer than that
    work = str(tmp_path)

    def driver() -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-c", HELD_JOB, gs_prefix, work],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip

    first = driver()
    pid_file = tmp_path / "pid"
    eventually(pid_file.exists, "the first launch's job", 60)
    first_job = int(pid_file.read_text())
    second = driver()  # waits for the lease
    time.sleep(1.0)
    server = fake_gcs._proc.pid
    os.kill(server, signal.SIGSTOP)  # frozen: both launches alive, nobody's writes land
    try:
        # the holder gives its lease up and kills its job while the bucket is still frozen
        eventually(lambda: not alive(first_job), "the first launch to stop its job", 8)
        time.sleep(4.5)  # the lease goes stale on the server's clock meanwhile
        (tmp_path / "release").touch()  # a job started from now on finishes at once
    finally:
        os.kill(server, signal.SIGCONT)
    results = [proc.communicate(timeout=120) for proc in (first, second)]
    for proc, (_, err) in zip((first, second), results, strict=True):
        assert proc.returncode == 0, err  # the step got done: no launch reports a failure
    assert "step held: lease given up" in results[0][1]
    ran = [json.loads(out.splitlines()[-1])["ran"] for out, _ in results]
    assert sorted(ran) == [0, 1]  # run to completion once, by one launch
    if ran[0] == 0:  # the second took the lease over first; else the first got it back
        assert "step held: done by another launch (not a failure)" in results[0][1]
    assert int(pid_file.read_text()) != first_job  # a new job did it; the first never ended
