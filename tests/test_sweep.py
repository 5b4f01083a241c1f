"""``-m`` sweeps through the confpipe launcher: one DAG, in real ``python -m confpipe`` runs."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.slow  # every test runs the CLI in a real subprocess

ROOT = Path(__file__).resolve().parents[1]

SWEEP = """\
# @package _global_
steps:
  up:
    fn: tests.stepfns.record
    config: {log: "${oc.env:CALLS_LOG}", name: up}
  down:
    fn: tests.stepfns.record
    config: {log: "${oc.env:CALLS_LOG}", name: "down-${.lr}", lr: 1, up: "${step:up}"}
"""

FLAKY = (
    SWEEP
    + """\
  bad:
    fn: tests.stepfns.record
    config: {log: "${oc.env:CALLS_LOG}", name: "bad", up: "${step:down}"}
"""
)


def sweep(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "CALLS_LOG": str(cwd / "calls.log")}
    env.pop("CONFPIPE_FULL_ERROR", None)
    env["TMPDIR"] = str(cwd / "tmp")  # where Hydra's sweep folder goes by default
    (cwd / "tmp").mkdir(exist_ok=True)
    return subprocess.run(
        [sys.executable, "-m", "confpipe", "--config-dir", "confs", *args],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


@pytest.fixture
def work(tmp_path: Path) -> Path:
    confs = tmp_path / "confs" / "experiment"
    confs.mkdir(parents=True)
    (confs / "sweep.yaml").write_text(SWEEP)
    return tmp_path


def calls(work: Path) -> Counter[str]:
    path = work / "calls.log"
    lines = path.read_text().splitlines() if path.exists() else []
    return Counter(line.split()[0] for line in lines)


def test_sweep_runs_shared_upstream_once_and_each_point_once(work: Path) -> None:
    out = sweep("+experiment=sweep", "-m", "steps.down.config.lr=1,2,3", cwd=work)
    assert out.returncode == 0, out.stderr
    assert calls(work) == {"up": 1, "down-1": 1, "down-2": 1, "down-3": 1}
    assert "summary: 4 ran, 0 cached, 0 failed" in out.stderr
    assert sorted(p.name for p in work.iterdir()) == ["calls.log", "confs", "outputs", "tmp"]
    assert list((work / "tmp").iterdir()) == []  # Hydra's folder is gone, confpipe-sweeps too


def test_an_empty_sweep_is_a_config_error_naming_the_empty_override(work: Path) -> None:
    out = sweep(
        "+experiment=sweep", "-m", "steps.down.config.lr=range(0)", "+steps.down.config.x=1,2",
        cwd=work,
    )  # fmt: skip
    assert out.returncode == 2, out.stderr
    assert out.stderr.startswith(
        "confpipe: error: -m: steps.down.config.lr=range(0) has no values, so the sweep has no "
        "points to run"
    )
    assert not (work / "outputs").exists() and calls(work) == {}


def test_sweep_points_share_one_process(work: Path) -> None:
    out = sweep("+experiment=sweep", "-m", "steps.down.config.lr=1,2", cwd=work)
    assert out.returncode == 0, out.stderr
    pids = {line.split()[1] for line in (work / "calls.log").read_text().splitlines()}
    assert len(pids) == 1  # one launch, one DAG: no job per point


def test_rerunning_a_sweep_runs_nothing(work: Path) -> None:
    assert sweep("+experiment=sweep", "-m", "steps.down.config.lr=1,2,3", cwd=work).returncode == 0
    again = sweep("+experiment=sweep", "-m", "steps.down.config.lr=1,2,3", cwd=work)
    assert again.returncode == 0, again.stderr
    assert calls(work) == {"up": 1, "down-1": 1, "down-2": 1, "down-3": 1}
    assert "plan: 3 sweep points -> 4 unique steps, 4 cached, 0 to run" in again.stderr


def test_extending_a_sweep_runs_only_the_new_point(work: Path) -> None:
    assert sweep("+experiment=sweep", "-m", "steps.down.config.lr=1,2,3", cwd=work).returncode == 0
    more = sweep("+experiment=sweep", "-m", "steps.down.config.lr=1,2,3,4", cwd=work)
    assert more.returncode == 0, more.stderr
    assert calls(work) == {"up": 1, "down-1": 1, "down-2": 1, "down-3": 1, "down-4": 1}
    assert "summary: 1 ran, 4 cached, 0 failed" in more.stderr


def test_sweep_points_hash_like_single_runs(work: Path) -> None:
    """A point's config built by the launcher equals Hydra's own compose of that point."""
    assert sweep("+experiment=sweep", "-m", "steps.down.config.lr=1,2", cwd=work).returncode == 0
    single = sweep("+experiment=sweep", "steps.down.config.lr=2", cwd=work)  # not a sweep
    assert single.returncode == 0, single.stderr
    assert "plan: 2 steps, 2 cached, 0 to run" in single.stderr


def test_group_override_in_a_sweep_is_composed_by_hydra(work: Path) -> None:
    other = work / "confs" / "experiment" / "other.yaml"
    other.write_text(SWEEP.replace("name: up", "name: up2"))
    out = sweep("-m", "+experiment=sweep,other", cwd=work)
    assert out.returncode == 0, out.stderr
    assert calls(work) == {"up": 1, "up2": 1, "down-1": 2}


def flaky(work: Path) -> None:
    """Add the experiment whose step ``bad`` fails in the points that choose stepfns.fail."""
    (work / "confs" / "experiment" / "flaky.yaml").write_text(FLAKY)


def test_a_failing_point_exits_1_and_the_others_complete(work: Path) -> None:
    flaky(work)
    out = sweep(
        "+experiment=flaky", "-m", "steps.bad.fn=tests.stepfns.record,tests.stepfns.fail",
        "steps.down.config.lr=1,2", cwd=work,
    )  # fmt: skip
    assert out.returncode == 1, out.stderr
    assert calls(work) == {"up": 1, "down-1": 1, "down-2": 1, "bad": 2}
    assert "this step is broken on purpose" in out.stderr
    assert "summary: 5 ran, 0 cached, 2 failed" in out.stderr


def test_with_hydras_basic_launcher_a_failing_point_doesnt_stop_the_others(work: Path) -> None:
    flaky(work)
    out = sweep(
        "+experiment=flaky", "-m", "hydra/launcher=basic",
        "steps.bad.fn=tests.stepfns.fail,tests.stepfns.record", cwd=work,
    )  # fmt: skip
    assert out.returncode == 1, out.stderr
    assert calls(work)["bad"] == 1  # the second point ran after the first failed
    assert out.stderr.endswith(  # one line naming every failed point, not Hydra's first error
        "\nconfpipe: 1 sweep point failed: fn=tests.stepfns.fail: bad: ValueError: this step "
        "is broken on purpose\n"
    )
    assert "confpipe: error: " not in out.stderr and "Error executing job" not in out.stderr


def test_run_options_that_differ_between_points_are_refused(work: Path) -> None:
    out = sweep("+experiment=sweep", "-m", "max_concurrent=1,2", cwd=work)
    assert out.returncode == 2
    assert "max_concurrent: run options differ between sweep points" in out.stderr
    assert out.stderr.count("\n") == 1
    assert not (work / "outputs").exists()


def test_confpipe_sweeper_leaves_checking_points_to_the_launcher(work: Path) -> None:
    args = ("+experiment=sweep", "hydra/sweeper=confpipe", "-m", "steps.down.config.lr=1,2")
    out = sweep(*args, cwd=work)
    assert out.returncode == 0, out.stderr
    assert calls(work) == {"up": 1, "down-1": 1, "down-2": 1}
    typo = sweep("+experiment=sweep", "hydra/sweeper=confpipe", "-m", "steps.down.confg.lr=1,2",
                 cwd=work)  # fmt: skip
    assert typo.returncode == 2, typo.stderr
    assert calls(work) == {"up": 1, "down-1": 1, "down-2": 1}


SCORED = """\
# @package _global_
steps:
  up:
    fn: tests.stepfns.record
    config: {log: "${oc.env:CALLS_LOG}", name: up, sleep: 0.0}
  score:
    fn: tests.stepfns.scored
    config: {x: 0.0, up: "${step:up}"}
