"""Code changes, stated, not guessed: fingerprints of step code in the records, the plan's
note when they differ, and ``rerun_on_code_change``.

The step functions live in a module written to a temporary folder and edited between runs,
as a user edits theirs: in this process (reloaded) for the engine, and between real
``python -m confpipe`` launches for the command line.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import json
import linecache
import logging
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

import confpipe
import confpipe.engine.pipeline
from confpipe import StepSpec
from confpipe.engine.fingerprint import fingerprint
from confpipe.engine.outcome import Outcome
from confpipe.engine.plan import StepPlan
from tests.test_cli import cli

# the engine/pipeline.py lines that pass rerun_on_code_change to planning and to cache(), and
# warn of changed code on a run (see the i11-code branch's report); until they are merged,
# the tests of those two behaviours are skipped

STEPS = '''\
"""Step functions of a test pipeline: first -> second, and alone."""


def helper(x):
    return x + 1


def unrelated():
    # a comment
    return 0


def first(output_path, log):
    _note(log, "first")
    return {"value": helper(1)}


def second(output_path, log, up):
    _note(log, "second")
    return {"score": 2.5}


def alone(output_path, log):
    _note(log, "alone")
    return 1


def _note(log, name):
    with open(log, "a") as f:
        f.write(name + "\\n")
'''

EDIT_FIRST = ('    return {"value": helper(1)}', '    return {"value": helper(1), "more": 2}')
EDIT_HELPER = ("    return x + 1", "    return x + 10")
EDIT_COMMENT = ("    # a comment", "    # another comment, much longer than the first one")
OWN_NOTE = "code changed since this output was made; bump `version` to re-run"


class Steps:
    """The step module, written under ``folder`` as ``name``, imported and edited."""

    def __init__(self, folder: Path, name: str, work: Path) -> None:
        self.path, self.name, self.source = folder / f"{name}.py", name, STEPS
        self.log, self.prefix = work / "calls.log", work / "out"
        self.module = self._load()

    def edit(self, change: tuple[str, str]) -> None:
        assert change[0] in self.source
        self.source = self.source.replace(*change)
        self.module = self._load()

    def _load(self) -> ModuleType:
        self.path.write_text(self.source)
        linecache.clearcache()  # as a new process would read it
        importlib.invalidate_caches()
        if self.name in sys.modules:
            return importlib.reload(sys.modules[self.name])
        return importlib.import_module(self.name)

    def pipeline(self) -> list[StepSpec]:
        log = str(self.log)
        first = StepSpec("first", self.module.first, config={"log": log})
        second = StepSpec("second", self.module.second, config={"log": log, "up": first})
        alone = StepSpec("alone", self.module.alone, config={"log": log})
        return [first, second, alone]

    def run(self, steps: list[StepSpec] | None = None, **options: Any) -> confpipe.Summary:
        return confpipe.run(steps or self.pipeline(), prefix=str(self.prefix), **options)

    def plan(self, steps: list[StepSpec] | None = None, **options: Any) -> dict[str, StepPlan]:
        """The dry run's plan of ``steps`` (the pipeline as the module is now), by step."""
        return {p.label: p for p in self.run(steps, dry_run=True, **options).plan}

    def calls(self) -> list[str]:
        """The steps called, sorted (independent steps run at once, in any order)."""
        return calls(self.log)


@pytest.fixture
def steps(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Steps]:
    folder = tmp_path / "code"
    folder.mkdir()
    monkeypatch.syspath_prepend(str(folder))
    monkeypatch.setattr(sys, "dont_write_bytecode", True)  # each edit is compiled afresh
    made = Steps(folder, f"codesteps_{uuid.uuid4().hex[:8]}", tmp_path)
    yield made
    sys.modules.pop(made.name, None)


@pytest.fixture
def warnings() -> Iterator[list[str]]:
    """confpipe's warnings during the test (its logger may not propagate: the CLI's doesn't)."""
    seen: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record.getMessage())

    log = logging.getLogger("confpipe")
    handler = Keep(logging.WARNING)
    log.addHandler(handler)
    try:
        yield seen
    finally:
        log.removeHandler(handler)


def calls(log: Path) -> list[str]:
    """The steps called, sorted (independent steps run at once, in any order)."""
    return sorted(log.read_text().split()) if log.exists() else []


