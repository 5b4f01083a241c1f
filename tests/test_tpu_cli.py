"""TPU steps on ``backend=gcp`` end to end: ``python -m confpipe`` in real subprocesses.

The CLI finds FakeTpu (the real google-cloud-tpu client over gRPC; the fake's hosts run as
local subprocesses) only through ``backend.tpu_endpoint``, and fake-gcs-server only through
``backend.storage_endpoint``; Google credentials that don't exist make any attempt to reach
Google fail loudly. Compile-time TPU mistakes exit 2 with one line, before anything is sent
or written.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from confpipe import load_result
from confpipe.testing.gcs import FakeGcs
from confpipe.testing.tpu import FakeTpu
from tests.gcpfakes import cli, cli_env, experiment
from tests.waits import alive, eventually

pytestmark = pytest.mark.slow  # every test runs the CLI in a real subprocess

DEMO = """\
# @package _global_
steps:
  prep:
    fn: tests.stepfns.add
    config: {a: 1, b: 2}
  train:
    fn: tests.tpujobs.which_host
    config: {}
    resources: {tpu: v5litepod-16, spot: true, max_retries: 1}
  after:
    fn: tests.stepfns.noop
    config: {model: "${step:train}", first: "${step:prep}"}
"""


@pytest.fixture
def work(tmp_path: Path) -> Path:
    return experiment(tmp_path, "tpu_demo", DEMO)


def gcp(tpu: FakeTpu, gcs: FakeGcs, prefix: str, *more: str) -> list[str]:
    """The demo on backend=gcp against the fakes, plus ``more``. No Batch endpoint and no
    Google credentials: a launch without Batch steps must not need a Batch client."""
    return [
        "--config-dir", "confs", "+experiment=tpu_demo", "backend=gcp", "backend.project=p",
        "backend.image=local", "backend.region=us-west4",
        f"backend.tpu_endpoint={tpu.endpoint}", f"backend.storage_endpoint={gcs.endpoint}",
        "backend.poll_interval=0.2", "backend.stage_code=false", f"prefix={prefix}", *more,
    ]  # fmt: skip


def test_a_tpu_step_runs_on_every_host_through_the_fakes_then_is_cached(
    work: Path, fake_tpu: FakeTpu, fake_gcs: FakeGcs, gs_prefix: str
) -> None:
    plan = cli(
        *gcp(fake_tpu, fake_gcs, gs_prefix, "dry_run=true", "backend.tpu_start_timeout=5m"),
        cwd=work,
    )
    assert plan.returncode == 0, plan.stderr
    assert "tpu (4 hosts) (tpu=v5litepod-16 spot)" in plan.stdout
    assert fake_tpu.count() == 0  # a dry run submits nothing

    first = cli(*gcp(fake_tpu, fake_gcs, gs_prefix), cwd=work)
    assert first.returncode == 0, first.stderr
    assert "summary: 3 ran, 0 cached, 0 failed" in first.stderr
    (create,) = [r for m, r in fake_tpu.requests if m == "CreateQueuedResource"]
    assert create.parent == "projects/p/locations/us-west4-a"
    assert "spot" in create.queued_resource
    assert fake_tpu.count("DeleteQueuedResource") == 1  # the slice is gone with the step
    assert load_result(_output_of(gs_prefix, "train"))["host"] == 0  # host 0's value

    seen = fake_tpu.count()
    again = cli(*gcp(fake_tpu, fake_gcs, gs_prefix), cwd=work)
    assert again.returncode == 0, again.stderr
    assert "3 cached, 0 to run" in again.stderr
    assert fake_tpu.count() == seen  # cached steps never reach Cloud TPU at all


def test_ctrl_c_of_the_cli_deletes_the_slice_and_stops_every_host(
    work: Path, fake_tpu: FakeTpu, fake_gcs: FakeGcs, gs_prefix: str
) -> None:
    pids = work / "pids"
    pids.mkdir()
    args = gcp(fake_tpu, fake_gcs, gs_prefix, "steps.train.fn=tests.tpujobs.wait_on_hosts",
               f"+steps.train.config.pid_dir={pids}")  # fmt: skip
    hosts = [pids / f"host-{n}" for n in range(4)]  # v5litepod-16: 4 hosts
    code, err = interrupt(args, work, lambda: all(h.exists() for h in hosts), "every host")
    assert code == 130, err
    assert "interrupted" in err
    assert fake_tpu.count("DeleteQueuedResource") == 1
    eventually(lambda: fake_tpu.queued_resources() == [], "the queued resource to be deleted")
    workers = [int(host.read_text()) for host in hosts]
    eventually(lambda: not any(map(alive, workers)), "every host's worker to stop", 10)


def test_a_detached_slice_is_reattached_after_ctrl_c_even_with_force_run_failed_false(
    work: Path, fake_tpu: FakeTpu, fake_gcs: FakeGcs, gs_prefix: str
) -> None:
    release = work / "release"
    args = gcp(fake_tpu, fake_gcs, gs_prefix, "steps.train.fn=tests.tpujobs.wait_for_release",
               f"+steps.train.config.path={release}", "steps.train.resources.tpu=v5litepod-4",
               "detach=true", "force_run_failed=false")  # fmt: skip
    code, err = interrupt(args, work, lambda: _host_waiting(fake_tpu), "the TPU host")
    assert code == 130, err
    assert "job left running (detach)" in err
    assert fake_tpu.count("DeleteQueuedResource") == 0
    release.touch()  # the job ends while no driver watches it
    again = cli(*args, cwd=work)  # an interruption is no failure: force_run_failed=false retries
    assert again.returncode == 0, again.stderr
    assert "re-attached to its live queued resource" in again.stderr
    assert fake_tpu.count("CreateQueuedResource") == 1
    assert load_result(_output_of(gs_prefix, "train")) == "released"
    eventually(lambda: fake_tpu.queued_resources() == [], "the queued resource to be deleted")


def interrupt(
    args: list[str], work: Path, started: Callable[[], bool], what: str
) -> tuple[int, str]:
    """Launch the CLI, Ctrl-C it once ``started()`` holds; its exit code and stderr."""
    driver = subprocess.Popen(
        [sys.executable, "-m", "confpipe", *args], cwd=work, env=cli_env(work),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        eventually(started, f"{what} to start", 60)
        driver.send_signal(signal.SIGINT)
        _, err = driver.communicate(timeout=60)
    finally:
        driver.kill()
    return driver.returncode, err


def _host_waiting(fake: FakeTpu) -> bool:
    found = fake.queued_resources()
    return len(found) == 1 and "waiting for release" in fake.serial_log(found[0].name, 0)


def _output_of(prefix: str, step: str) -> str:
    from confpipe.storage import store_for

    found = store_for(prefix).fs.ls(prefix, detail=False)
    (path,) = [p for p in found if p.rstrip("/").rsplit("/", 1)[-1].startswith(f"{step}-")]
    return f"gs://{path.rstrip('/')}"


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        (
            "steps.train.resources.tpu=v5litepod-12",
            "step 'train': resources.tpu=v5litepod-12: TPU v5e comes in 1, 4, 8, 16, 32, 64, "
            "128, 256 (chips), e.g. v5litepod-8",
        ),
        (
            "steps.train.resources.tpu=v9-8",
            "step 'train': resources.tpu=v9-8: unknown TPU generation 'v9'",
        ),
        (
            "backend.tpu_zone=us-central2-b",
            "step 'train': resources.tpu=v5litepod-16: zone us-central2-b (backend.tpu_zone) "
            "doesn't offer TPU v5e; zones that do: us-central1-a, us-south1-a, us-west1-c, "
            "us-west4-a,",
        ),
        (
            "backend.tpu_endpoint=null",
            "backend=gcp: no Google credentials (File ",  # checked before anything runs
        ),
        (
            "backend.region=us-central2",
            "step 'train': resources.tpu=v5litepod-16: no zone of backend.region=us-central2 "
            "offers TPU v5e; zones that do: us-central1-a,",
        ),
        (
            "backend.tpu_start_timeout=10min",
            "backend.tpu_start_timeout: '10min' is not a duration; use e.g. 90s, 30m, 2h",
        ),
    ],
)
def test_tpu_mistakes_exit_2_with_one_line_before_anything_runs(
    work: Path, fake_tpu: FakeTpu, fake_gcs: FakeGcs, override: str, expected: str
) -> None:
    prefix = work / "outputs"
    out = cli(*gcp(fake_tpu, fake_gcs, str(prefix), override), cwd=work)
    assert out.returncode == 2, out.stderr
    (line,) = out.stderr.splitlines()
    assert line.startswith(f"confpipe: error: {expected}"), line
    assert not prefix.exists()  # nothing was written...
    assert fake_tpu.count() == 0  # ...nor sent
