"""``python -m confpipe`` end to end, in real subprocesses, with experiments in a user folder."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.waits import alive, eventually

pytestmark = pytest.mark.slow  # every test runs the CLI in a real subprocess

ROOT = Path(__file__).resolve().parents[1]

DEMO = """\
# @package _global_
steps:
  a:
    fn: tests.stepfns.add
    config: {a: 1, b: 2}
  b:
    fn: tests.stepfns.record
    config:
      log: ${oc.env:CALLS_LOG}
      name: b
      up: ${step:a}
      shards: ${step:a}/shards
"""

BROKEN = """\
# @package _global_
steps:
  ok:
    fn: tests.stepfns.add
    config: {a: 1, b: 2}
  bad:
    fn: tests.stepfns.fail
  after:
    fn: tests.stepfns.record
    config: {log: "${oc.env:CALLS_LOG}", name: after, up: "${step:bad}"}
"""


def cli(
    *args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), "CALLS_LOG": str(cwd / "calls.log")}
    full_env.pop("CONFPIPE_FULL_ERROR", None)
    return subprocess.run(
        [sys.executable, "-m", "confpipe", *args],
        cwd=cwd, env={**full_env, **(env or {})}, capture_output=True, text=True,
        timeout=timeout,
    )  # fmt: skip


@pytest.fixture
def work(tmp_path: Path) -> Path:
    confs = tmp_path / "confs" / "experiment"
    confs.mkdir(parents=True)
    (confs / "demo.yaml").write_text(DEMO)
    (confs / "broken.yaml").write_text(BROKEN)
    return tmp_path


def calls(work: Path) -> list[str]:
    path = work / "calls.log"
    return path.read_text().split() if path.exists() else []


def test_user_experiment_runs_then_is_cached(work: Path) -> None:
    first = cli("--config-dir", "confs", "+experiment=demo", cwd=work)
    assert first.returncode == 0, first.stderr
    assert "summary: 2 ran, 0 cached, 0 failed" in first.stderr
    outputs = sorted(p.name for p in (work / "outputs").iterdir())
    assert outputs[0].startswith("a-") and outputs[1].startswith("b-") and outputs[2] == "manifests"
    manifest = json.loads(next((work / "outputs" / "manifests").iterdir()).read_text())
    assert manifest["experiment"] == "demo"
    assert [s["name"] for s in manifest["steps"]] == ["a", "b"]
    assert {"git_commit", "argv", "user", "time"} <= manifest.keys()
    # Hydra wrote nothing of its own in the working directory
    assert sorted(p.name for p in work.iterdir()) == ["calls.log", "confs", "outputs"]

    again = cli("--config-dir", "confs", "+experiment=demo", cwd=work)
    assert again.returncode == 0, again.stderr
    assert "2 cached, 0 to run" in again.stderr
    assert calls(work).count("b") == 1


def snapshot(root: Path) -> dict[str, int]:
    return {str(p): p.stat().st_mtime_ns for p in root.rglob("*")}


def test_dry_run_explains_cache_misses_and_writes_nothing(work: Path) -> None:
    assert cli("--config-dir", "confs", "+experiment=demo", cwd=work).returncode == 0
    before = snapshot(work)
    plan = cli(
        "--config-dir", "confs", "+experiment=demo", "dry_run=true", "steps.a.config.a=5", cwd=work
    )
    assert plan.returncode == 0, plan.stderr
    assert snapshot(work) == before
    lines = {line.split()[0]: line for line in plan.stdout.splitlines() if line[:2] in ("a ", "b ")}
    assert "will run" in lines["a"] and "changed: a: 1 -> 5" in lines["a"]
    assert "will run" in lines["b"] and "changed: upstream a: " in lines["b"]


def test_plan_as_mermaid(work: Path) -> None:
    out = cli(
        "--config-dir", "confs", "+experiment=demo", "dry_run=true", "plan_format=mermaid", cwd=work
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[0] == "graph TD"
    assert "  s0 --> s1" in out.stdout
    assert not (work / "outputs").exists()


def test_a_failed_step_exits_1_with_a_summary(work: Path) -> None:
    out = cli("--config-dir", "confs", "+experiment=broken", cwd=work)
    assert out.returncode == 1
    assert "failed bad" in out.stderr
    assert "summary: 1 ran, 0 cached, 1 failed, 1 not run" in out.stderr
    assert "dep failed after" in out.stderr
    assert "this step is broken on purpose" in out.stderr
    # the user's frame, then where the thread step's log and full traceback are
    err = out.stderr.splitlines()
    at = err.index("  failed: bad: ValueError: this step is broken on purpose")
    source = (ROOT / "tests" / "stepfns.py").read_text().splitlines()
    line = source.index('    raise ValueError("this step is broken on purpose")') + 1
    assert err[at + 1].endswith(f"tests/stepfns.py:{line} in fail")
    assert err[at + 2] == '      raise ValueError("this step is broken on purpose")'
    assert err[at + 3].startswith(f"    log: {work}/outputs/bad-")
    assert err[at + 4].endswith("/.confpipe/error.txt")
    assert "status.json" not in out.stderr
    assert (work / "outputs" / "manifests").exists()


def test_no_experiment_is_a_usage_error(work: Path) -> None:
    out = cli(cwd=work)
    assert out.returncode == 2
    assert "no steps to run: choose an experiment with +experiment=NAME" in out.stderr
    assert "tokenize" in out.stderr
    assert not (work / "outputs").exists()


def test_a_local_run_imports_no_google_sdk(work: Path) -> None:
    code = (
        "import atexit, sys\n"
        "atexit.register(lambda: print('heavy:', sorted(m for m in sys.modules"
        " if m.split('.')[0] in ('google', 'gcsfs'))))\n"
        "sys.argv = ['confpipe', '--config-dir', 'confs', '+experiment=demo']\n"
        "from confpipe.cli.main import main\nmain()\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT), "CALLS_LOG": str(work / "calls.log")}
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=work, env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert "heavy: []" in out.stdout


def closes(work: Path, *args: str) -> tuple[int, int]:
    """The CLI's exit code with ``args``, and how many times it closed a backend."""
    code = (
        "import sys\n"
        "from confpipe.backends.local import LocalBackend\n"
        "def close(self): print('backend closed', file=sys.stderr)\n"
        "LocalBackend.close = close\n"
        f"sys.argv = ['confpipe', '--config-dir', 'confs', *{list(args)!r}]\n"
        "from confpipe.cli.main import main\nmain()\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT), "CALLS_LOG": str(work / "calls.log")}
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=work, env=env, capture_output=True, text=True, timeout=120
    )
    return out.returncode, out.stderr.count("backend closed")