"""


@pytest.fixture
def scored(work: Path) -> Path:
    (work / "confs" / "experiment" / "scored.yaml").write_text(SCORED)
    return work


def results_files(work: Path) -> list[tuple[list[dict[str, str]], list[dict[str, object]]]]:
    """Each launch's results: (CSV rows, JSON rows), oldest first."""
    found = []
    for path in sorted(
        (work / "outputs" / "sweeps").glob("*.csv"), key=lambda p: p.stat().st_mtime
    ):
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
        found.append((rows, json.loads(path.with_suffix(".json").read_text())))
    return found


def test_results_table_and_files_give_each_points_metrics(scored: Path) -> None:
    out = sweep("+experiment=scored", "-m", "steps.score.config.x=1,2,4", cwd=scored)
    assert out.returncode == 0, out.stderr
    assert "plan: 3 sweep points -> 4 unique steps, 0 cached, 4 to run" in out.stderr
    [(rows, records)] = results_files(scored)
    # default metrics: every number the points' last steps returned, at full precision
    assert [(r["overrides"], r["status"], r["score.loss"], r["score.x"]) for r in rows] == [
        ("steps.score.config.x=1", "ran", "1.0", "1.0"),  # x: float, so 1 is passed as 1.0
        ("steps.score.config.x=2", "ran", "0.0", "2.0"),
        ("steps.score.config.x=4", "ran", "4.0", "4.0"),
    ]
    assert records[2] == {
        "overrides": ["steps.score.config.x=4"], "status": "ran",
        "metrics": {"score.loss": 4.0, "score.x": 4.0}, "error": "",
    }  # fmt: skip
    for line in ("steps.score.config.x=4", "score.loss", "results: outputs/sweeps/"):
        assert line in out.stderr
    again = sweep("+experiment=scored", "-m", "steps.score.config.x=1,2,4",
                  "sweep.metrics=[score.loss]", cwd=scored)  # fmt: skip
    assert again.returncode == 0, again.stderr
    rows = results_files(scored)[-1][0]
    assert [(r["status"], r["score.loss"]) for r in rows] == [("cached", "1.0"), ("cached", "0.0"),
                                                             ("cached", "4.0")]  # fmt: skip
    assert "score.x" not in rows[0]
    typo = sweep("+experiment=scored", "-m", "steps.score.config.x=1,2",
                 "sweep.metrics=[score.los]", cwd=scored)  # fmt: skip
    assert typo.returncode == 0, typo.stderr
    assert "sweep.metrics: score.los is in no point's results; check the key" in typo.stderr