# --- fingerprints -------------------------------------------------------------------------


def test_the_fingerprint_follows_the_function_and_its_same_module_helpers(steps: Steps) -> None:
    before = {n: fingerprint(getattr(steps.module, n)) for n in ("first", "second", "alone")}
    assert all(isinstance(v, str) and len(v) == 12 for v in before.values())
    steps.edit(EDIT_COMMENT)  # a function none of them uses
    assert {n: fingerprint(getattr(steps.module, n)) for n in before} == before
    steps.edit(EDIT_HELPER)  # used by first only
    after = {n: fingerprint(getattr(steps.module, n)) for n in before}
    assert after["first"] != before["first"]
    assert (after["second"], after["alone"]) == (before["second"], before["alone"])


def test_trailing_white_space_is_no_change_but_a_comment_in_the_function_is(
    steps: Steps,
) -> None:
    was = fingerprint(steps.module.alone)
    steps.edit(('    _note(log, "alone")\n', '    _note(log, "alone") \t \n'))
    assert fingerprint(steps.module.alone) == was
    steps.edit(('    _note(log, "alone")', '    _note(log, "alone")  # says so'))
    assert fingerprint(steps.module.alone) != was


def test_helpers_are_followed_transitively_and_into_classes(tmp_path: Path) -> None:
    def load(source: str) -> ModuleType:
        name = f"fp_{uuid.uuid4().hex[:8]}"
        (tmp_path / f"{name}.py").write_text(source)
        sys.path.insert(0, str(tmp_path))
        try:
            return importlib.import_module(name)
        finally:
            sys.path.remove(str(tmp_path))

    template = (
        "import os\n\n"
        "def leaf():\n    return {value}\n\n"
        "def middle():\n    return leaf()\n\n"
        "class Tool:\n    def run(self):\n        return [middle() for _ in range(2)]\n\n"
        "def step(output_path):\n    return Tool().run() + [os.sep]\n"
    )
    one, two = load(template.format(value=1)), load(template.format(value=2))
    assert fingerprint(one.step) != fingerprint(two.step)  # leaf <- middle <- Tool.run <- step
    same = load(template.format(value=1))
    assert fingerprint(same.step) == fingerprint(one.step)  # another module name, same code


def test_wrapped_and_partial_functions_are_fingerprinted_by_the_code_inside(
    steps: Steps,
) -> None:
    fn = steps.module.alone

    @functools.wraps(fn)
    def wrapper(**kwargs: object) -> object:
        return fn(**kwargs)

    assert fingerprint(wrapper) == fingerprint(fn) == fingerprint(functools.partial(fn, log="x"))


def test_code_without_source_falls_back_to_its_byte_code() -> None:
    namespace: dict[str, object] = {}
    exec("def typed_in(output_path):\n    return 1\n", namespace)  # no file: as in a REPL
    exec("def other(output_path):\n    return 2\n", namespace)
    typed_in, other = namespace["typed_in"], namespace["other"]
    assert callable(typed_in) and callable(other)
    assert fingerprint(typed_in) is not None and fingerprint(typed_in) != fingerprint(other)
    assert fingerprint(len) is None  # a builtin has neither


def test_code_is_not_identity_and_lineage_follows_upstream_code(
    steps: Steps,
) -> None:
    first, second, alone = steps.pipeline()
    steps.edit(EDIT_FIRST)
    first2, second2, alone2 = steps.pipeline()
    assert (first2.identity, second2.identity) == (first.identity, second.identity)
    assert first2.code != first.code and first2.lineage != first.lineage
    assert second2.code == second.code and second2.lineage != second.lineage
    assert (alone2.code, alone2.lineage) == (alone.code, alone.lineage)


def test_the_lineage_of_a_long_chain_needs_no_recursion() -> None:
    from tests.stepfns import noop

    step = StepSpec("s0", noop)
    for i in range(1, 3000):
        step = StepSpec(f"s{i}", noop, config={"up": step})
    assert len(step.lineage) == 12


# --- records, plan, run -------------------------------------------------------------------


def test_every_record_holds_the_code_that_wrote_it(steps: Steps) -> None:
    pipeline = steps.pipeline()
    steps.run(pipeline)
    for spec in pipeline:
        records = steps.prefix / spec.identity / ".confpipe"
        status = json.loads((records / "status.json").read_text())
        info = json.loads((records / "info.json").read_text())
        assert (status["code"], status["lineage"]) == (spec.code, spec.lineage)
        assert (info["code"], info["lineage"]) == (spec.code, spec.lineage)


