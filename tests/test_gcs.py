"""What only the gs:// store does, on fake-gcs-server (its shared contract: test_lock_contract).

Clean precondition failures, retried uploads, no stale listings, concurrent batch reads,
the server's clock, lazy Google imports, configuration, and whole runs on gs://. Every test
but the ServerClock one needs fake-gcs-server or a subprocess: marked slow.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from confpipe import StepSpec, StepState, load_result, run, storage
from confpipe.cancel import CancelScope
from confpipe.engine.lock import Holder, Lease, LockOptions, try_acquire
from confpipe.engine.owner import read_holder
from confpipe.engine.status import lease_path, read_status
from confpipe.storage import store_for
from confpipe.testing.gcs import FakeGcs
from tests import jobfns, stepfns

ROOT = Path(__file__).resolve().parents[1]


def gcs_store(**kwargs: Any) -> Any:
    """A private GcsStore (its own session), for tests that patch it."""
    from confpipe.storage.gcs import GcsStore

    return GcsStore(**kwargs)


@pytest.mark.slow
def test_failed_preconditions_are_none_or_false_not_exceptions(gs_prefix: str) -> None:
    s, path = store_for(gs_prefix), f"{gs_prefix}/obj"
    assert s.replace(path, b"x", "123") is None  # absent
    assert not s.delete(path, "123")
    v1 = s.create(path, b"one")
    assert v1 is not None and v1.isdigit()
    assert s.create(path, b"two") is None
    v2 = s.replace(path, b"two", v1)
    assert v2 is not None
    for stale in (v1, "0", "not-a-generation", ""):
        assert s.replace(path, b"three", stale) is None
        assert not s.delete(path, stale)
    blob = s.read(path)
    assert blob is not None and (blob.data, blob.version) == (b"two", v2)


@pytest.mark.slow
def test_a_retried_upload_that_landed_counts_as_ours(gs_prefix: str) -> None:
    # gcsfs retries a request whose response was lost; if the first attempt landed, the
    # retry's precondition fails (412) although the write is ours
    store = gcs_store()
    real = store.fs._call

    async def lost_response(method: str, *args: Any, **kwargs: Any) -> Any:
        result = await real(method, *args, **kwargs)
        if method == "POST":
            return await real(method, *args, **kwargs)  # the "retry"
        return result

    store.fs._call = lost_response
    path = f"{gs_prefix}/lease"
    v1 = store.create(path, b"mine")
    assert v1 is not None
    v2 = store.replace(path, b"still mine", v1)
    assert v2 is not None
    assert store.delete(path, v2)
    store.fs._call = real
    assert store.read(path) is None


@pytest.mark.slow
def test_listings_cache_does_not_hide_a_new_lease(gs_prefix: str) -> None:
    ours, theirs = gcs_store(), gcs_store()  # two machines
    output = f"{gs_prefix}/step-abc"
    ours.write(f"{output}/.confpipe/status.json", b"{}")
    assert ours.fs.ls(f"{output}/.confpipe", detail=False)  # a listing a cache would keep
    assert ours.fs.exists(lease_path(output)) is False
    got = try_acquire(theirs, "step", output, "them", LockOptions(), CancelScope())
    assert isinstance(got, Lease)
    try:
        assert ours.fs.exists(lease_path(output))
        assert len(ours.fs.ls(f"{output}/.confpipe", detail=False)) == 2
        holder = try_acquire(ours, "step", output, "us", LockOptions(), CancelScope())
        assert isinstance(holder, Holder) and holder.owner == "them"
    finally:
        got.release()


@pytest.mark.slow
def test_read_many_runs_reads_concurrently(gs_prefix: str) -> None:
    store = gcs_store(concurrency=16)
    paths = [f"{gs_prefix}/s{i}/status.json" for i in range(40)]
    for path in paths[::2]:
        store.write(path, path.encode())
    in_flight, peak = 0, 0
    real: Callable[..., Awaitable[Any]] = store.fs._call

    async def counted(*args: Any, **kwargs: Any) -> Any:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        try:
            await asyncio.sleep(0.02)  # a slow network: overlapping requests show
            return await real(*args, **kwargs)
        finally:
            in_flight -= 1

    store.fs._call = counted
    started = time.perf_counter()
    blobs = store.read_many(paths)
    took = time.perf_counter() - started
    assert [b.data if b else None for b in blobs] == [
        p.encode() if i % 2 == 0 else None for i, p in enumerate(paths)
    ]
    assert peak >= 8, peak  # one after another would be 1
    assert took < 40 * 0.02, took  # one after another takes at least 0.8 s


@pytest.mark.slow
def test_a_missing_bucket_is_an_error_not_a_held_lease(fake_gcs: FakeGcs) -> None:
    s, path = store_for("gs://no-such-bucket/x"), "gs://no-such-bucket/x/lease.json"
    assert s.read(path) is None
    with pytest.raises(FileNotFoundError, match="no such bucket"):
        s.create(path, b"{}")


@pytest.mark.slow
def test_staleness_uses_the_servers_clock_not_ours(
    gs_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    options = LockOptions(heartbeat_interval=1, lease_timeout=5)
    output = f"{gs_prefix}/out"
    lease = try_acquire(gcs_store(), "step", output, "a", options, CancelScope())
    assert isinstance(lease, Lease)
    try:
        real = time.time
        monkeypatch.setattr(time, "time", lambda: real() + 3600)  # our wall clock is off
        got = try_acquire(gcs_store(), "step", output, "b", options, CancelScope())
        assert isinstance(got, Holder) and got.owner == "a" and got.age < 5
    finally:
        monkeypatch.undo()
        lease.release()


@pytest.mark.slow
def test_a_fresh_store_asks_the_server_for_the_time(fake_gcs: FakeGcs) -> None:
    store = gcs_store()
    assert store.clock.now() is None  # nothing heard yet: now() makes one request
    assert abs(store.now() - time.time()) < 5  # the fake runs on this machine's clock
    assert store.clock.now() is not None


def test_server_clock_never_runs_ahead_of_the_server() -> None:
    from confpipe.storage.gcs import ServerClock

    def now(clock: ServerClock) -> float:
        value = clock.now()
        assert value is not None
        return value

    clock = ServerClock(drift=0.0)
    assert clock.now() is None
    seen = time.monotonic()
    clock.observe(1000.0, seen)  # a Date header: the server said 1000 (it may be 1000.9)
    assert 1000.0 <= now(clock) <= 1000.0 + (time.monotonic() - seen)
    clock.observe(999.0, seen)  # an older time tells less: the bound stays
    assert now(clock) >= 1000.0
    clock.observe(1000.7, seen)  # an upload's `updated`: a tighter bound
    assert now(clock) >= 1000.7
    drifting = ServerClock(drift=0.01)
    drifting.observe(1000.0, time.monotonic() - 10)  # seen 10 s ago: weakened by 0.1 s
    assert now(drifting) <= 1000.0 + 10 - 0.09


@pytest.mark.slow
def test_configure_points_gs_at_an_endpoint(
    fake_gcs: FakeGcs, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("STORAGE_EMULATOR_HOST")
    storage.configure(storage_endpoint=fake_gcs.endpoint.removeprefix("http://"))
    try:
        s = store_for("gs://x/y")
        assert s.endpoint == fake_gcs.endpoint  # type: ignore[attr-defined]
        assert store_for("gcs://x/y") is s
        s.write(f"gs://confpipe-tests/configured-{time.time_ns()}", b"ok")
        # step functions using gcsfs themselves (and local jobs) must reach it too
        assert os.environ["STORAGE_EMULATOR_HOST"] == fake_gcs.endpoint.removeprefix("http://")
    finally:
        storage.configure()


def write_text(output_path: str, text: str) -> str:
    store_for(output_path).fs.pipe_file(f"{output_path}/out.txt", text.encode())
    return text


def join(output_path: str, left: str, right: str) -> str:
    fs = store_for(output_path).fs
    return "".join(fs.cat_file(f"{folder}/out.txt").decode() for folder in (left, right))


def small_dag(text: str = "a") -> list[StepSpec]:
    a = StepSpec("a", write_text, {"text": text})
    b = StepSpec("b", write_text, {"text": "b"})
    return [StepSpec("ab", join, {"left": a, "right": b})]


@pytest.mark.slow
def test_a_dag_runs_on_gs_and_reruns_from_cache(gs_prefix: str) -> None:
    summary = run(small_dag(), prefix=gs_prefix)
    assert len(summary.ran) == 3 and not summary.cached
    out = summary.outputs["ab"]
    assert out.startswith(f"{gs_prefix}/ab-")
    assert load_result(out) == "ab"
    status = read_status(store_for(out), out)
    assert status is not None and status.state is StepState.SUCCESS
    assert read_holder(store_for(out), out) is None  # released
    again = run(small_dag(), prefix=gs_prefix)
    assert not again.ran and len(again.cached) == 1  # the cached root prunes its subtree
    plan = run(small_dag("A"), prefix=gs_prefix, dry_run=True).plan
    reasons = {p.spec.name: p.reason for p in plan}
    assert "changed: text: a -> A" in reasons["a"], reasons


def run_python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )


@pytest.mark.slow
def test_a_local_run_imports_no_google_sdk(tmp_path: Path) -> None:
    code = (
        "import sys, confpipe\n"
        "from tests import stepfns\n"
        "step = confpipe.StepSpec('a', stepfns.add, {'a': 1, 'b': 2})\n"
        f"s = confpipe.run(step, prefix={str(tmp_path)!r})\n"
        "assert confpipe.load_result(s.outputs['a']) == 3\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('gcsfs', 'google', 'aiohttp')"
        " or m == 'confpipe.storage.gcs')\n"
        "print(heavy)\n"
    )  # fmt: skip
    done = run_python(code)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]"


@pytest.mark.slow
def test_gs_without_gcsfs_says_how_to_install_it() -> None:
    code = (
        "import sys\n"
        "sys.modules['gcsfs'] = None  # as if not installed\n"
        "from confpipe import ConfigError\n"
        "from confpipe.storage import store_for\n"
        "try:\n"
        "    store_for('gs://bucket/out')\n"
        "except ConfigError as err:\n"
        "    print(err)\n"
    )
    done = run_python(code)
    assert done.returncode == 0, done.stderr
    assert "gs://bucket: gs:// needs confpipe's gcp extra (missing: gcsfs)" in done.stdout
    assert "pip install 'confpipe[gcp]'" in done.stdout


@pytest.mark.slow
def test_a_bucket_that_doesnt_exist_is_a_config_error_before_anything_runs(
    gs_prefix: str, tmp_path: Path
) -> None:
    from confpipe import ConfigError

    log = tmp_path / "calls.log"
    step = StepSpec("s", stepfns.record, {"log": str(log), "name": "s"})
    with pytest.raises(ConfigError, match=r"bucket gs://no-such-bucket-x doesn't exist"):
        run(step, prefix="gs://no-such-bucket-x/runs")
    assert not log.exists()


@pytest.mark.slow
def test_local_jobs_work_on_a_gs_prefix_and_their_logs_land_there(gs_prefix: str) -> None:
    from confpipe import Resources, RunFailed

    good = StepSpec("good", jobfns.noisy, {"lines": 3}, resources=Resources(cpu=1))
    summary = run(good, prefix=gs_prefix)
    assert len(summary.ran) == 1
    (log,) = storage.store_for(gs_prefix).fs.glob(f"{gs_prefix}/good-*/.confpipe/jobs/*/log.txt")
    assert "line 2" in store_for(gs_prefix).fs.cat_file(log).decode()
    bad = StepSpec("bad", jobfns.noisy, {"lines": 2, "fail": True}, resources=Resources(cpu=1))
    with pytest.raises(RunFailed) as err:
        run(bad, prefix=gs_prefix)
    failure = err.value.failures["bad"]
    assert "line 1" in str(failure)  # the log tail, read back from the bucket
    assert failure.log_path is not None and failure.log_path.startswith(f"{gs_prefix}/bad-")
    spool = Path(tempfile.gettempdir(), f"confpipe-jobs-{os.getpid()}")
    assert not spool.exists()  # each spooled log was uploaded, then removed
