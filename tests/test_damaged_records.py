"""A damaged record is "unknown", never a crash: planning names the file and what was wrong,
the step runs again under its lease (writing over the bad record by its version), unrelated
steps are untouched, and a damaged result.json is refused where it is read."""

from __future__ import annotations

from pathlib import Path

import pytest

from confpipe import StepSpec, load_result, run
from confpipe.engine.options import RunOptions
from confpipe.engine.outcome import Outcome
from confpipe.engine.pipeline import survey
from confpipe.engine.status import StepState, read_status, result_path, status_path
from confpipe.errors import ConfpipeError
from confpipe.storage import store_for
from tests import stepfns

DAMAGE = {
    "empty": (b"", "empty"),
    "truncated": (b'{"state": "SUCC', "not JSON"),
    "garbage": (b"\xff\xfe\x00garbage", "not JSON"),
    "a list": (b"[]", "not a status record: a JSON list"),
    "unknown state": (b'{"state": "DONE"}', "no known state: 'DONE'"),
    "missing fields": (b'{"state": "SUCCESS"}', "no 'worker'"),
    "wrong type": (b'{"state": "SUCCESS", "worker": "w", "time": "noon"}', "'time' is \"noon\""),
}


def two_steps() -> tuple[StepSpec, StepSpec]:
    return StepSpec("a", stepfns.add, {"a": 1, "b": 2}), StepSpec(
        "b", stepfns.add, {"a": 3, "b": 4}
    )


@pytest.mark.parametrize("kind", sorted(DAMAGE))
def test_a_damaged_status_record_is_named_in_the_plan_and_the_step_reruns(
    tmp_path: Path, kind: str
) -> None:
    a, b = two_steps()
    prefix = str(tmp_path)
    run([a, b], prefix=prefix)
    out = a.output_under(prefix)
    data, why = DAMAGE[kind]
    Path(status_path(out)).write_bytes(data)
    Path(out, "kept.bin").write_text("maybe a finished output")

    dry = run([a, b], prefix=prefix, dry_run=True)
    plans = {p.spec.name: p for p in dry.plan}
    assert plans["a"].state is Outcome.WILL_RUN
    assert plans["a"].reason == f"unreadable record {status_path(out)} ({why}): will re-run"
    assert plans["b"].state is Outcome.CACHED  # one bad record blocks nothing else

    summary = run([a, b], prefix=prefix)
    assert summary.ran == [a.identity]
    status = read_status(store_for(out), out)
    assert status is not None and status.state is StepState.SUCCESS
    assert load_result(out) == 3
    assert Path(out, "kept.bin").exists()  # the record may have said SUCCESS: nothing cleared


def test_a_damaged_status_record_is_shown_by_the_commands_that_look_back(tmp_path: Path) -> None:
    from confpipe.cli.commands import words
    from confpipe.cli.history import gather

    a, b = two_steps()
    run([a, b], prefix=str(tmp_path))
    out = a.output_under(str(tmp_path))
    Path(status_path(out)).write_bytes(b"[]")
    Path(result_path(b.output_under(str(tmp_path)))).write_bytes(b"{trunc")
    histories = {h.plan.spec.name: h for h in gather(survey([a, b], RunOptions(str(tmp_path))))}
    assert (
        histories["a"].error
        == f"unreadable record {status_path(out)} (not a status record: a JSON list)"
    )
    assert words.state(histories["a"]) == "unreadable record"
    assert histories["a"].status is not None and histories["a"].status.time > 0  # its mtime
    assert not histories["b"].has_result
    assert histories["b"].error is not None and "unreadable result record" in histories["b"].error


def test_load_result_of_a_damaged_result_record_names_the_file(tmp_path: Path) -> None:
    a, _ = two_steps()
    run(a, prefix=str(tmp_path))
    out = a.output_under(str(tmp_path))
    for data in (b"", b"not json", b"[1, 2]", b'{"no value": 1}'):
        Path(result_path(out)).write_bytes(data)
        with pytest.raises(ConfpipeError) as info:
            load_result(out)
        message = str(info.value)
        assert message.startswith(f"unreadable result record {result_path(out)} (")
        assert "\n" not in message and f"remove {status_path(out)}" in message


@pytest.mark.parametrize("damage", [b"", b"{trunc", b"[1, 2]", None])
def test_a_damaged_result_under_success_is_not_a_success_when_a_dependent_runs(
    tmp_path: Path, damage: bytes | None
) -> None:
    up = StepSpec("up", stepfns.add, {"a": 1, "b": 2})
    down = StepSpec("down", stepfns.scored, {"x": 1.0, "up": up})
    prefix = str(tmp_path)
    run(up, prefix=prefix)
    out = up.output_under(prefix)
    Path(out, "kept.bin").write_text("its files")
    if damage is None:
        Path(result_path(out)).unlink()
    else:
        Path(result_path(out)).write_bytes(damage)
    plans = {p.spec.name: p for p in run(down, prefix=prefix, dry_run=True).plan}
    assert plans["up"].state is Outcome.WILL_RUN
    assert plans["up"].reason.startswith(f"unreadable record {result_path(out)} (")
    summary = run(down, prefix=prefix)
    assert sorted(summary.ran) == sorted([up.identity, down.identity])
    assert load_result(out) == 3
    assert Path(out, "kept.bin").exists()  # a succeeded step's files are never cleared


def test_a_fully_cached_run_reads_no_result_records(tmp_path: Path) -> None:
    up = StepSpec("up", stepfns.add, {"a": 1, "b": 2})
    run(up, prefix=str(tmp_path))
    Path(result_path(up.output_under(str(tmp_path)))).write_bytes(b"garbage")
    summary = run(up, prefix=str(tmp_path))  # one read a step: only its reader will know
    assert summary.cached == [up.identity]
    with pytest.raises(ConfpipeError, match="unreadable result record"):
        load_result(up.output_under(str(tmp_path)))