def test_an_edited_step_stays_cached_and_the_plan_says_its_code_changed(
    steps: Steps,
) -> None:
    steps.run()
    steps.edit(EDIT_FIRST)
    plans = steps.plan()
    assert {k: p.state for k, p in plans.items()} == dict.fromkeys(plans, Outcome.CACHED)
    assert plans["first"].code_note == OWN_NOTE
    assert plans["first"].reason == f"succeeded earlier; {OWN_NOTE}"
    assert plans["second"].code_note == (
        "code of upstream step first changed since this output was made; bump the `version` "
        "of first to re-run it and the steps after it"
    )
    assert plans["alone"].code_note is None and plans["alone"].reason == "succeeded earlier"


def test_a_run_warns_once_per_changed_step_and_runs_nothing(
    steps: Steps, warnings: list[str]
) -> None:
    steps.run()
    steps.edit(EDIT_FIRST)
    summary = steps.run()
    assert summary.ran == [] and steps.calls() == ["alone", "first", "second"]
    assert warnings == [
        f"step first: {OWN_NOTE}",
        "step second: code of upstream step first changed since this output was made; bump "
        "the `version` of first to re-run it and the steps after it",
    ]


def test_an_edited_helper_is_a_change_and_an_edited_comment_elsewhere_is_not(
    steps: Steps,
) -> None:
    steps.run()
    steps.edit(EDIT_COMMENT)
    assert all(p.code_note is None for p in steps.plan().values())
    steps.edit(EDIT_HELPER)
    assert steps.plan()["first"].code_note == OWN_NOTE


def test_the_changed_upstream_step_is_named_when_the_plan_pruned_it(
    steps: Steps,
) -> None:
    steps.run()
    steps.edit(EDIT_FIRST)
    second = steps.pipeline()[1]
    [plan] = steps.plan([second]).values()  # first: pruned, its status read to name it
    assert plan.code_note is not None and plan.code_note.startswith("code of upstream step first")


def test_records_older_than_fingerprints_get_no_note_and_are_not_rerun(
    steps: Steps,
) -> None:
    pipeline = steps.pipeline()
    steps.run(pipeline)
    for spec in pipeline:  # as an earlier confpipe wrote them
        path = steps.prefix / spec.identity / ".confpipe" / "status.json"
        record = json.loads(path.read_text())
        del record["code"], record["lineage"]
        path.write_text(json.dumps(record))
    steps.edit(EDIT_FIRST)
    assert all(p.code_note is None for p in steps.plan().values())
    summary = steps.run(rerun_on_code_change=True)
    assert summary.ran == [] and steps.calls() == ["alone", "first", "second"]


def test_rerun_on_code_change_reruns_the_changed_step_and_its_dependents_only(
    steps: Steps,
) -> None:
    steps.run()
    steps.edit(EDIT_FIRST)
    plans = steps.plan(rerun_on_code_change=True)
    assert {k: p.state for k, p in plans.items()} == {
        "first": Outcome.WILL_RUN, "second": Outcome.WILL_RUN, "alone": Outcome.CACHED,
    }  # fmt: skip
    assert plans["first"].reason == "code changed (rerun_on_code_change=true)"
    assert (
        plans["second"].reason == "code of upstream step first changed (rerun_on_code_change=true)"
    )
    pipeline = steps.pipeline()
    summary = steps.run(pipeline, rerun_on_code_change=True)
    assert sorted(summary.ran) == sorted(s.identity for s in pipeline[:2])
    assert steps.calls() == ["alone", "first", "first", "second", "second"]
    assert confpipe.load_result(str(steps.prefix / pipeline[0].identity)) == {"value": 2, "more": 2}
    again = steps.plan(rerun_on_code_change=True)
    assert all(p.state is Outcome.CACHED and p.code_note is None for p in again.values())


# --- the command line -----------------------------------------------------------------------