def test_the_backend_the_config_built_is_closed_once_when_the_launch_ends(work: Path) -> None:
    assert closes(work, "+experiment=demo") == (0, 1)
    assert closes(work, "+experiment=broken") == (1, 1)  # a step failed
    assert closes(work, "+experiment=demo", "steps.a.fn=tests.stepfns.nope") == (2, 1)  # compile
    assert closes(work, "+experiment=demo", "-m", "steps.a.config.a=1,7") == (0, 1)  # a sweep
    refused = ("-m", "steps.a.config.a=1,7", "max_concurrent=1,2")  # options differ by point
    assert closes(work, "+experiment=demo", *refused) == (2, 1)
    unknown_metric = ("-m", "steps.a.config.a=1,7", "sweep.metrics=[nope.x]")  # after prepare
    assert closes(work, "+experiment=demo", *unknown_metric) == (2, 1)


def test_multirun_flag_may_follow_the_overrides(work: Path) -> None:
    out = cli("--config-dir", "confs", "+experiment=demo", "-m", "steps.a.config.a=1,7", cwd=work)
    assert out.returncode == 0, out.stderr
    assert len(list((work / "outputs").glob("a-*"))) == 2
    assert len(list((work / "outputs").glob("b-*"))) == 2
    assert sorted(p.name for p in work.iterdir()) == ["calls.log", "confs", "outputs"]


SLOW = """\
# @package _global_
steps:
  slow:
    fn: tests.stepfns.slow
    config: {{workdir: {work}}}
{resources}"""


