"""A Batch task that Batch runs again after its job recorded its end (a VM preempted between
writing ``exits/0.json`` and exiting) ends as that attempt did: the driver may already have
taken that outcome, so the step must not run a second time."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from confpipe.backends.gcp import vm
from confpipe.backends.gcp.hosts import exit_path


def recorded(job_dir: Path, code: int, stage: str = "worker") -> Path:
    path = Path(exit_path(str(job_dir), 0))
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"host": 0, "code": code, "stage": stage}))
    return path


@pytest.mark.parametrize("code", [0, 1])
def test_a_task_run_again_after_its_job_recorded_its_end_does_not_run_the_step(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], code: int
) -> None:
    monkeypatch.delenv(vm.HOST_VAR, raising=False)
    job = tmp_path / "job"
    record = recorded(job, code)
    before = record.read_bytes(), record.stat().st_mtime_ns
    ran: list[object] = []
    monkeypatch.setattr(vm, "_run_job", lambda *args: ran.append(args) or 0)
    assert vm.main([str(job)]) == code
    assert ran == []  # the step's call was not run again
    assert (record.read_bytes(), record.stat().st_mtime_ns) == before  # nor its record rewritten
    assert "already ended" in capsys.readouterr().out


def test_an_exit_record_of_a_stage_before_the_worker_does_not_stop_a_retry(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(vm.HOST_VAR, raising=False)
    job = tmp_path / "job"
    recorded(job, 125, stage="pull")  # never reached the worker: nothing of the step ran
    ran: list[object] = []
    monkeypatch.setattr(vm, "_run_job", lambda *args: ran.append(args) or 0)
    assert vm.main([str(job)]) == 0
    assert len(ran) == 1


def test_a_task_stopped_by_sigterm_writes_no_exit_record_so_batch_may_retry_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Spot VM being preempted stops the container with SIGTERM: that attempt's end is not
    the job's (Batch retries the task), so no exit record may tell the driver it failed."""
    monkeypatch.delenv(vm.HOST_VAR, raising=False)
    job = tmp_path / "job"

    def preempted(*args: object) -> int:
        vm._stopped.set()  # what run()'s handler does on SIGTERM
        return 143

    monkeypatch.setattr(vm, "_run_job", preempted)
    try:
        assert vm.main([str(job)]) == 143
    finally:
        vm._stopped.clear()
    assert not Path(exit_path(str(job), 0)).exists()
    monkeypatch.setattr(vm, "_run_job", lambda *args: 0)  # the retried task runs the step
    assert vm.main([str(job)]) == 0
    assert json.loads(Path(exit_path(str(job), 0)).read_text())["code"] == 0