EXPERIMENT = """\
# @package _global_
steps:
  first:
    fn: mysteps.first
    config: {log: "${oc.env:CALLS_LOG}"}
  second:
    fn: mysteps.second
    config: {log: "${oc.env:CALLS_LOG}", up: "${step:first}"}
  alone:
    fn: mysteps.alone
    config: {log: "${oc.env:CALLS_LOG}"}
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "confs" / "experiment").mkdir(parents=True)
    (tmp_path / "confs" / "experiment" / "code.yaml").write_text(EXPERIMENT)
    (tmp_path / "mysteps.py").write_text(STEPS)
    return tmp_path


def edit_file(path: Path, change: tuple[str, str]) -> None:
    text = path.read_text()
    assert change[0] in text
    path.write_text(text.replace(*change))


def launch(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {"PYTHONDONTWRITEBYTECODE": "1"}  # mysteps.py is edited within the same second
    return cli("--config-dir", "confs", "+experiment=code", *args, cwd=project, env=env)


@pytest.mark.slow
def test_cli_states_a_code_change_in_the_plan_and_keeps_the_outputs(project: Path) -> None:
    assert launch(project).returncode == 0
    edit_file(project / "mysteps.py", EDIT_FIRST)
    plan = launch(project, "dry_run=true")
    assert plan.returncode == 0, plan.stderr
    rows = {line.split()[0]: line for line in plan.stdout.splitlines() if line.strip()}
    assert " cached " in rows["first"] and OWN_NOTE in rows["first"]
    assert "code of upstream step first changed" in rows["second"]
    assert rows["alone"].rstrip().endswith("succeeded earlier")
    run = launch(project)
    assert run.returncode == 0, run.stderr
    assert "plan: 3 steps, 3 cached, 0 to run" in run.stderr
    assert calls(project / "calls.log") == ["alone", "first", "second"]


@pytest.mark.slow
def test_cli_warns_of_a_code_change_and_reruns_it_when_asked(project: Path) -> None:
    assert launch(project).returncode == 0
    edit_file(project / "mysteps.py", EDIT_FIRST)
    run = launch(project)
    assert run.returncode == 0, run.stderr
    assert f"confpipe: step first: {OWN_NOTE}" in run.stderr
    assert "confpipe: step second: code of upstream step first changed" in run.stderr
    rerun = launch(project, "rerun_on_code_change=true")
    assert rerun.returncode == 0, rerun.stderr
    assert "summary: 2 ran, 1 cached, 0 failed" in rerun.stderr
    assert calls(project / "calls.log") == ["alone", "first", "first", "second", "second"]
    after = launch(project, "rerun_on_code_change=true")
    assert (
        "plan: 3 steps, 3 cached, 0 to run" in after.stderr and "code changed" not in after.stderr
    )


@pytest.mark.slow
def test_two_launches_rerunning_the_same_changed_code_run_each_step_once(project: Path) -> None:
    assert launch(project).returncode == 0
    slow = ('    _note(log, "first")', '    _note(log, "first")\n    import time; time.sleep(1.5)')
    edit_file(project / "mysteps.py", slow)
    env = {"PYTHONDONTWRITEBYTECODE": "1"}
    args = ("--config-dir", "confs", "+experiment=code", "rerun_on_code_change=true")
    launches = [_start(project, args, env) for _ in range(2)]
    outs = [p.communicate(timeout=120) for p in launches]
    assert [p.returncode for p in launches] == [0, 0], outs
    assert calls(project / "calls.log") == ["alone", "first", "first", "second", "second"]


def _start(project: Path, args: tuple[str, ...], env: dict[str, str]) -> subprocess.Popen[str]:
    import os

    from tests.test_cli import ROOT

    full = {**os.environ, "PYTHONPATH": str(ROOT), "CALLS_LOG": str(project / "calls.log"), **env}
    return subprocess.Popen(
        [sys.executable, "-m", "confpipe", *args], cwd=project, env=full, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip


def test_fingerprints_are_computed_once_per_function(steps: Steps) -> None:
    calls_made: list[object] = []
    real = inspect.getsource

    def counting(obj: object) -> str:
        calls_made.append(obj)
        return real(obj)

    fn: Callable[..., object] = steps.module.first
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(inspect, "getsource", counting)
        specs = [StepSpec(f"s{i}", fn, config={"log": "x", "i": i}) for i in range(500)]
        assert len({s.code for s in specs}) == 1
    assert len(calls_made) == 3  # first, helper and _note: read once each
