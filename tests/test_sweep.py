"""``-m`` sweeps through the confpipe launcher: one DAG, in real ``python -m confpipe`` runs."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

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

FLAKY = """\
# @package _global_
steps:
  up:
    fn: tests.stepfns.record
    config: {log: "${oc.env:CALLS_LOG}", name: up}
  down:
    fn: tests.stepfns.record
    config: {log: "${oc.env:CALLS_LOG}", name: "down-${.lr}", lr: 1, up: "${step:up}"}
  bad:
    fn: tests.stepfns.record
    config: {log: "${oc.env:CALLS_LOG}", name: "bad", up: "${step:down}"}
"""


def sweep(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "CALLS_LOG": str(cwd / "calls.log")}
    env.pop("CONFPIPE_FULL_ERROR", None)
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
    assert sorted(p.name for p in work.iterdir()) == ["calls.log", "confs", "outputs"]


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


def test_a_failing_point_exits_1_and_the_others_complete(work: Path) -> None:
    (work / "confs" / "experiment" / "flaky.yaml").write_text(FLAKY)
    out = sweep(
        "+experiment=flaky", "-m", "steps.bad.fn=tests.stepfns.record,tests.stepfns.fail",
        "steps.down.config.lr=1,2", cwd=work,
    )  # fmt: skip
    assert out.returncode == 1, out.stderr
    assert calls(work) == {"up": 1, "down-1": 1, "down-2": 1, "bad": 2}
    assert "this step is broken on purpose" in out.stderr
    assert "summary: 5 ran, 0 cached, 2 failed" in out.stderr


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
