"""run(): caching, failure isolation, DEP_FAILED records, force_run_failed, run_only, dry run."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytest

from confpipe import (
    ConfigError,
    PreviousFailure,
    Resources,
    RunFailed,
    StepSpec,
    StepState,
    load_result,
    run,
)
from confpipe.backends.local import LocalBackend
from confpipe.engine.status import read_status, status_path
from confpipe.storage import store_for
from tests import stepfns


def calls(log: Path) -> list[str]:
    return [line.split()[0] for line in log.read_text().splitlines()] if log.exists() else []


def chain(log: Path) -> list[StepSpec]:
    a = StepSpec("a", stepfns.record, {"log": str(log), "name": "a"})
    b = StepSpec("b", stepfns.record, {"log": str(log), "name": "b"}, deps=(a,))
    c = StepSpec("c", stepfns.record, {"log": str(log), "name": "c", "up": b})
    d = StepSpec("d", stepfns.record, {"log": str(log), "name": "d"})
    return [a, b, c, d]


def state(output: str) -> StepState | None:
    status = read_status(store_for(output), output)
    return None if status is None else status.state


def test_results_records_and_cached_rerun(tmp_path: Path) -> None:
    log = tmp_path / "calls.log"
    steps = chain(log)
    summary = run(steps, prefix=str(tmp_path / "out"))
    assert sorted(calls(log)) == ["a", "b", "c", "d"]
    assert len(summary.ran) == 4 and not summary.cached
    out_c = summary.outputs["c"]
    assert load_result(out_c) == "c"
    assert Path(out_c, "out.txt").read_text() == "c"
    assert state(out_c) is StepState.SUCCESS
    info = json.loads(Path(out_c, ".confpipe", "info.json").read_text())
    assert info["fn"] == "tests.stepfns.record"
    assert info["deps"] == {"b": steps[1].identity}
    assert info["config"]["up"] == {"$step": steps[1].identity}
    assert {"user", "argv", "time", "git_commit", "hash_inputs"} <= info.keys()
    assert not Path(out_c, ".confpipe", "lease.json").exists()

    again = run(chain(log), prefix=str(tmp_path / "out"))
    assert len(calls(log)) == 4
    assert not again.ran and len(again.cached) == 4


def test_equal_steps_run_once(tmp_path: Path) -> None:
    log = tmp_path / "calls.log"
    twins = [StepSpec("x", stepfns.record, {"log": str(log), "name": "x"}) for _ in range(3)]
    run(twins, prefix=str(tmp_path))
    assert calls(log) == ["x"]


def test_failure_fails_only_its_dependents(tmp_path: Path) -> None:
    log = tmp_path / "calls.log"
    a = StepSpec("a", stepfns.fail)
    b = StepSpec("b", stepfns.record, {"log": str(log), "name": "b", "up": a})
    c = StepSpec("c", stepfns.record, {"log": str(log), "name": "c", "up": b})
    x = StepSpec("x", stepfns.record, {"log": str(log), "name": "x"})
    with pytest.raises(RunFailed) as info:
        run([c, x], prefix=str(tmp_path))
    err = info.value
    assert list(err.failures) == ["a"] and err.dep_failed == {"b": "a", "c": "a"}
    assert isinstance(err.__cause__, ValueError)
    assert "this step is broken on purpose" in str(err)
    assert calls(log) == ["x"]
    out = {s.name: s.output_under(str(tmp_path)) for s in (a, b, c, x)}
    failed = read_status(store_for(out["a"]), out["a"])
    assert failed is not None and failed.state is StepState.FAILED
    assert failed.traceback and "ValueError" in failed.traceback
    for name in ("b", "c"):
        dep = read_status(store_for(out[name]), out[name])
        assert dep is not None and dep.state is StepState.DEP_FAILED and dep.failed_dep == "a"
    assert state(out["x"]) is StepState.SUCCESS


def test_force_run_failed_both_ways(tmp_path: Path) -> None:
    flag = tmp_path / "flag"
    flag.touch()
    step = StepSpec("flaky", stepfns.fail_once, {"flag": str(flag)})
    out = step.output_under(str(tmp_path))
    with pytest.raises(RunFailed):
        run(step, prefix=str(tmp_path))
    flag.unlink()
    with pytest.raises(PreviousFailure, match="force_run_failed=true"):
        run(step, prefix=str(tmp_path), force_run_failed=False)
    assert state(out) is StepState.FAILED  # nothing ran
    run(step, prefix=str(tmp_path), force_run_failed=True)
    assert state(out) is StepState.SUCCESS and load_result(out) == "fixed"


def test_run_only_runs_matches_and_their_deps(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    log = tmp_path / "calls.log"
    with caplog.at_level(logging.WARNING, logger="confpipe"):
        run(chain(log), prefix=str(tmp_path), run_only=["b", "nothing-matches"])
    assert sorted(calls(log)) == ["a", "b"]
    assert "'nothing-matches' matches no step" in caplog.text
    with pytest.raises(ConfigError, match=r"run_only\[0\]: '' is not a step name or shell glob"):
        run(chain(log), prefix=str(tmp_path), run_only=[""])
    with pytest.raises(ConfigError, match=r"run_only: .* matches no step; steps: a, b, c, d"):
        run(chain(log), prefix=str(tmp_path / "none"), run_only=["bb"])
    assert not (tmp_path / "none").exists()


def test_succeeded_subtrees_are_pruned(tmp_path: Path) -> None:
    log = tmp_path / "calls.log"
    steps = chain(log)
    run(steps, prefix=str(tmp_path))
    # b's dependency disappears, but b succeeded: nothing under it needs to run again
    out_a = steps[0].output_under(str(tmp_path))
    os.remove(status_path(out_a))
    summary = run(steps[2], prefix=str(tmp_path))
    assert len(calls(log)) == 4 and not summary.ran


def snapshot(root: Path) -> dict[str, float]:
    return {str(p): p.stat().st_mtime_ns for p in root.rglob("*")}


def test_dry_run_writes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    log = tmp_path / "calls.log"
    prefix = tmp_path / "out"
    summary = run(chain(log), prefix=str(prefix), dry_run=True)
    assert not prefix.exists() and not log.exists()
    assert [p.state.value for p in summary.plan] == ["will run"] * 4
    run(chain(log)[:2], prefix=str(prefix))
    before = snapshot(tmp_path)
    summary = run(chain(log), prefix=str(prefix), dry_run=True)
    assert snapshot(tmp_path) == before
    table = capsys.readouterr().out
    assert "cached" in table and "will run" in table and "thread" in table
    assert {p.spec.name: p.state.value for p in summary.plan} == {
        "a": "cached", "b": "cached", "c": "will run", "d": "will run",
    }  # fmt: skip


def test_non_json_result_fails_the_step_clearly(tmp_path: Path) -> None:
    with pytest.raises(RunFailed, match=r"result: a set \(set\) is not JSON"):
        run(StepSpec("bad", stepfns.not_json), prefix=str(tmp_path))


def test_output_path_override_and_collisions(tmp_path: Path) -> None:
    target = tmp_path / "custom"
    step = StepSpec("a", stepfns.add, {"a": 1, "b": 2}, output_path=str(target))
    run(step, prefix=str(tmp_path / "p"))
    assert load_result(str(target)) == 3
    other = StepSpec("b", stepfns.add, {"a": 1, "b": 2}, output_path=str(target))
    with pytest.raises(ConfigError, match="both write to"):
        run([step, other], prefix=str(tmp_path / "p"))


def test_a_relative_output_path_is_under_the_prefix_and_cannot_leave_it(tmp_path: Path) -> None:
    step = StepSpec("a", stepfns.add, {"a": 1, "b": 2}, output_path="custom/./v1/")
    run(step, prefix=str(tmp_path / "p"))
    assert load_result(str(tmp_path / "p" / "custom" / "v1")) == 3
    for outside in ("..", "../x", "x/../../y", "."):
        with pytest.raises(ConfigError, match="is not a folder inside the prefix"):
            StepSpec("a", stepfns.add, {"a": 1, "b": 2}, output_path=outside)


def test_memory_prefix(tmp_path: Path) -> None:
    step = StepSpec("a", stepfns.add, {"a": 2, "b": 3})
    summary = run(step, prefix="memory://pipeline-test")
    assert load_result(summary.outputs["a"]) == 5
    assert run(step, prefix="memory://pipeline-test").cached == [step.identity]


def test_a_long_chain_given_by_its_last_step(tmp_path: Path) -> None:
    step = StepSpec("s0", stepfns.add, {"a": 0, "b": 1})
    for i in range(1, 3000):
        step = StepSpec(f"s{i}", stepfns.add, {"a": i, "b": 1}, deps=(step,))
    summary = run(step, prefix=str(tmp_path), dry_run=True)
    assert len(summary.plan) == 3000 and summary.plan[0].spec.name == "s0"


def test_a_run_resumes_on_top_of_cached_dependencies(tmp_path: Path) -> None:
    log = tmp_path / "calls.log"
    run(chain(log)[:2], prefix=str(tmp_path))
    summary = run(chain(log), prefix=str(tmp_path))
    assert sorted(calls(log)) == ["a", "b", "c", "d"]
    assert len(summary.ran) == 2 and len(summary.cached) == 2


def test_a_cache_miss_is_explained_against_the_closest_earlier_output(tmp_path: Path) -> None:
    prefix = str(tmp_path)
    run(StepSpec("s", stepfns.add, {"a": 1, "b": 1}), prefix=prefix)
    run(StepSpec("s", stepfns.add, {"a": 2, "b": 2}), prefix=prefix)  # the newest
    summary = run(StepSpec("s", stepfns.add, {"a": 1, "b": 3}), prefix=prefix, dry_run=True)
    (plan,) = summary.plan
    assert plan.reason == "changed: b: 1 -> 3"  # the newest differs in a and b


def test_dry_run_shows_a_failed_step_and_what_it_blocks_when_it_would_stop_the_run(
    tmp_path: Path,
) -> None:
    bad = StepSpec("bad", stepfns.fail)
    after = StepSpec("after", stepfns.noop, {"up": bad})
    other = StepSpec("other", stepfns.add, {"a": 1, "b": 2})
    with pytest.raises(RunFailed):
        run([after, other], prefix=str(tmp_path))
    summary = run([after, other], prefix=str(tmp_path), dry_run=True, force_run_failed=False)
    states = {p.label: (p.state.value, p.reason) for p in summary.plan}
    assert states["bad"][0] == "failed"
    assert "this step is broken on purpose" in states["bad"][1]
    assert "force_run_failed=false stops the run" in states["bad"][1]
    assert states["after"] == ("blocked", "blocked by bad")
    assert states["other"][0] == "cached"
    with pytest.raises(PreviousFailure):  # the real run stops, as the plan said
        run([after, other], prefix=str(tmp_path), force_run_failed=False)


def test_a_given_output_path_that_holds_another_configs_output_is_not_cached(
    tmp_path: Path,
) -> None:
    first = StepSpec("a", stepfns.add, {"a": 1, "b": 2}, output_path="fixed")
    run(first, prefix=str(tmp_path))
    changed = StepSpec("a", stepfns.add, {"a": 1, "b": 3}, output_path="fixed")
    plan = run(changed, prefix=str(tmp_path), dry_run=True).plan
    assert [p.state.value for p in plan] == ["will run"]
    assert run(changed, prefix=str(tmp_path)).ran == [changed.identity]
    assert load_result(str(tmp_path / "fixed")) == 4
    assert run(changed, prefix=str(tmp_path)).cached == [changed.identity]  # now it is


def test_a_prefix_that_cant_hold_folders_is_a_config_error_before_anything_runs(
    tmp_path: Path,
) -> None:
    (tmp_path / "afile").write_text("")
    log = tmp_path / "calls.log"
    with pytest.raises(ConfigError, match=r"afile is a file, not a folder; choose another prefix"):
        run(chain(log), prefix=str(tmp_path / "afile" / "runs"))
    elsewhere = StepSpec("e", stepfns.add, {"a": 1, "b": 1}, output_path=f"{tmp_path}/afile/e")
    with pytest.raises(ConfigError, match=r"afile is a file, not a folder"):
        run([*chain(log), elsewhere], prefix=str(tmp_path / "out"))  # an output_path outside
    assert calls(log) == [] and not (tmp_path / "out").exists()


def test_a_storage_failure_recording_a_dependent_does_not_stop_the_run(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    prefix, log = str(tmp_path / "out"), tmp_path / "calls.log"
    bad = StepSpec("bad", stepfns.block, {"path": f"{prefix}/after", "fail": True})
    after = StepSpec("after", stepfns.noop, {"up": bad}, output_path="after")  # blocked by bad
    other = StepSpec("other", stepfns.record, {"log": str(log), "name": "other"})
    with pytest.raises(RunFailed) as err:
        run([after, other], prefix=prefix)
    assert list(err.value.failures) == ["bad"] and err.value.dep_failed == {"after": "bad"}
    assert "step after: could not record that it was not run" in caplog.text
    assert calls(log) == ["other"]


@pytest.mark.slow  # the step runs as a local job: a subprocess
def test_run_closes_the_local_backend_it_made_but_not_one_it_was_given(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    closed: list[LocalBackend] = []
    monkeypatch.setattr(LocalBackend, "close", lambda self: closed.append(self))
    job = StepSpec("job", stepfns.add, {"a": 1, "b": 2}, resources=Resources(cpu=1))
    run(job, prefix=str(tmp_path))
    assert len(closed) == 1  # the one run() made for the step with resources
    given = LocalBackend()
    run(StepSpec("job", stepfns.add, {"a": 2, "b": 2}, resources=Resources(cpu=1)),
        prefix=str(tmp_path), backend=given)  # fmt: skip
    assert len(closed) == 1  # a backend given is its owner's to close


def test_where_a_job_runs_is_the_backends_own_word(tmp_path: Path) -> None:
    """The plan asks the backend where a job runs: the engine knows no backend's routing."""

    class Cluster(LocalBackend):
        def check(self, step: str, resources: Resources) -> str:
            super().check(step, resources)
            return "cluster"

    job = StepSpec("job", stepfns.noop, resources=Resources(cpu=1))
    local = StepSpec("local", stepfns.noop, {"up": job})
    summary = run(local, prefix=str(tmp_path), dry_run=True, backend=Cluster())
    assert {p.label: p.where for p in summary.plan} == {"job": "cluster", "local": "thread"}
