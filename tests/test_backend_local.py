"""The local backend and the worker: real subprocesses in real folders.

What every backend does (values, failures, log tails, cancel, timeouts, re-attach, close) is
in test_backend_contract.py; here, what only the local one does: its CPU/memory budget and
queue, process groups, a job dying with its driver, the worker's own exits.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import os
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cloudpickle
import pytest

from confpipe.backends import JobRequest, JobState
from confpipe.backends.local import LocalBackend
from confpipe.backends.resources import GPU, Resources
from confpipe.cancel import CancelScope
from confpipe.engine import status
from confpipe.errors import ConfigError, StepFailed
from tests import jobfns
from tests.gcpfakes import run
from tests.waits import alive, eventually

GiB = 2**30


def job_dirs(out: Path) -> list[Path]:
    root = Path(status.jobs_dir(str(out)))
    return sorted(root.iterdir()) if root.exists() else []


def read_pids(path: Path) -> list[int]:
    eventually(path.exists, f"{path} to be written")
    return [int(p) for p in path.read_text().split()]


def stage(root: Path, fn: Callable[..., object], **kwargs: object) -> str:
    job_dir = root / uuid.uuid4().hex[:8]
    job_dir.mkdir(parents=True)
    (job_dir / "call.pkl").write_bytes(cloudpickle.dumps((fn, kwargs)))
    return str(job_dir)


def submit(
    backend: LocalBackend,
    root: Path,
    fn: Callable[..., object],
    resources: Resources | None = None,
    **kwargs: object,
) -> object:
    return backend.submit(JobRequest("s", stage(root, fn, **kwargs), resources or Resources()))


def state_of(backend: LocalBackend, handle: object) -> JobState:
    return backend.poll(handle).state


@pytest.mark.slow
def test_user_module_on_the_drivers_sys_path_imports_in_the_job(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = f"usermod_{uuid.uuid4().hex[:8]}"
    (tmp_path / "mods").mkdir()
    (tmp_path / "mods" / f"{name}.py").write_text("def f(x):\n    return x + 1\n")
    monkeypatch.syspath_prepend(str(tmp_path / "mods"))
    monkeypatch.chdir(tmp_path)  # the job's cwd is not where the module lives
    module = __import__(name)
    try:
        assert run(LocalBackend(), tmp_path / "out", module.f, x=41) == 42
    finally:
        sys.modules.pop(name, None)


@pytest.mark.slow
def test_non_json_return_value_fails_clearly(tmp_path: Path) -> None:
    with pytest.raises(StepFailed, match=r"result: a set \(set\) is not JSON"):
        run(LocalBackend(), tmp_path / "out", jobfns.returns_set)


@pytest.mark.slow
def test_env_reaches_the_job_and_its_value_is_written_nowhere(tmp_path: Path) -> None:
    secret = f"s3cret-{uuid.uuid4().hex}"
    resources = Resources(env={"CONFPIPE_TEST_SECRET": secret})
    digest = run(
        LocalBackend(), tmp_path / "out", jobfns.env_digest, resources, name="CONFPIPE_TEST_SECRET"
    )
    assert digest == hashlib.sha256(secret.encode()).hexdigest()
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert any(p.name == "call.pkl" for p in files)
    assert [p for p in files if secret.encode() in p.read_bytes()] == []


@pytest.mark.slow
def test_cancel_kills_the_jobs_whole_process_group(tmp_path: Path) -> None:
    backend = LocalBackend()
    handle = submit(backend, tmp_path, jobfns.sleeper, pid_file=str(tmp_path / "pids"), child=True)
    job, child = read_pids(tmp_path / "pids")
    assert alive(job) and alive(child)
    backend.cancel(handle)
    assert not alive(job)  # the job itself is reaped by the time cancel returns
    eventually(lambda: not alive(child), "the job's child to die", seconds=10)


ROOT = Path(__file__).resolve().parents[1]
DRIVER = """
import sys
from confpipe.backends.local import LocalBackend
from tests import jobfns
from tests.gcpfakes import run

