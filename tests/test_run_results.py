"""A single run ends with its last steps' results; a fully cached one writes no manifest; and
``report_html=PATH`` writes the run's report."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import confpipe
from confpipe import StepSpec
from confpipe.cli import results
from confpipe.engine.outcome import Outcome
from confpipe.engine.status import load_result
from tests.stepfns import add, scored
from tests.test_cli import BROKEN, cli

SCORED = """\
# @package _global_
steps:
  up:
    fn: tests.stepfns.add
    config: {a: 1, b: 2}
  score:
    fn: tests.stepfns.scored
    config: {x: 3.0, up: "${step:up}"}
  side:
    fn: tests.stepfns.record
    config: {log: "${oc.env:CALLS_LOG}", name: "a fairly long name that is cut short here"}
"""


def test_compact_shows_a_result_on_one_short_line() -> None:
    assert results.compact({"loss": 0.5, "name": "x"}) == '{"loss": 0.5, "name": "x"}'
    assert results.compact(list(range(20))) == '[0, 1, 2, 3, 4, 5, 6, 7, "...(+12 more)"]'
    assert results.compact("é" * 100) == json.dumps("é" * 57 + "...", ensure_ascii=False)
    wide = {f"key{i}": i for i in range(30)}
    assert results.compact(wide).endswith('"key7": 7, "...": "+22 more"}')
    deep = [{"text": "y" * 200}] * 8
    line = results.compact(deep, limit=120)
    assert len(line) == 120 and line.endswith("...")


def test_the_last_steps_are_those_no_step_depends_on() -> None:
    up = StepSpec("up", add, config={"a": 1, "b": 2})
    score = StepSpec("score", scored, config={"x": 1.0, "up": up})
    other = StepSpec("other", add, config={"a": 0, "b": 0})
    assert results.leaves([up, score, other]) == [score, other]


def test_run_results_read_each_result_once_and_give_the_sweep_row(tmp_path: Path) -> None:
    up = StepSpec("up", add, config={"a": 1, "b": 2})
    score = StepSpec("score", scored, config={"x": 3.0, "up": up})
    summary = confpipe.run([up, score], prefix=str(tmp_path))
    ends = {p.spec.identity: (Outcome.SUCCEEDED, p.output, None) for p in summary.plan}
    reads: list[str] = []

    def load(output: str) -> Any:
        reads.append(output)
        return load_result(output)

    point = results.Point(["+experiment=x"], [up, score], {})
    row, values = results.run_results(point, ends, load)
    assert (row.overrides, row.status, row.metrics) == (
        ["+experiment=x"], results.PointStatus.RAN, {"score.loss": 1.0, "score.x": 3.0},
    )  # fmt: skip
    assert values == [(score, {"loss": 1.0, "x": 3.0})]
    assert reads == [str(tmp_path / score.identity)]


@pytest.fixture
def work(tmp_path: Path) -> Path:
    confs = tmp_path / "confs" / "experiment"
    confs.mkdir(parents=True)
    (confs / "scored.yaml").write_text(SCORED)
    (confs / "broken.yaml").write_text(BROKEN)
    return tmp_path


def run(work: Path, *args: str) -> Any:
    return cli("--config-dir", "confs", *args, cwd=work)


def manifests(work: Path) -> list[Path]:
    folder = work / "outputs" / "manifests"
    return sorted(folder.iterdir()) if folder.exists() else []


@pytest.mark.slow
def test_a_run_ends_with_its_last_steps_results_also_when_all_cached(work: Path) -> None:
    first = run(work, "+experiment=scored")
    assert first.returncode == 0, first.stderr
    lines = first.stdout.splitlines()
    header = next(line for line in lines if "score.loss" in line)
    assert "run" in header and "status" in header and "score.x" in header
    row = next(line for line in lines if "+experiment=scored" in line)
    assert " ran " in row and " 1 " in row and " 3 " in row
    assert 'result of score: {"loss": 1.0, "x": 3.0}' in lines
    assert 'result of side: "a fairly long name that is cut short here"' in lines
    assert not any(line.startswith("result of up") for line in lines)  # not a last step
    assert first.stdout.index("score.loss") > first.stdout.index("run")  # the table first
    assert "summary: 3 ran" in first.stderr and "result of" not in first.stderr
    assert len(manifests(work)) == 1

    again = run(work, "+experiment=scored")
    assert again.returncode == 0, again.stderr
    assert 'result of score: {"loss": 1.0, "x": 3.0}' in again.stdout.splitlines()
    assert any(
        "+experiment=scored" in line and " cached " in line for line in again.stdout.splitlines()
    )
    assert "manifest: none written (all 3 steps cached)" in again.stderr
    assert len(manifests(work)) == 1

    only = run(work, "+experiment=scored", "run_only=[up]")  # its last step: up
    assert only.returncode == 0 and only.stdout.splitlines()[-1] == "result of up: 3"

    plan = run(work, "+experiment=scored", "dry_run=true")
    assert plan.returncode == 0 and "result of" not in plan.stdout + plan.stderr
    assert "manifest" not in plan.stderr


@pytest.mark.slow
def test_a_failed_run_shows_what_did_finish_and_still_writes_its_manifest(work: Path) -> None:
    out = run(work, "+experiment=broken")
    assert out.returncode == 1, out.stderr
    assert "result of ok: 3" in out.stdout.splitlines()
    assert "results" not in out.stdout  # no table of the failure alone: the summary has it
    assert "failed: bad: ValueError: this step is broken" in out.stderr
    assert len(manifests(work)) == 1 and "manifest: " in out.stderr
    assert "result of after" not in out.stdout  # a last step, but not run
    again = run(work, "+experiment=broken")  # ok cached, bad retried: a manifest again
    assert again.returncode == 1 and len(manifests(work)) == 2


@pytest.mark.slow
def test_a_fully_cached_sweep_writes_its_manifest_and_says_why(work: Path) -> None:
    args = ("+experiment=scored", "-m", "steps.score.config.x=1,2")
    assert run(work, *args).returncode == 0
    again = run(work, *args)
    assert again.returncode == 0, again.stderr
    assert "(all 4 steps cached; the sweep's results go beside it)" in again.stderr
    assert len(manifests(work)) == 2


@pytest.mark.slow
def test_report_html_writes_the_runs_report_after_the_run(work: Path) -> None:
    out = run(work, "+experiment=scored", "report_html=report.html")
    assert out.returncode == 0, out.stderr
    page = (work / "report.html").read_text()
    assert "<html" in page.lower() and "score" in page and "side" in page
    assert out.stderr.rstrip().endswith("report: report.html")


@pytest.mark.slow
def test_results_that_cant_be_read_are_reported_and_the_run_stands(work: Path) -> None:
    assert run(work, "+experiment=scored").returncode == 0
    [record] = (work / "outputs").glob("score-*/.confpipe/result.json")
    record.unlink()  # a cached last step whose result record went missing
    out = run(work, "+experiment=scored")
    assert out.returncode == 0, out.stderr
    assert "confpipe: could not show the results: no result record under " in out.stderr
    assert "Traceback" not in out.stderr
