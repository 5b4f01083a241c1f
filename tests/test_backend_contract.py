"""The contract every backend passes: one suite, run on each kind of job the registry builds.

In the spirit of fsspec's ``tests/abstract/`` and Hydra's ``LauncherTestSuite``. Each test
drives real jobs through ``run_job`` (the one job driver) on a ``Kind``: the local backend
(subprocesses of this machine), Cloud Batch on ``FakeBatch`` and Cloud TPU on ``FakeTpu``
(the real Google clients over gRPC; the TPU job folders on fake-gcs-server), the two cloud
ones built as a run builds them, by ``make_backend("gcp", ...)`` and its router. What every
backend must do: return the function's value; fail the step with the function's error (type,
message, traceback) and the tail of the job's log, also when it dies without a record; stop
the job on cancel and on ``resources.timeout``; re-attach a restarted driver to the live
job instead of submitting another, or, for a backend that can't (``reattaches`` false),
stop the job with its driver; survive ``close``, twice. A new backend adds a ``Kind`` below
and passes. What only one backend does is tested in its own file (test_backend_local,
test_batch, test_tpu).
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from confpipe.backends import Backend, BackendKind
from confpipe.backends.registry import make_backend
from confpipe.backends.resources import Resources
from confpipe.cancel import CancelScope
from confpipe.engine import status
from confpipe.engine.remote import LOG_TAIL_LINES
from confpipe.errors import StepFailed
from confpipe.storage import store_for
from tests import jobfns
from tests.gcpfakes import in_thread, run
from tests.waits import alive, eventually

pytestmark = pytest.mark.slow  # real subprocesses, and fake clouds for two kinds of three

HASH = "0123456789ab"
# stage_code=false: jobs run this checkout's code, which the fakes' "image" holds
CLOUD = dict(kind="gcp", project="proj", image="img", poll_interval=0.05, stage_code=False)


@dataclass
class Kind:
    """A kind of backend as the contract sees it: how to make a driver and where jobs go."""

    settings: dict[str, Any]  # the ``backend`` node make_backend builds it from
    root: str  # where step outputs go: a folder or a gs:// URL
    resources: Resources  # what a plain job of this kind asks for
    reattaches: bool  # what the backend must say of itself
    live: Callable[[], list[object]]  # the jobs the service still queues or runs
    drivers: list[Backend] = field(default_factory=list)  # closed after the test

    def driver(self) -> Backend:
        """A fresh backend, as a launch (or a restarted one) makes it."""
        backend = make_backend(self.settings["kind"], self.settings, prefix=self.root)
        self.drivers.append(backend)
        return backend

    def out(self, step: str) -> str:
        return f"{self.root}/{step}-{HASH}"

    def run(self, backend: Backend, step: str, fn: Callable[..., object], **kwargs: Any) -> Any:
        """``fn(**kwargs)`` as the job of ``step``, with ``resources=`` or the kind's own."""
        resources = kwargs.pop("resources", self.resources)
        return run(backend, self.out(step), fn, resources, **kwargs)


@pytest.fixture(params=["local", "batch", "tpu"])
def kind(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Kind]:
    if request.param == "local":
        chosen = Kind({"kind": "local"}, str(tmp_path), Resources(), False, lambda: [])
    elif request.param == "batch":
        batch = request.getfixturevalue("fake_batch")
        running = {"QUEUED", "SCHEDULED", "RUNNING"}
        chosen = Kind(
            {**CLOUD, "batch_endpoint": batch.endpoint},
            str(tmp_path),
            Resources(),
            True,
            lambda: [j.name for j in batch.jobs() if j.status.state.name in running],
        )
    else:
        tpu = request.getfixturevalue("fake_tpu")
        chosen = Kind(
            {**CLOUD, "tpu_endpoint": tpu.endpoint},
            request.getfixturevalue("gs_prefix"),
            Resources(tpu="v5litepod-8"),
            True,
            lambda: [r.name for r in tpu.queued_resources()],
        )
    yield chosen
    for backend in chosen.drivers:
        backend.close()


def job_files(out: str) -> list[set[str]]:
    """The names in each job folder of the step whose output is ``out``."""
    fs = store_for(out).fs
    folders = sorted(fs.ls(status.jobs_dir(out), detail=False))
    return [{p.rsplit("/", 1)[-1] for p in fs.ls(folder, detail=False)} for folder in folders]


def read(url: str) -> str:
    blob = store_for(url).read(url)
    assert blob is not None, f"nothing at {url}"
    return blob.data.decode()


def pid_in(path: Path) -> int:
    eventually(path.exists, "the job to start", 60)
    return int(path.read_text())


def stopped(kind: Kind, pid: int) -> None:
    """The job's process is gone, and the service holds no job of it."""
    eventually(lambda: not alive(pid), "the job's process to stop", 15)
    eventually(lambda: kind.live() == [], "the service to let the job go", 15)


def test_a_job_returns_the_functions_value(kind: Kind) -> None:
    backend = kind.driver()
    assert backend.kind is BackendKind(kind.settings["kind"])
    value = kind.run(backend, "add", jobfns.add, a=1, b=2)
    assert value["sum"] == 3 and value["pid"] != os.getpid()
    (files,) = job_files(kind.out("add"))
    assert {"call.pkl", "result.json", "log.txt"} <= files