def test_a_metric_naming_no_step_is_a_config_error(scored: Path) -> None:
    out = sweep("+experiment=scored", "-m", "steps.score.config.x=1,2",
                "sweep.objective=scroe.loss", cwd=scored)  # fmt: skip
    assert out.returncode == 2, out.stderr
    assert out.stderr.count("\n") == 1
    assert "sweep.objective: 'scroe.loss' names no step (did you mean 'score'?)" in out.stderr
    assert not (scored / "outputs").exists()


def test_a_point_without_its_objective_fails_and_says_why(scored: Path) -> None:
    out = sweep("+experiment=scored", "-m", "steps.score.config.x=1,2",
                "sweep.objective=score.nope", cwd=scored)  # fmt: skip
    assert out.returncode == 1, out.stderr
    assert "sweep.objective: score.nope is None for point steps.score.config.x=1" in out.stderr
    rows = results_files(scored)[0][0]
    assert all(r["status"] == "ran" and "score.nope is None" in r["error"] for r in rows)


def test_a_failed_point_shows_in_the_results(work: Path) -> None:
    flaky(work)
    out = sweep("+experiment=flaky", "-m", "steps.bad.fn=tests.stepfns.record,tests.stepfns.fail",
                cwd=work)  # fmt: skip
    assert out.returncode == 1
    rows = results_files(work)[0][0]
    assert [(r["overrides"], r["status"]) for r in rows] == [
        ("steps.bad.fn=tests.stepfns.record", "ran"),
        ("steps.bad.fn=tests.stepfns.fail", "failed"),
    ]
    assert rows[1]["error"] == "bad: ValueError: this step is broken on purpose"


