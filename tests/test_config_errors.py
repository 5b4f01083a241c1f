"""Bad configs through the real CLI: exit code 2, one line that names the key and the fix,
and nothing written under the prefix."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

GOOD = {
    "a": "  a:\n    fn: tests.stepfns.add\n    config: {a: 1, b: 2}\n",
    "b": "  b:\n    fn: tests.stepfns.record\n    config: {log: x, name: b, up: '${step:a}'}\n",
}


def experiment(*steps: str) -> str:
    return "# @package _global_\nsteps:\n" + "".join(steps)


# (id, experiment YAML or None for the good one, overrides, expected fragments of the line)
CASES: list[tuple[str, str | None, list[str], list[str]]] = [
    ("yaml-syntax", "# @package _global_\nsteps:\n  a: {fn: [\n", [], ["experiment/bad.yaml"]),
    ("unknown-run-option", None, ["prefx=/tmp/x"], ["prefx", "did you mean 'prefix'"]),
    (
        "unknown-step-key",
        experiment("  a:\n    fnn: tests.stepfns.add\n"),
        [],
        ["steps.a.fnn", "did you mean 'fn'"],
    ),
    (
        "unknown-resources-key",
        experiment(GOOD["a"] + "    resources: {cpus: 2}\n"),
        [],
        ["steps.a.resources.cpus", "did you mean 'cpu'"],
    ),
    (
        "unknown-step-ref",
        experiment(GOOD["a"], GOOD["b"].replace("${step:a}", "${step:aa}")),
        [],
        ["steps.b.config.up", "'aa'", "did you mean 'a'"],
    ),
    (
        "cycle",
        experiment(
            "  a:\n    fn: tests.stepfns.record\n    config: {log: x, name: a, up: '${step:b}'}\n",
            GOOD["b"],
        ),
        [],
        ["cycle", "a -> b -> a"],
    ),
    (
        "unknown-module",
        experiment("  a:\n    fn: no_such_module.f\n"),
        [],
        ["steps.a.fn", "no_such_module"],
    ),
    (
        "unknown-function",
        experiment("  a:\n    fn: tests.stepfns.ad\n    config: {a: 1, b: 2}\n"),
        [],
        ["steps.a.fn", "did you mean 'add'"],
    ),
    (
        "not-callable",
        experiment("  a:\n    fn: tests.stepfns.os\n"),
        [],
        ["steps.a.fn", "is a module, not a function"],
    ),
    (
        "missing-kwarg",
        experiment("  a:\n    fn: tests.stepfns.add\n    config: {a: 1}\n"),
        [],
        ["steps.a.config", "'b'"],
    ),
    (
        "unexpected-kwarg",
        experiment("  a:\n    fn: tests.stepfns.add\n    config: {a: 1, b: 2, c: 3}\n"),
        [],
        ["steps.a.config.c", "has no parameter 'c'"],
    ),
    (
        "value-of-the-wrong-type",
        None,
        ["steps.a.config.a=abc"],
        ["steps.a.config.a: 'abc' is not an integer (tests.stepfns.add declares a: int)"],
    ),
    (
        "bool-for-an-int",
        None,
        ["steps.a.config.b=true"],
        ["steps.a.config.b: True is not an integer (tests.stepfns.add declares b: int)"],
    ),
    (
        "fn-is-a-module",
        None,
        ["steps.a.fn=tests.stepfns"],
        [
            "steps.a.fn: 'tests.stepfns' is a module, not a function; name a function in it, "
            "e.g. tests.stepfns.add ("
        ],
    ),
    (
        "no-package-line",
        "steps:\n" + GOOD["a"],
        [],
        [
            "experiment/bad: its keys landed under 'experiment:', not at the top level; "
            "add '# @package _global_' as its first line"
        ],
    ),
    (
        "memory-without-unit",
        None,
        ["+steps.a.resources.memory=16"],
        ["steps.a.resources.memory: 16 has no unit; write e.g. 16GiB, 16MiB or 16B (bytes)"],
    ),
    (
        "backend-memory-without-unit",
        None,
        ["backend.memory=16"],
        ["backend.memory: 16 has no unit; write e.g. 16GiB, 16MiB or 16B (bytes)"],
    ),
    (
        "bad-size",
        None,
        ["+steps.a.resources.memory=16 gigs"],
        ["steps.a.resources.memory", "16GiB"],
    ),
    ("bad-duration", None, ["+steps.a.resources.timeout=soon"], ["steps.a.resources.timeout"]),
    ("negative-cpu", None, ["+steps.a.resources.cpu=-1"], ["steps.a.resources.cpu", "positive"]),
    ("zero-memory", None, ["+steps.a.resources.memory=0"], ["steps.a.resources.memory"]),
    (
        "gpu-and-tpu",
        experiment(GOOD["a"] + "    resources: {gpu: {type: nvidia-l4}, tpu: v5litepod-8}\n"),
        [],
        ["gpu", "tpu"],
    ),
    ("tpu-on-local", None, ["+steps.a.resources.tpu=v5litepod-8"], ["tpu", "backend=gcp"]),
    ("gpu-on-local", None, ["+steps.a.resources.gpu.type=nvidia-l4"], ["gpu", "backend=gcp"]),
    (
        "name-escapes-prefix",
        experiment(GOOD["a"].replace("  a:", "  ../a:")),
        [],
        ["'../a'", "no '/'"],
    ),
    (
        "output-path-escapes-prefix",
        None,
        ["+steps.a.output_path=../../etc"],
        ["step 'a': output_path='../../etc' is not a folder inside the prefix"],
    ),
    (
        "name-with-space",
        experiment(GOOD["a"].replace("  a:", "  'a b':")),
        [],
        ["'a b'"],
    ),
    ("unknown-experiment", None, ["+experiment=tokenze"], ["did you mean 'tokenize'"]),
    ("unknown-backend", None, ["backend=nope"], ["backend", "local"]),
    ("wrong-type", None, ["max_concurrent=many"], ["max_concurrent"]),
    ("zero-concurrency", None, ["max_concurrent=0"], ["max_concurrent"]),
    (
        "heartbeat-slower-than-lease",
        None,
        ["lock.heartbeat_interval=100", "lock.lease_timeout=10"],
        ["lock.heartbeat_interval", "lock.lease_timeout"],
    ),
    ("bad-plan-format", None, ["dry_run=true", "plan_format=svg"], ["plan_format", "mermaid"]),
    ("bad-run-only-grammar", None, ["run_only=[^b$]"], ["run_only=[^b$]", "quote"]),
]


@pytest.mark.slow  # the CLI as a subprocess, once per case
@pytest.mark.parametrize(
    ("yaml", "overrides", "fragments"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_bad_config_exits_2_with_one_line_and_writes_nothing(
    tmp_path: Path, yaml: str | None, overrides: list[str], fragments: list[str]
) -> None:
    confs = tmp_path / "confs" / "experiment"
    confs.mkdir(parents=True)
    (confs / "bad.yaml").write_text(yaml if yaml is not None else experiment(GOOD["a"], GOOD["b"]))
    prefix = tmp_path / "prefix"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("CONFPIPE_FULL_ERROR", None)
    args = ["--config-dir", "confs", f"prefix={prefix}"]
    if not any(o.startswith("+experiment=") for o in overrides):
        args.append("+experiment=bad")
    out = subprocess.run(
        [sys.executable, "-m", "confpipe", *args, *overrides],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert lines[0].startswith("confpipe: error: ")
    for fragment in fragments:
        assert fragment in lines[0]
    assert not prefix.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["confs"]


@pytest.mark.slow
def test_full_error_shows_the_traceback(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "CONFPIPE_FULL_ERROR": "1"}
    out = subprocess.run(
        [sys.executable, "-m", "confpipe", "+experiment=tokenize", "max_concurrent=0"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode == 2
    assert "Traceback (most recent call last)" in out.stderr