def test_a_failing_function_fails_the_step_with_its_error_and_log_tail(kind: Kind) -> None:
    resources = dataclasses.replace(kind.resources, max_retries=2)  # retries preemptions only
    with pytest.raises(StepFailed) as info:
        kind.run(kind.driver(), "boom", jobfns.boom, resources=resources, message="bad input")
    text = str(info.value)
    assert text.startswith("step 'boom': ValueError: bad input\n  job folder: ")
    assert f"job folder: {status.jobs_dir(kind.out('boom'))}/" in text
    assert "\n  last lines of log.txt:\n    about to fail: line printed by the job\n" in text
    assert "raise ValueError(message)" in (info.value.remote_traceback or "")
    log = info.value.log_path or ""
    assert "about to fail: line printed by the job" in read(log)
    (files,) = job_files(kind.out("boom"))  # a failure is never retried
    assert "error.json" in files and "result.json" not in files


def test_a_job_dying_without_a_record_fails_with_its_exit_and_log_tail(kind: Kind) -> None:
    with pytest.raises(StepFailed) as info:
        kind.run(kind.driver(), "crash", jobfns.exit_hard, code=3)
    text = str(info.value)
    assert text.startswith("step 'crash': job failed (")
    assert "exit code 3" in text and ") without writing a record\n" in text
    assert text.endswith("\n  last lines of log.txt:\n    exiting with 3")


def test_the_log_tail_is_the_last_lines_of_the_log(kind: Kind) -> None:
    with pytest.raises(StepFailed) as info:
        kind.run(kind.driver(), "noisy", jobfns.noisy, lines=100, fail=True)
    text = str(info.value)
    assert text.startswith("step 'noisy': RuntimeError: noisy failed on purpose\n")
    tail = text.split("\n  last lines of log.txt:\n", 1)[1].splitlines()
    assert len(tail) == LOG_TAIL_LINES
    assert "    line 99" in tail and "    line 0" not in tail
    assert tail[-1] == "    RuntimeError: noisy failed on purpose"
    log = read(info.value.log_path or "")  # the whole log, where the step's error says
    assert [f"line {n}" for n in range(100)] == log.splitlines()[:100]


def test_cancel_stops_the_job(kind: Kind, tmp_path: Path) -> None:
    scope, pid_file = CancelScope(), tmp_path / "pid"
    thread, outcome = in_thread(
        lambda: kind.run(kind.driver(), "hold", jobfns.hold, scope=scope, pid_file=str(pid_file))
    )
    pid = pid_in(pid_file)
    scope.cancel("lease lost")
    thread.join(30)
    assert [str(e) for e in outcome] == ["step 'hold': cancelled: lease lost"]
    stopped(kind, pid)


def test_a_timeout_stops_the_job_and_fails_the_step(kind: Kind, tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    resources = dataclasses.replace(kind.resources, timeout=3)
    with pytest.raises(StepFailed) as info:
        kind.run(kind.driver(), "hold", jobfns.hold, resources=resources, pid_file=str(pid_file))
    assert str(info.value).startswith(
        "step 'hold': timed out after running 3s (resources.timeout); job cancelled\n"
    )
    stopped(kind, pid_in(pid_file))


def test_a_restarted_driver_reattaches_to_the_live_job_or_it_stopped_with_its_driver(
    kind: Kind, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="confpipe")
    pid_file, release = tmp_path / "pid", tmp_path / "release"
    args = {"pid_file": str(pid_file), "release": str(release)}
    first, scope = kind.driver(), CancelScope()
    assert first.reattaches is kind.reattaches
    thread, outcome = in_thread(
        lambda: kind.run(first, "hold", jobfns.hold, scope=scope, detach=True, **args)
    )
    pid = pid_in(pid_file)
    scope.set()  # Ctrl-C with detach=true: the driver goes away
    thread.join(30)
    first.close()
    (err,) = outcome
    if kind.reattaches:  # the job runs on, and the next driver waits for it
        assert str(err).startswith("step 'hold': cancelled: interrupted; job left running")
        assert alive(pid)
        second = kind.driver()
        thread, outcome = in_thread(lambda: kind.run(second, "hold", jobfns.hold, **args))
        eventually(lambda: "re-attached to its live" in caplog.text, "the re-attach")
        release.touch()
        thread.join(60)
        assert outcome == [pid]  # the first job's process finished it: nothing resubmitted
    else:  # no later driver could find it: it stops with its driver, as documented
        assert str(err) == "step 'hold': cancelled: interrupted"
        assert "detach=true leaves only cloud jobs running" in caplog.text
        stopped(kind, pid)
        release.touch()
    # a finished job is not re-attached to: the next launch runs the step anew
    reattached = caplog.text.count("re-attached")
    assert kind.run(kind.driver(), "hold", jobfns.hold, **args) != pid
    assert caplog.text.count("re-attached") == reattached


def test_close_is_idempotent_and_a_closed_backend_runs_jobs_again(kind: Kind) -> None:
    backend = kind.driver()
    assert kind.run(backend, "add", jobfns.add, a=1, b=1)["sum"] == 2
    backend.close()
    backend.close()
    assert kind.run(backend, "add", jobfns.add, a=2, b=2)["sum"] == 4