def start_slow(work: Path, *, job: bool) -> tuple[subprocess.Popen[str], list[tuple[float, str]]]:
    """A driver running one step that sleeps a minute (a job with ``job``, else a thread
    step), started; and its stderr lines as they come, each with the time it came (the
    list is complete once the driver has ended)."""
    (work / "seconds").write_text("60")
    resources = "    resources: {cpu: 1}\n" if job else ""
    (work / "confs" / "experiment" / "slow.yaml").write_text(
        SLOW.format(work=work, resources=resources)
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    driver = subprocess.Popen(
        [sys.executable, "-m", "confpipe", "--config-dir", "confs", "+experiment=slow"],
        cwd=work, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    lines: list[tuple[float, str]] = []

    def read() -> None:
        assert driver.stderr is not None
        with driver.stderr:
            for line in driver.stderr:
                lines.append((time.monotonic(), line.rstrip("\n")))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    driver.reader = reader  # type: ignore[attr-defined]
    started = work / "started"
    eventually(lambda: started.exists() and started.read_text(), "the step to start")
    eventually(lambda: any(line.startswith("start slow") for _, line in lines), "its start line")
    return driver, lines


def stop(driver: subprocess.Popen[str], signum: int) -> float:
    """Send ``signum`` and wait for the driver to end; the time it was sent."""
    sent = time.monotonic()
    driver.send_signal(signum)
    try:
        driver.wait(timeout=60)
    finally:
        driver.kill()
        driver.reader.join(10)  # type: ignore[attr-defined]
    return sent


def test_sigterm_stops_the_run_as_ctrl_c_does_and_is_named_with_exit_143(work: Path) -> None:
    driver, lines = start_slow(work, job=True)
    stop(driver, signal.SIGTERM)  # a scheduler's stop, or `kill`
    err = "\n".join(line for _, line in lines)
    assert driver.returncode == 143, err  # 128 + 15, as a shell reports it
    assert "stopping on SIGTERM… (waiting up to 5 s for 1 running step; SIGTERM again" in err
    assert "summary: 0 ran, 0 cached, 0 failed, 1 cancelled (SIGTERM)" in err
    assert "confpipe: interrupted (SIGTERM): running steps were cancelled" in err
    assert "Ctrl-C" not in err
    job = int((work / "started").read_text())
    eventually(lambda: not alive(job), "the job to be cancelled", 10)
    (status,) = (work / "outputs").glob("slow-*/.confpipe/status.json")
    record = json.loads(status.read_text())
    assert record["state"] == "FAILED" and record["interrupted"] is True  # not a failure
    assert not list((work / "outputs").glob("slow-*/.confpipe/lease.json"))
    (manifest,) = (work / "outputs" / "manifests").iterdir()
    assert [s["end"] for s in json.loads(manifest.read_text())["steps"]] == ["cancelled"]


def test_ctrl_c_says_at_once_that_it_stops_and_what_it_waits_for(work: Path) -> None:
    driver, lines = start_slow(work, job=False)  # a thread step: it can't be killed
    sent = stop(driver, signal.SIGINT)
    err = "\n".join(line for _, line in lines)
    assert driver.returncode == 130, err
    (when,) = [t for t, line in lines if line.startswith("stopping…")]
    assert when - sent < 2.5, err  # at once, not after the 5 s it waits
    assert "stopping… (waiting up to 5 s for 1 running step; Ctrl-C again to leave now)" in err
    assert "cancelled slow" in err and "stopped: interrupted (Ctrl-C)" in err
    assert "summary: 0 ran, 0 cached, 0 failed, 1 cancelled (Ctrl-C)" in err
    assert err.endswith("confpipe: interrupted (Ctrl-C): running steps were cancelled")


def test_sigterm_while_the_config_is_composed_exits_143(work: Path) -> None:
    (work / "confs" / "experiment" / "stall.yaml").write_text(
        "# @package _global_\nsteps:\n  a:\n    fn: tests.stepfns.add\n"
        "    config: {a: '${stall:}', b: 1}\n"
    )
    (work / "hold.py").write_text(
        "import time, runpy, sys\nfrom omegaconf import OmegaConf\n"
        "OmegaConf.register_new_resolver('stall', lambda: time.sleep(60) or 1)\n"
        "sys.argv[0] = 'confpipe'\nrunpy.run_module('confpipe', run_name='__main__')\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    driver = subprocess.Popen(
        [sys.executable, "hold.py", "--config-dir", "confs", "+experiment=stall"],
        cwd=work, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    time.sleep(3)
    driver.terminate()
    try:
        _, err = driver.communicate(timeout=60)
    finally:
        driver.kill()
    assert driver.returncode == 143, err
    assert err.strip().splitlines()[-1] == "confpipe: interrupted (SIGTERM)"


def test_a_manifest_that_cant_be_written_is_reported_and_the_run_stands(work: Path) -> None:
    (work / "confs" / "experiment" / "blocker.yaml").write_text(
        "# @package _global_\n"
        "steps:\n"
        "  blk:\n"
        "    fn: tests.stepfns.block\n"
        "    config: {path: '${prefix}/manifests'}\n"  # a file where the folder would go
    )
    out = cli("--config-dir", "confs", "+experiment=blocker", cwd=work)
    assert out.returncode == 0, out.stderr
    assert "summary: 1 ran, 0 cached, 0 failed" in out.stderr
    assert "confpipe: could not write the manifest: " in out.stderr
    assert "Traceback" not in out.stderr


def test_help_names_confpipe_and_shows_how_to_run_it(work: Path) -> None:
    out = cli("--help", cwd=work)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("confpipe: a pipeline declared in Hydra YAML")
    assert "Usage: python -m confpipe +experiment=NAME" in out.stdout
    assert "experiment: tokenize, train" in out.stdout
    assert "backend: gcp, local\n" in out.stdout  # the schemas are not choices


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (
            ["+experiment=demo", "-m", "--cfg", "job"],
            "confpipe: error: Only one of --run, --multirun, --cfg, --info and "
            "--shell_completion can be specified: e.g. drop -m to print one run's config",
        ),
        (
            ["+experiment=demo", "+experiment=broken"],
            "confpipe: error: experiment: chosen twice; choose one (+experiment=NAME), or sweep "
            "over several with -m +experiment=A,B",
        ),
    ],
)
def test_hydra_usage_mistakes_are_one_line(work: Path, args: list[str], expected: str) -> None:
    out = cli("--config-dir", "confs", *args, cwd=work)
    assert out.returncode == 2, out.stderr
    assert out.stderr.startswith(expected) and len(out.stderr.splitlines()) == 1
    assert not (work / "outputs").exists()


def complete(work: Path, line: str) -> list[str]:
    """What bash offers for ``line`` (the cursor at its end), once confpipe's completion
    script (``-sc install=bash``) is installed in it."""
    script = cli("-sc", "install=bash", cwd=work)
    assert script.returncode == 0, script.stderr
    (work / "completion.sh").write_text(script.stdout)
    words = line.split(" ")
    bash = (
        "source completion.sh\n"
        f"COMP_LINE={shlex.quote(line)}; COMP_POINT=${{#COMP_LINE}}\n"
        f"COMP_WORDS=({' '.join(map(shlex.quote, words))}); COMP_CWORD={len(words) - 1}\n"
        "_confpipe_completion\n"
        'printf "%s\\n" "${COMPREPLY[@]}"\n'
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        ["bash", "-c", bash], cwd=work, env=env, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.split()


def test_shell_completion_works_for_python_m_confpipe_and_honours_config_dir(
    work: Path,
) -> None:
    python = sys.executable
    assert complete(work, f"{python} -m confpipe +experiment=") == [
        "+experiment=tokenize", "+experiment=train",
    ]  # fmt: skip
    assert complete(work, f"{python} -m confpipe --config-dir confs +experiment=b") == [
        "+experiment=broken",
    ]  # the user's experiments too
    assert complete(work, f"{python} -m confpipe status -cd confs +experiment=demo steps.b.c") == [
        "steps.b.config.",
    ]
    assert complete(work, f"{python} -m confpipe max_con") == ["max_concurrent="]
