"""@remote marks a function; as_job runs each call as a job; run_job retries preemptions only."""

from __future__ import annotations

import os
import pickle
import threading
import time
from pathlib import Path

import pytest

from confpipe import cancel
from confpipe.backends import JobRequest, JobState, JobStatus
from confpipe.backends.local import LocalBackend
from confpipe.backends.resources import Resources
from confpipe.cancel import CancelScope
from confpipe.engine import status
from confpipe.engine.remote import as_job, remote, resources_of, run_job, step_resources
from confpipe.engine.spec import function_path
from confpipe.errors import StepFailed
from tests import jobfns


class PreemptingBackend(LocalBackend):
    """A local backend whose first ``preemptions`` attempts end as if the VM was reclaimed."""

    def __init__(self, preemptions: int) -> None:
        super().__init__()
        self.preemptions = preemptions
        self.attempts: dict[int, int] = {}

    def submit(self, job: JobRequest) -> object:
        handle = super().submit(job)
        self.attempts[id(handle)] = job.attempt
        return handle

    def poll(self, handle: object) -> JobStatus:
        status = super().poll(handle)
        if status.state.done and self.attempts[id(handle)] < self.preemptions:
            return JobStatus(JobState.PREEMPTED, "spot VM reclaimed")
        return status


def job_dirs(out: Path) -> list[Path]:
    root = Path(status.jobs_dir(str(out)))
    return sorted(root.iterdir()) if root.exists() else []


def test_remote_marks_the_function_and_leaves_it_callable() -> None:
    assert jobfns.marked(x=2) == 4  # a direct call is a plain call
    assert resources_of(jobfns.marked) == Resources(cpu=2, memory=2**30)
    assert resources_of(jobfns.add) is None
    assert function_path(jobfns.marked) == "tests.jobfns.marked"
    assert pickle.loads(pickle.dumps(jobfns.marked)) is jobfns.marked


def test_remote_returns_the_same_function() -> None:
    def f() -> int:
        return 1

    assert remote(resources=Resources(cpu=3))(f) is f
    assert resources_of(f) == Resources(cpu=3)


def test_remote_refuses_anything_but_resources() -> None:
    with pytest.raises(TypeError, match=r"takes a confpipe.Resources, got \{'cpu': 2\}"):
        remote(resources={"cpu": 2})  # type: ignore[arg-type]


def test_a_steps_explicit_resources_win_over_the_decorator() -> None:
    explicit = Resources(cpu=1)
    assert step_resources(explicit, jobfns.marked) is explicit
    assert step_resources(None, jobfns.marked) == Resources(cpu=2, memory=2**30)
    assert step_resources(None, jobfns.add) is None


@pytest.mark.slow
def test_as_job_runs_each_call_as_a_job_under_the_output(tmp_path: Path) -> None:
    out = str(tmp_path / "out")
    job = as_job(jobfns.add, step="add", resources=Resources(), backend=LocalBackend())
    assert job.__name__ == "add"
    assert job.__wrapped__ is jobfns.add  # type: ignore[attr-defined]
    value = job(output_path=out, a=2, b=3)
    assert value["sum"] == 5
    assert value["output_path"] == out
    assert value["pid"] != os.getpid()
    (folder,) = job_dirs(tmp_path / "out")
    assert (folder / "result.json").exists()


def test_as_job_wants_keywords_and_an_output_path(tmp_path: Path) -> None:
    job = as_job(jobfns.add, step="add", resources=Resources(), backend=LocalBackend())
    with pytest.raises(TypeError, match="keyword arguments only"):
        job(1, 2, output_path=str(tmp_path))
    with pytest.raises(TypeError, match="needs output_path=<str>"):
        job(a=1, b=2)


@pytest.mark.slow
def test_as_job_is_stopped_by_the_current_cancel_scope(tmp_path: Path) -> None:
    scope = CancelScope()
    pid_file = tmp_path / "pids"
    job = as_job(jobfns.sleeper, step="sleepy", resources=Resources(), backend=LocalBackend())
    errors: list[BaseException] = []

    def call() -> None:
        with cancel.entered(scope):
            try:
                job(output_path=str(tmp_path / "out"), pid_file=str(pid_file))
            except StepFailed as err:
                errors.append(err)

    thread = threading.Thread(target=call)
    thread.start()
    while not pid_file.exists():
        assert thread.is_alive(), errors
        time.sleep(0.01)
    scope.cancel("lease lost")
    thread.join(timeout=20)
    assert not thread.is_alive()
    assert [str(e) for e in errors] == ["step 'sleepy': cancelled: lease lost"]


@pytest.mark.slow
def test_preempted_job_is_retried_in_a_fresh_folder(tmp_path: Path) -> None:
    echoed: list[str] = []
    log = status.log_path(str(tmp_path / "out"))
    value = run_job(
        PreemptingBackend(preemptions=1),
        "s",
        status.jobs_dir(str(tmp_path / "out")),
        jobfns.add,
        {"a": 1, "b": 1},
        Resources(max_retries=1),
        scope=CancelScope(),
        log_to=log,
        echo=echoed.append,
    )
    assert isinstance(value, dict)
    assert value["sum"] == 2
    first, second = job_dirs(tmp_path / "out")
    assert first.name.split("-")[2] == "0"  # {date}-{time}-{attempt}-{random}
    assert second.name.split("-")[2] == "1"
    # the step's log: both attempts' logs, each under a header; each line echoed once
    assert Path(log).read_text().splitlines() == [
        f"--- attempt 1 (preempted), job {first} ---",
        "adding 1 and 1",
        f"--- attempt 2 (succeeded), job {second} ---",
        "adding 1 and 1",
    ]
    assert echoed == ["adding 1 and 1", "adding 1 and 1"]


@pytest.mark.slow
def test_preemption_beyond_max_retries_fails_the_step(tmp_path: Path) -> None:
    with pytest.raises(StepFailed, match=r"job preempted 2 time\(s\) \(spot VM reclaimed\)"):
        run_job(
            PreemptingBackend(preemptions=5),
            "s",
            status.jobs_dir(str(tmp_path / "out")),
            jobfns.noop,
            {},
            Resources(max_retries=1),
            scope=CancelScope(),
        )
    assert len(job_dirs(tmp_path / "out")) == 2


def test_a_cancelled_scope_submits_nothing(tmp_path: Path) -> None:
    scope = CancelScope()
    scope.cancel("lease lost")
    with pytest.raises(StepFailed, match="cancelled: lease lost"):
        run_job(
            LocalBackend(),
            "s",
            status.jobs_dir(str(tmp_path / "out")),
            jobfns.noop,
            {},
            Resources(),
            scope=scope,
        )
    assert job_dirs(tmp_path / "out") == []
