"""A failure that can't be recorded (a full disk) keeps the step's own error in the report,
names the cause, and the next plan says the failure was not recorded."""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from confpipe import StepSpec, run
from confpipe.engine.report import failure_lines
from confpipe.engine.status import StepState, read_status, status_path
from confpipe.errors import RunFailed
from confpipe.storage import store_for
from tests import recordfns


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 256 KiB tmpfs (root only: skipped where mount is refused)."""
    where = tmp_path / f"disk-{uuid.uuid4().hex[:6]}"
    where.mkdir()
    mount = ["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(where)]
    if os.geteuid() != 0 or subprocess.run(mount, capture_output=True).returncode != 0:
        pytest.skip("mounting a small tmpfs needs root (and a kernel that lets us)")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def test_a_failure_on_a_full_disk_keeps_its_error_and_the_next_plan_says_so(
    small_disk: Path, tmp_path: Path
) -> None:
    spec = StepSpec("fill", recordfns.fill_then_fail, {"flag": str(tmp_path / "flag")})
    prefix = str(small_disk / "runs")
    with pytest.raises(RunFailed) as info:
        run(spec, prefix=prefix)
    out = spec.output_under(prefix)
    error = info.value.failures["fill"]
    assert isinstance(error, ValueError) and str(error) == "the step's own error"
    cause = f"no space left on device while writing {status_path(out)}"
    assert error.unrecorded == cause  # type: ignore[attr-defined]
    lines = failure_lines(run(spec, prefix=prefix, dry_run=True).plan[0], error)
    assert lines[0] == "failed: fill: ValueError: the step's own error"
    assert lines[-1] == f"  error: not recorded ({cause})"
    status = read_status(store_for(out), out)
    assert status is not None and status.state is StepState.RUNNING

    Path(out, "filler").unlink()  # room again: the next plan says what happened
    plan = run(spec, prefix=prefix, dry_run=True).plan[0]
    assert plan.reason == "interrupted: could not record the failure (its records' disk was full)"
    with pytest.raises(RunFailed, match="again"):  # the retry runs; its failure is recorded
        run(spec, prefix=prefix)
    assert not Path(out, ".confpipe", "unrecorded.txt").exists()
    status = read_status(store_for(out), out)
    assert status is not None and status.state is StepState.FAILED


def test_a_result_that_cant_be_written_fails_the_step_naming_the_cause(tmp_path: Path) -> None:
    spec = StepSpec("big", recordfns.big_bytes, {"mib": 1})
    prefix = str(tmp_path)
    out = Path(spec.output_under(prefix))
    (out / ".confpipe" / "result.json").mkdir(parents=True)  # in the way of the record
    with pytest.raises(RunFailed, match=r"could not record its result: .* while writing .*result"):
        run(spec, prefix=prefix)
    status = read_status(store_for(str(out)), str(out))
    assert status is not None and status.state is StepState.FAILED
    assert status.error is not None and "could not record its result" in status.error