def test_points_run_side_by_side(work: Path) -> None:
    """Four points that each sleep a second all start before the first one ends."""
    four = sweep("+experiment=sweep", "-m", "steps.down.config.sleep=1.0",
                 "steps.down.config.lr=2,3,4,5", cwd=work)  # fmt: skip
    assert four.returncode == 0, four.stderr
    assert calls(work) == {"up": 1, "down-2": 1, "down-3": 1, "down-4": 1, "down-5": 1}
    lines = (work / "calls.log").read_text().splitlines()
    starts = sorted(float(line.split()[2]) for line in lines if line.startswith("down-"))
    assert starts[-1] - starts[0] < 0.9, f"starts {starts}: the points ran one after another"


def test_sweep_params_in_the_experiment_yaml(work: Path) -> None:
    (work / "confs" / "experiment" / "grid.yaml").write_text(
        SWEEP + "hydra:\n  sweeper:\n    params:\n      steps.down.config.lr: 7,8\n"
    )
    out = sweep("+experiment=grid", "-m", cwd=work)
    assert out.returncode == 0, out.stderr
    assert calls(work) == {"up": 1, "down-7": 1, "down-8": 1}
    assert "plan: 2 sweep points -> 3 unique steps" in out.stderr


def test_overlapping_sweeps_launched_at_once_share_their_common_steps(work: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "CALLS_LOG": str(work / "calls.log")}
    base = [sys.executable, "-m", "confpipe", "--config-dir", "confs", "+experiment=sweep",
            "steps.up.config.sleep=1.5", "steps.down.config.sleep=0.5", "-m"]  # fmt: skip
    both = [
        subprocess.Popen([*base, f"steps.down.config.lr={lrs}"], cwd=work, env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for lrs in ("1,2", "2,3")
    ]  # fmt: skip
    for proc in both:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
    assert calls(work) == {"up": 1, "down-1": 1, "down-2": 1, "down-3": 1}


def optuna_search(scored: Path, sweep_dir: Path) -> subprocess.CompletedProcess[str]:
    """Six Optuna trials in batches of three, minimizing score.loss over x."""
    return sweep(
        "+experiment=scored", "-m", "hydra/sweeper=optuna", "hydra.sweeper.n_trials=6",
        "hydra.sweeper.n_jobs=3", "hydra.sweeper.sampler.seed=7",
        "steps.score.config.x=interval(-4,4)", "sweep.objective=score.loss",
        f"hydra.sweep.dir={sweep_dir}", cwd=scored,
    )  # fmt: skip


def test_an_optuna_search_runs_each_batch_as_one_dag(scored: Path) -> None:
    sweep_dir = scored / "optuna"
    out = optuna_search(scored, sweep_dir)
    assert out.returncode == 0, out.stderr
    batches = results_files(scored)
    assert [len(rows) for rows, _ in batches] == [3, 3]  # two batches of 3 trials, one DAG each
    assert out.stderr.count("plan: 3 sweep points -> 4 unique steps") == 2
    assert calls(work=scored) == {"up": 1}  # the shared upstream step ran once, for both batches
    losses = {}
    for _, records in batches:
        for record in records:
            (override,) = record["overrides"]  # type: ignore[misc]
            x = float(str(override).split("=")[1])
            loss = record["metrics"]["score.loss"]  # type: ignore[index]
            assert loss == pytest.approx((x - 2) ** 2)
            losses[x] = loss
    best = yaml.safe_load((sweep_dir / "optimization_results.yaml").read_text())
    assert f"sweeper: Best value: {best['best_value']}" in out.stderr  # the sweeper's own lines
    assert best["best_value"] == pytest.approx(min(losses.values()))
    assert losses[best["best_params"]["steps.score.config.x"]] == best["best_value"]


def test_points_run_only_leaves_out_say_so(scored: Path) -> None:
    out = sweep("+experiment=scored", "-m", "steps.score.config.x=1,2", "run_only=[up]",
                "sweep.objective=score.loss", cwd=scored)  # fmt: skip
    assert out.returncode == 0, out.stderr  # a grid sweep needs no objective to go on
    assert calls(scored) == {"up": 1}
    rows = results_files(scored)[0][0]
    assert [r["status"] for r in rows] == ["partial", "partial"]  # up ran, score left out


def test_a_sweep_over_output_path_alone_is_refused(scored: Path) -> None:
    out = sweep("+experiment=scored", "-m", "+steps.score.output_path=outa,outb", cwd=scored)
    assert out.returncode == 2, out.stderr
    assert "step 'score': the same step (hash " in out.stderr
    assert "is given two output paths, 'outa' and 'outb'" in out.stderr
    assert not (scored / "outputs").exists()


def test_hydra_interpolations_are_each_points_own(work: Path) -> None:
    (work / "confs" / "experiment" / "hy.yaml").write_text(
        SWEEP.replace('name: "down-${.lr}"', 'name: "down-${hydra:job.num}-${.lr}"')
    )
    out = sweep("+experiment=hy", "-m", "steps.down.config.lr=1,2", cwd=work)
    assert out.returncode == 0, out.stderr
    assert calls(work) == {"up": 1, "down-0-1": 1, "down-1-2": 1}


def test_overrides_with_brackets_show_as_written_in_the_table(work: Path) -> None:
    out = sweep("+experiment=sweep", "-m", "+steps.down.config.tags=[a,b],[red]", cwd=work)
    assert out.returncode == 0, out.stderr
    assert "+steps.down.config.tags=[a,b]" in out.stderr
    assert "+steps.down.config.tags=[red]" in out.stderr


def test_an_adaptive_sweeper_without_an_objective_is_refused_before_anything_runs(
    scored: Path,
) -> None:
    base = ("+experiment=scored", "-m", "hydra/sweeper=optuna", "hydra.sweeper.n_trials=2",
            "steps.score.config.x=interval(0,4)")  # fmt: skip
    out = sweep(*base, cwd=scored)
    assert out.returncode == 2, out.stderr
    assert "sweep.objective: OptunaSweeper needs a number from each point" in out.stderr
    dry = sweep(*base, "sweep.objective=score.loss", "dry_run=true", cwd=scored)
    assert dry.returncode == 2, dry.stderr
    assert "dry_run: OptunaSweeper needs each point's objective" in dry.stderr
    assert calls(scored) == {} and not (scored / "outputs").exists()


def test_a_sweep_over_experiments_takes_each_ones_metrics(scored: Path) -> None:
    (scored / "confs" / "experiment" / "other.yaml").write_text(
        SCORED + "sweep:\n  metrics: [score.x]\n"
    )
    out = sweep("-m", "+experiment=scored,other", "steps.score.config.x=3", cwd=scored)
    assert out.returncode == 0, out.stderr
    rows = results_files(scored)[0][0]
    assert [(r["status"], r["score.loss"], r["score.x"]) for r in rows] == [
        ("ran", "1.0", "3.0"),  # scored: every number its last step returned (x: float)
        ("ran", "", "3.0"),  # other: only score.x (the same steps, merged: they ran once)
    ]


def test_an_optuna_study_ends_with_one_table_of_every_trial_best_first(scored: Path) -> None:
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper", reason="the optuna extra")
    out = optuna_search(scored, scored / "optuna")
    assert out.returncode == 0, out.stderr
    assert "3 sweep points\n" not in out.stderr  # no table per batch of 3
    title = "6 trials of OptunaSweeper, best first (score.loss minimized)"
    assert out.stderr.count(title) == 1
    table = out.stderr[out.stderr.index(title) :]
    rows = [line.split("│") for line in table.splitlines() if "steps.score.config.x=" in line]
    assert [cells[2].strip() for cells in rows] == ["ran"] * 6
    losses = [float(cells[3]) for cells in rows]
    assert losses == sorted(losses) and len(losses) == 6
