"""A retried step starts from an empty output folder (its records aside); a folder without a
record of the step is never cleared."""

from __future__ import annotations

from pathlib import Path

import pytest

from confpipe import StepSpec, load_result, run
from confpipe.engine.cache import Records
from confpipe.engine.status import Status, StepState
from confpipe.errors import RunFailed
from confpipe.storage import store_for
from tests import recordfns


def test_a_retried_step_starts_from_an_empty_folder(tmp_path: Path) -> None:
    spec = StepSpec("train", recordfns.partial_then_fail, {"flag": str(tmp_path / "flag")})
    prefix = str(tmp_path / "runs")
    with pytest.raises(RunFailed, match="first attempt fails"):
        run(spec, prefix=prefix)
    out = Path(spec.output_under(prefix))
    assert (out / "first.part").exists()
    (out / "sub").mkdir()
    (out / "sub" / "deep.part").write_text("x")
    (out / "link").symlink_to(tmp_path)  # removed, never followed
    run(spec, prefix=prefix)
    assert load_result(str(out)) == [".confpipe", "second.part"]
    assert (out / ".confpipe" / "info.json").exists()


def test_a_folder_given_by_hand_without_a_record_is_never_cleared(tmp_path: Path) -> None:
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("the user's")
    spec = StepSpec("look", recordfns.listing, output_path=str(mine))
    run(spec, prefix=str(tmp_path / "runs"))
    assert load_result(str(mine)) == ["notes.txt"]
    assert (mine / "notes.txt").read_text() == "the user's"


def test_a_step_not_run_for_a_failed_dependency_is_cleared_when_it_runs(tmp_path: Path) -> None:
    spec = StepSpec("look", recordfns.listing)
    prefix = str(tmp_path)
    out = Path(spec.output_under(prefix))
    (out / ".confpipe").mkdir(parents=True)
    record = Status(StepState.DEP_FAILED, "me", 1.0, failed_dep="up", hash=spec.hash)
    (out / ".confpipe" / "status.json").write_bytes(record.to_json())
    (out / "stale.part").write_text("x")
    run(spec, prefix=prefix)
    assert load_result(str(out)) == []


def test_a_retry_on_gcs_starts_from_an_empty_folder(gs_prefix: str, tmp_path: Path) -> None:
    spec = StepSpec("up", recordfns.remote_listing, {"flag": str(tmp_path / "flag")})
    with pytest.raises(RunFailed, match="boom"):
        run(spec, prefix=gs_prefix)
    out = spec.output_under(gs_prefix)
    fs = store_for(out).fs
    fs.pipe_file(f"{out}/deeper/old.part", b"x")
    run(spec, prefix=gs_prefix)
    assert load_result(out) == []  # neither new.part of the first attempt nor deeper/
    names = sorted(str(p).rstrip("/").rsplit("/", 1)[-1] for p in fs.ls(out, refresh=True))
    assert names == [".confpipe", "new.part"]


def test_a_cloud_job_that_may_still_run_keeps_its_files_on_retry() -> None:
    records = Records(store_for("/tmp"), StepSpec("s", recordfns.listing), "me", reattaches=True)
    running = Status(StepState.RUNNING, "other", 1.0)
    interrupted = Status(StepState.FAILED, "other", 1.0, interrupted=True)
    failed = Status(StepState.FAILED, "other", 1.0, error="E")
    assert not records._fresh(running) and not records._fresh(interrupted)
    assert records._fresh(failed) and not records._fresh(Status.unknown("x (not JSON)"))
    records.reattaches = False
    assert records._fresh(running) and records._fresh(interrupted)
    assert not records._fresh(Status(StepState.SUCCESS, "other", 1.0))
