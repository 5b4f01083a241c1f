"""Env values given on the command line are hidden everywhere confpipe writes or prints them.

Real CLI subprocesses with a local job step: the job gets the value (it returns its digest),
while no file under the prefix, no output of the run, the sweep or the status/show/report
commands holds it; the key stays visible with ``***`` for its value.
"""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

import pytest

from confpipe.redact import hide_given_values, redact_argv, redact_overrides
from tests.test_cli import cli

SECRET = "s3cr3t-value-123"

EXPERIMENT = """\
# @package _global_
steps:
  pre:
    fn: tests.redactfns.env_digest
    config: {name: TOKEN}
    resources: {cpu: 1}
  post:
    fn: tests.stepfns.add
    config: {a: 1, b: 2}
"""


def test_env_and_secret_env_override_values_are_hidden_and_keys_kept() -> None:
    assert redact_overrides(
        [
            "+steps.pre.resources.env.A=secretvalue",
            "++steps.pre.resources.secret_env.B=projects/p/secrets/s/versions/1",
            "~steps.pre.resources.env.C",
            "steps.pre.resources.env={A:1,B:'2,3'}",
            "steps.pre.resources={cpu:1,env:{A:x},secret_env:{S:y}}",
            "+steps.pre.resources.env.A=a,b",
            "backend.env.X=1",
            "steps.pre.config.lr=1,2",
        ]
    ) == [
        "+steps.pre.resources.env.A=***",
        "++steps.pre.resources.secret_env.B=***",
        "~steps.pre.resources.env.C",
        "steps.pre.resources.env={A:***,B:***}",
        "steps.pre.resources={cpu:1,env:{A:***},secret_env:{S:***}}",
        "+steps.pre.resources.env.A=***",
        "backend.env.X=***",
        "steps.pre.config.lr=1,2",
    ]
    assert redact_argv(["confpipe", "-m", "steps.x.resources.env.T=v"])[-1].endswith("T=***")


def test_an_error_message_quoting_a_given_env_value_shows_it_hidden() -> None:
    argv = ["confpipe", "-m", "+steps.a.resources.env.T={x,s3cr3t", "steps.a.config.n=100"]
    message = "override '+steps.a.resources.env.T={x,s3cr3t': at input '{x,s3cr3t' (n=100)"
    assert hide_given_values(message, argv) == (
        "override '+steps.a.resources.env.T=***': at input '***' (n=100)"
    )


def leaks(work: Path, outputs: list[subprocess.CompletedProcess[str]]) -> list[str]:
    """Every file under ``work`` and every captured output holding the secret."""
    found = [
        str(p.relative_to(work))
        for p in work.rglob("*")
        if p.is_file() and SECRET.encode() in p.read_bytes()
    ]
    found += [f"output of {o.args[3:]}" for o in outputs if SECRET in o.stdout + o.stderr]
    return found


def digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def received(work: Path, value: str) -> bool:
    """Whether some step's result under the prefix is the digest of ``value``."""
    return any(
        p.is_file() and digest(value).encode() in p.read_bytes()
        for p in (work / "outputs").rglob("*")
    )


@pytest.fixture
def work(tmp_path: Path) -> Path:
    confs = tmp_path / "confs" / "experiment"
    confs.mkdir(parents=True)
    (confs / "envy.yaml").write_text(EXPERIMENT)
    return tmp_path


def commands(
    work: Path, *overrides: str, env: dict[str, str] | None = None
) -> list[subprocess.CompletedProcess[str]]:
    """status, show and report of the run with ``overrides``, each checked to have worked."""
    base = ("--config-dir", "confs", "+experiment=envy", *overrides)
    outs = [
        cli("status", *base, cwd=work, env=env),
        cli("show", *base, "pre", cwd=work, env=env),
        cli("show", *base, "pre", "--json", cwd=work, env=env),
        cli("report", *base, f"report_html={work / 'outputs' / 'report.html'}", cwd=work, env=env),
    ]
    for out in outs:
        assert out.returncode == 0, out.stderr
    return outs


@pytest.mark.slow
def test_an_env_value_given_on_the_command_line_reaches_the_job_and_nothing_else(
    work: Path,
) -> None:
    given = f"+steps.pre.resources.env.TOKEN={SECRET}"
    run = cli("--config-dir", "confs", "+experiment=envy", given, cwd=work)
    assert run.returncode == 0, run.stderr
    assert received(work, SECRET)
    manifests = list((work / "outputs" / "manifests").glob("*.json"))
    assert manifests and "+steps.pre.resources.env.TOKEN=***" in manifests[0].read_text()
    outs = commands(work, given)
    assert leaks(work, [run, *outs]) == []


@pytest.mark.slow
def test_a_sweep_over_env_values_shows_the_key_with_hidden_values(work: Path) -> None:
    other = "0ther-" + SECRET
    swept = f"+steps.pre.resources.env.TOKEN={SECRET},{other}"
    args = ("--config-dir", "confs", "+experiment=envy", "-m", swept, "steps.post.config.a=1,2")
    run = cli(*args, cwd=work)
    assert run.returncode == 0, run.stderr
    assert received(work, SECRET) or received(work, other)  # resources are not in the hash
    assert "TOKEN=***" in run.stderr + run.stdout
    sweeps = list((work / "outputs" / "sweeps").rglob("*"))
    assert sweeps and any("TOKEN=***" in p.read_text() for p in sweeps if p.is_file())
    outs = commands(work, "-m", swept, "steps.post.config.a=1,2")
    assert leaks(work, [run, *outs]) == []


@pytest.mark.slow
def test_a_secret_env_name_given_on_the_command_line_is_never_written(work: Path) -> None:
    given = f"+steps.pre.resources.secret_env.TOKEN=projects/p/secrets/{SECRET}/versions/1"
    env = {"TOKEN": "from-the-local-environment"}  # the local backend reads it from there
    run = cli("--config-dir", "confs", "+experiment=envy", given, cwd=work, env=env)
    assert run.returncode == 0, run.stderr
    assert received(work, "from-the-local-environment")
    outs = commands(work, given, env=env)
    assert leaks(work, [run, *outs]) == []


@pytest.mark.slow
@pytest.mark.parametrize(
    "given",
    [
        f"+steps.pre.resources.env.TOKEN={{{SECRET}",  # Hydra's grammar error quotes it
        f"+steps.pre.resources.env={SECRET}",  # confpipe's "is not a mapping" does
    ],
)
def test_a_config_error_over_an_env_override_never_prints_its_value(work: Path, given: str) -> None:
    out = cli("--config-dir", "confs", "+experiment=envy", given, cwd=work)
    assert out.returncode == 2
    assert "env" in out.stderr and "***" in out.stderr
    assert leaks(work, [out]) == []
