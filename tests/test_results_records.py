"""What a step returns becomes its result record: NumPy values, tuples, paths, dataclasses
and nan/inf are converted; anything else fails the step naming the key path, with its
output folder left as it is; a record is capped in size and a job's is stored once."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from confpipe import Resources, StepSpec, load_result, run
from confpipe.backends import encode_result
from confpipe.backends.results import MAX_ARRAY_ITEMS, MAX_RESULT_BYTES, NotJSON, to_json
from confpipe.engine.status import StepState, read_status, result_path
from confpipe.errors import RunFailed, StepFailed
from confpipe.storage import store_for
from tests import recordfns


def test_a_numpy_mean_in_a_result_is_stored_as_a_float(tmp_path: Path) -> None:
    spec = StepSpec("stats", recordfns.numpy_mean)
    run(spec, prefix=str(tmp_path))
    value = load_result(spec.output_under(str(tmp_path)))
    assert value == {"mean": 4.5, "total": 45, "ok": True, "head": [0, 1, 2]}
    assert type(value["total"]) is int and type(value["ok"]) is bool


def test_tuples_paths_dataclasses_and_nan_round_trip_through_load_result(tmp_path: Path) -> None:
    spec = StepSpec("mixed", recordfns.mixed)
    run(spec, prefix=str(tmp_path))
    out = spec.output_under(str(tmp_path))
    value = load_result(out)
    assert value["pair"] == [1, 0.5]
    assert math.isnan(value["stats"]["mean"])
    assert value["stats"]["where"] == f"{out}/model.bin"
    assert value["bounds"] == [-math.inf, math.inf]
    assert b'"mean": NaN' in Path(result_path(out)).read_bytes()  # the documented form


def test_a_tensor_in_a_result_fails_the_step_naming_its_key_and_keeps_the_files(
    tmp_path: Path,
) -> None:
    spec = StepSpec("train", recordfns.tensor_after_work)
    with pytest.raises(RunFailed) as info:
        run(spec, prefix=str(tmp_path))
    message = str(info.value)
    assert 'result["stats"][2]: a Tensor (tests.recordfns.Tensor) is not JSON' in message
    assert "write it to a file in output_path" in message
    out = spec.output_under(str(tmp_path))
    assert Path(out, "weights.bin").read_bytes() == b"expensive"  # the work is not lost
    status = read_status(store_for(out), out)
    assert status is not None and status.state is StepState.FAILED and status.returned
    assert not Path(result_path(out)).exists()
    Path(out, "checkpoint.bin").write_bytes(b"resume from here")
    plan = run(spec, prefix=str(tmp_path), dry_run=True).plan[0]
    assert plan.reason.endswith("; its files are kept")
    with pytest.raises(RunFailed):  # its retry keeps the files: the work is done
        run(spec, prefix=str(tmp_path))
    assert Path(out, "checkpoint.bin").exists()


def test_key_paths_name_nested_values_and_arrays_over_the_cap_are_refused() -> None:
    with pytest.raises(NotJSON, match=r'^result\["a"\]\[1\]\["b"\]: an object \(object\)'):
        to_json({"a": [0, {"b": object()}]})
    with pytest.raises(NotJSON, match=r"array of 10,001 elements .* \(numpy\.save\)"):
        to_json({"big": np.zeros(MAX_ARRAY_ITEMS + 1)})
    assert to_json(np.zeros((2, 2), dtype=np.float32)) == [[0.0, 0.0], [0.0, 0.0]]
    with pytest.raises(NotJSON, match=r"^result\[0\]\[0\]: refers to itself"):
        loop: list[object] = []
        loop.append(loop)
        to_json([loop])
    with pytest.raises(NotJSON, match=r"the key \(1, 2\)"):
        to_json({(1, 2): 3})


def test_a_result_over_ten_mib_is_refused_with_a_hint_to_write_files(tmp_path: Path) -> None:
    with pytest.raises(StepFailed, match=r"over the 10.0 MiB a result may hold; .* output_path"):
        encode_result("s", "x" * MAX_RESULT_BYTES)
    spec = StepSpec("huge", recordfns.huge)
    with pytest.raises(RunFailed, match=r"over the 10\.0 MiB"):
        run(spec, prefix=str(tmp_path))


@pytest.mark.slow
def test_a_job_converts_numpy_and_refuses_a_tensor_naming_its_key(tmp_path: Path) -> None:
    good = StepSpec("stats", recordfns.numpy_mean, resources=Resources())
    run(good, prefix=str(tmp_path))
    assert load_result(good.output_under(str(tmp_path)))["mean"] == 4.5
    bad = StepSpec("train", recordfns.tensor_after_work, resources=Resources())
    with pytest.raises(RunFailed, match=r'result\["stats"\]\[2\]: a Tensor .* is not JSON'):
        run(bad, prefix=str(tmp_path))
    out = bad.output_under(str(tmp_path))
    assert Path(out, "weights.bin").exists()
    status = read_status(store_for(out), out)
    assert status is not None and status.returned


@pytest.mark.slow
def test_a_jobs_result_is_stored_once_moved_into_the_steps_record(tmp_path: Path) -> None:
    spec = StepSpec("big", recordfns.big_bytes, resources=Resources())
    run(spec, prefix=str(tmp_path))
    out = Path(spec.output_under(str(tmp_path)))
    records = [p for p in out.rglob("result.json")]
    assert records == [out / ".confpipe" / "result.json"]
    assert len(json.loads(records[0].read_bytes())["value"]) == 4 * 1024 * 1024


def test_enum_members_in_a_result_are_stored_as_their_values() -> None:
    """A str- or int-mixin Enum member is its value, as json.dumps writes it ("red", 3)."""
    from enum import Enum, IntEnum

    class Colour(str, Enum):  # noqa: UP042 (the str mixin is what users write)
        RED = "red"

    class Size(IntEnum):
        BIG = 3

    assert json.loads(json.dumps(to_json({"c": Colour.RED, "s": Size.BIG, "ok": True}))) == {
        "c": "red", "s": 3, "ok": True,
    }  # fmt: skip