run(LocalBackend(), sys.argv[1], jobfns.sleeper, pid_file=sys.argv[2], child=True, stubborn=True)
"""


@pytest.mark.slow
def test_a_job_and_its_children_stop_when_the_driver_is_killed(tmp_path: Path) -> None:
    pid_file = tmp_path / "pids"
    driver = subprocess.Popen(
        [sys.executable, "-c", DRIVER, str(tmp_path / "out-0123456789ab"), str(pid_file)],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    try:
        job, child = read_pids(pid_file)  # the child ignores SIGTERM
    finally:
        driver.kill()  # -9: the driver can't cancel anything
        driver.wait()
    eventually(lambda: not alive(job), "the job to stop", 10)
    eventually(lambda: not alive(child), "the job's child to be killed", 15)


@pytest.mark.slow
def test_cancelled_queued_job_never_starts_and_frees_its_place(tmp_path: Path) -> None:
    backend = LocalBackend(cpu=1)
    first = submit(backend, tmp_path, jobfns.sleeper, pid_file=str(tmp_path / "pids"))
    read_pids(tmp_path / "pids")
    queued_dir = stage(
        tmp_path, jobfns.sleeper, pid_file=str(tmp_path / "never"), marker=str(tmp_path / "started")
    )
    queued = backend.submit(JobRequest("b", queued_dir, Resources()))
    assert state_of(backend, first) is JobState.RUNNING
    assert state_of(backend, queued) is JobState.QUEUED
    backend.cancel(queued)
    assert state_of(backend, queued) is JobState.CANCELLED
    backend.cancel(first)
    assert state_of(backend, first) is JobState.CANCELLED
    after = submit(backend, tmp_path, jobfns.noop)
    eventually(lambda: state_of(backend, after).done, "the next job to finish")
    assert state_of(backend, after) is JobState.SUCCEEDED
    assert not (tmp_path / "started").exists()
    assert not Path(queued_dir, "log.txt").exists()


@pytest.mark.slow
def test_cancelling_a_queued_run_job_raises_and_never_starts_it(tmp_path: Path) -> None:
    backend = LocalBackend(cpu=1)
    busy = submit(backend, tmp_path, jobfns.sleeper, pid_file=str(tmp_path / "pids"))
    read_pids(tmp_path / "pids")
    scope = CancelScope()
    threading.Timer(0.2, scope.cancel, args=("lease lost",)).start()
    try:
        with pytest.raises(StepFailed, match="cancelled: lease lost"):
            run(backend, tmp_path / "out", jobfns.noop, scope=scope)
    finally:
        backend.cancel(busy)
    after = submit(backend, tmp_path, jobfns.noop)  # queued jobs start in order
    eventually(lambda: state_of(backend, after).done, "the next job to finish")
    (job,) = job_dirs(tmp_path / "out")
    assert not (job / "log.txt").exists()


@pytest.mark.slow
def test_budget_of_one_cpu_never_overlaps_jobs(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="confpipe")
    backend = LocalBackend(cpu=1)
    spans = tmp_path / "spans"
    spans.mkdir()
    with ThreadPoolExecutor(3) as pool:
        futures = [
            pool.submit(
                run,
                backend,
                tmp_path / f"out{i}",
                jobfns.record_span,
                Resources(cpu=1),
                folder=str(spans),
                name=str(i),
                seconds=0.2,
            )
            for i in range(3)
        ]
        assert sorted(str(f.result(timeout=60)) for f in futures) == ["0", "1", "2"]
    times = sorted(tuple(map(float, p.read_text().split())) for p in spans.iterdir())
    for (_, end), (start, _) in itertools.pairwise(times):
        assert end <= start
    waits = [
        r.getMessage()
        for r in caplog.records
        if "waits for room in the local budget" in r.getMessage()
    ]
    assert len(waits) == 1  # said once, by the first job that had to wait
    assert "(1 CPUs, " in waits[0]
    assert "backend.cpu / backend.memory / backend.gpus set the budget" in waits[0]


@pytest.mark.slow
def test_budget_of_three_cpus_runs_three_jobs_together(tmp_path: Path) -> None:
    backend = LocalBackend(cpu=3)
    meeting = tmp_path / "meeting"
    meeting.mkdir()
    with ThreadPoolExecutor(3) as pool:
        futures = [
            pool.submit(
                run,
                backend,
                tmp_path / f"out{i}",
                jobfns.meet,
                Resources(cpu=1),
                folder=str(meeting),
                name=str(i),
                count=3,
            )
            for i in range(3)
        ]
        assert sorted(str(f.result(timeout=60)) for f in futures) == ["0", "1", "2"]


@pytest.mark.slow
def test_memory_budget_queues_a_job_that_does_not_fit(tmp_path: Path) -> None:
    backend = LocalBackend(cpu=4, memory=2 * GiB)
    big = Resources(memory=int(1.5 * GiB))
    first = submit(backend, tmp_path, jobfns.sleeper, big, pid_file=str(tmp_path / "p1"))
    second = submit(backend, tmp_path, jobfns.sleeper, big, pid_file=str(tmp_path / "p2"))
    small = submit(backend, tmp_path, jobfns.noop)
    try:
        assert state_of(backend, first) is JobState.RUNNING
        assert state_of(backend, second) is JobState.QUEUED
        assert state_of(backend, small) is JobState.QUEUED  # first come, first served
        backend.cancel(first)
        read_pids(tmp_path / "p2")
        assert state_of(backend, second) is JobState.RUNNING
        eventually(lambda: state_of(backend, small).done, "the small job to finish")
    finally:
        backend.cancel(second)


@pytest.mark.slow
def test_close_stops_the_jobs_still_queued_or_running(tmp_path: Path) -> None:
    # no later driver could re-attach to them: a run's end must not leave them behind
    backend = LocalBackend(cpu=1)
    running = submit(backend, tmp_path, jobfns.sleeper, pid_file=str(tmp_path / "pids"))
    (pid,) = read_pids(tmp_path / "pids")
    queued = submit(backend, tmp_path, jobfns.noop)
    backend.close()
    assert not alive(pid)
    assert [state_of(backend, h) for h in (running, queued)] == [JobState.CANCELLED] * 2
    backend.close()  # again: nothing left to stop
    after = submit(backend, tmp_path, jobfns.noop)  # and the backend still runs jobs
    eventually(lambda: state_of(backend, after).done, "the next job to finish")
    assert state_of(backend, after) is JobState.SUCCEEDED


@pytest.mark.parametrize(
    ("resources", "message"),
    [
        (
            Resources(gpu=GPU("nvidia-l4", 3)),
            "step 'train': resources.gpu.count=3 is more than the 2 GPU(s) of the local "
            "backend (backend.gpus=[0, 1]); lower it, set backend.gpus or use backend=gcp",
        ),
        (
            Resources(tpu="v5litepod-8"),
            "step 'train': resources.tpu needs backend=gcp (Cloud TPU); "
            "the local backend runs CPU and GPU jobs only",
        ),
        (
            Resources(cpu=3),
            "step 'train': resources.cpu=3 is more than the local backend's budget of 2 CPUs "
            "on this machine; lower it or use backend=gcp",
        ),
        (
            Resources(memory=5 * GiB),
            "step 'train': resources.memory=5.0GiB is more than the local backend's budget of "
            "4.0GiB on this machine; lower it or use backend=gcp",
        ),
        (
            Resources(secret_env={"CONFPIPE_UNSET_TOKEN": "projects/p/secrets/t/versions/1"}),
            "step 'train': resources.secret_env: the local backend can't read Secret Manager; "
            "export CONFPIPE_UNSET_TOKEN before launching (jobs inherit the environment) or use "
            "backend=gcp",
        ),
    ],
)
def test_check_rejects_what_the_machine_cannot_serve(
    tmp_path: Path, resources: Resources, message: str
) -> None:
    backend = LocalBackend(cpu=2, memory=4 * GiB, gpus=[0, 1])
    with pytest.raises(ConfigError) as info:
        backend.check("train", resources)
    assert str(info.value) == message
    with pytest.raises(ConfigError):  # submit refuses too, instead of queueing forever
        submit(backend, tmp_path, jobfns.noop, resources)


def test_check_accepts_what_fits() -> None:
    LocalBackend(cpu=2, memory=4 * GiB).check("s", Resources(cpu=2, memory=4 * GiB))


def test_default_budget_is_the_machine() -> None:
    backend = LocalBackend()
    assert backend.cpu == len(os.sched_getaffinity(0))
    assert backend.memory == os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


@pytest.mark.slow
def test_job_killed_without_a_record_fails_with_its_signal_and_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PYTHONUNBUFFERED", raising=False)  # the backend makes output unbuffered
    with pytest.raises(StepFailed) as info:
        run(LocalBackend(), tmp_path / "out", jobfns.kill_self)
    message = str(info.value)
    assert "job failed (killed by signal SIGKILL) without writing a record" in message
    assert "about to be killed" in message


@pytest.mark.slow
def test_poll_of_a_finished_job_reports_its_exit_and_its_log(tmp_path: Path) -> None:
    backend = LocalBackend()
    handle = submit(backend, tmp_path, jobfns.boom, message="x")
    eventually(lambda: state_of(backend, handle).done, "the job to finish")
    status = backend.poll(handle)
    assert (status.state, status.detail) == (JobState.FAILED, "exit code 1")
    assert status.log is not None and status.log.endswith("/log.txt")
    assert "ValueError: x" in Path(status.log).read_text().splitlines()[-1]


def worker(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "confpipe.worker", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.slow
@pytest.mark.parametrize("args", [(), ("a", "b"), ("--help",)])
def test_worker_usage_error_exits_2(args: tuple[str, ...]) -> None:
    proc = worker(*args)
    assert proc.returncode == 2
    assert proc.stderr == "usage: python -m confpipe.worker <job folder URL>\n"


@pytest.mark.slow
def test_worker_without_a_staged_call_exits_2(tmp_path: Path) -> None:
    proc = worker(str(tmp_path))
    assert proc.returncode == 2
    assert proc.stderr.startswith(f"confpipe.worker: no call.pkl in {str(tmp_path)!r}")
    assert len(proc.stderr.splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_worker_imports_no_heavy_libraries() -> None:
    """Every job pays the worker's import time: no Hydra, rich or Google SDKs."""
    code = (
        "import sys, confpipe.worker\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & "
        "{'hydra', 'omegaconf', 'rich', 'google', 'gcsfs'}))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_a_memory_prefix_is_refused_for_local_jobs() -> None:
    request = JobRequest("s", "memory://jobs/1", Resources())
    with pytest.raises(ConfigError, match="can't see this process's memory:// prefix"):
        LocalBackend().submit(request)
