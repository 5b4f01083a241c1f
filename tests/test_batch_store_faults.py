"""A Batch step whose bucket stops answering while its job runs (issue 13, point 8).

The fake GCS server (the session's, ``conftest.fake_gcs``) is frozen with SIGSTOP, as in
``test_lease_faults``: alive, silent, every request hangs. The driver is a launch of its
own (``DRIVER``: ``confpipe.run`` with ``BatchBackend`` on ``FakeBatch``, the real Google
clients); the job is released while the bucket is frozen, so the worker's last writes
(its result, its log, its exit record) wait on the silent server.

- Frozen for 10 s, within the store's retry window and the lease: both sides wait it out
  and the step ends SUCCESS with its result.
- Frozen for longer than the store's retry window (2 s) but within the lease: the job
  tries its result again with backoff (its log says so) and the step ends SUCCESS with
  that result, from the one job.
- Frozen for longer than the lease timeout (short lock timings, a short
  ``CONFPIPE_STORAGE_RETRY_WINDOW``): the step fails with one line, its job is deleted,
  and once the server is back no record says SUCCESS; the next launch takes the stale
  lease over and runs the step.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from confpipe.backends import LOG
from confpipe.engine.status import newest_job_dir, result_path, status_path
from confpipe.storage import store_for
from tests.waits import eventually

ROOT = Path(__file__).resolve().parents[1]

DRIVER = """\
import json, logging, sys
from confpipe import ConfpipeError, LockOptions, Resources, StepSpec, run
from confpipe.backends.gcp.batch import BatchBackend
from confpipe.backends.gcp.settings import GcpConf
from tests import jobfns
logging.basicConfig(level=logging.WARNING, format="%(message)s")
prefix, endpoint, work, heartbeat, lease = sys.argv[1:6]
conf = GcpConf(project="proj", image="img", batch_endpoint=endpoint, poll_interval=0.5)
config = {"pid_file": f"{work}/pid", "release": f"{work}/release"}
step = StepSpec("frozen", jobfns.hold, config, resources=Resources(cpu=1))
options = LockOptions(float(heartbeat), float(lease))
try:
    summary = run([step], prefix=prefix, lock_options=options, backend=BatchBackend(conf))
except ConfpipeError as err:
    print(f"error: {err}", file=sys.stderr)
    sys.exit(err.exit_code)
print(json.dumps({"ran": summary.ran, "outputs": summary.outputs}))
"""


@pytest.fixture
def batch_with_window(request: pytest.FixtureRequest, fake_gcs: Any) -> Iterator[Any]:
    """A FakeBatch whose jobs' stores retry for ``request.param`` seconds (None: the default)."""
    from confpipe.testing.batch import FakeBatch
    from confpipe.testing.grpc_fake import image_env

    env = image_env()
    if request.param is not None:
        env["CONFPIPE_STORAGE_RETRY_WINDOW"] = str(request.param)
    with FakeBatch(env=env) as fake:
        yield fake


def launch(
    fake: Any, prefix: str, work: Path, lock: tuple[float, float], window: float | None
) -> subprocess.Popen[str]:
    """A launch of ``DRIVER`` with these lock timings and retry window (None: the default)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("CONFPIPE_FULL_ERROR", None)
    if window is not None:
        env["CONFPIPE_STORAGE_RETRY_WINDOW"] = str(window)
    return subprocess.Popen(
        [sys.executable, "-c", DRIVER, prefix, fake.endpoint, str(work), *map(str, lock)],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def freeze_while_the_job_ends(fake_gcs: Any, work: Path, seconds: float) -> None:
    """Wait for the job to run, freeze the server, let the job return, thaw after ``seconds``."""
    eventually((work / "pid").exists, "the job to start", 60)
    server = fake_gcs._proc.pid
    os.kill(server, signal.SIGSTOP)  # alive, silent: every request hangs, unanswered
    try:
        (work / "release").touch()  # the job returns now: its result waits on the server
        time.sleep(seconds)
    finally:
        os.kill(server, signal.SIGCONT)


def answers(prefix: str) -> bool:
    try:
        store_for(prefix).read(f"{prefix}/nothing")
    except ConnectionError:
        time.sleep(0.2)
        return False
    return True


def ran(driver: subprocess.Popen[str]) -> str:
    """The output of the step the launch ``driver`` ran, once it ended well."""
    out, err = driver.communicate(timeout=120)
    assert driver.returncode == 0, err
    summary = json.loads(out.splitlines()[-1])
    (output,) = summary["outputs"].values()
    assert summary["ran"] == [output.rsplit("/", 1)[-1]]
    return str(output)


def succeeded(output: str) -> Any:
    """The value in the step's result record, which its status says is a SUCCESS."""
    status, result = records(output)
    assert status is not None and status["state"] == "SUCCESS", status
    assert result is not None
    return json.loads(result)["value"]


def records(output: str) -> tuple[dict[str, Any] | None, bytes | None]:
    """The step's status record and its result record, as the store has them now."""
    store = store_for(output)
    status, result = store.read(status_path(output)), store.read(result_path(output))
    return (
        json.loads(status.data) if status is not None else None,
        result.data if result is not None else None,
    )


@pytest.mark.slow
@pytest.mark.parametrize("batch_with_window", [None], indirect=True)
def test_a_bucket_frozen_for_10s_while_a_batch_job_ends_is_waited_out_and_the_step_succeeds(
    tmp_path: Path, fake_gcs: Any, gs_prefix: str, batch_with_window: Any
) -> None:
    driver = launch(batch_with_window, gs_prefix, tmp_path, (30, 90), None)
    freeze_while_the_job_ends(fake_gcs, tmp_path, 10)
    output = ran(driver)
    assert succeeded(output) == int((tmp_path / "pid").read_text())


WINDOW = 2.0  # the stores' retry window in the test below (driver and job alike)


@pytest.mark.slow
@pytest.mark.parametrize("batch_with_window", [WINDOW], indirect=True)
def test_a_bucket_gone_longer_than_the_lease_fails_the_batch_step_in_one_line_never_success(
    tmp_path: Path, fake_gcs: Any, gs_prefix: str, batch_with_window: Any
) -> None:
    driver = launch(batch_with_window, gs_prefix, tmp_path, (0.8, 4.0), WINDOW)
    # gone long enough that the driver, having given its lease up, fails the step (back
    # sooner, it could take its lease back and run the step again: also right)
    freeze_while_the_job_ends(fake_gcs, tmp_path, 12)
    _, err = driver.communicate(timeout=120)
    assert driver.returncode == 1, err
    assert "Traceback" not in err, err  # and no "Task exception was never retrieved"
    (line,) = [line for line in err.splitlines() if line.startswith("  frozen: ")]
    assert "lease given up: its heartbeat has not reached the store" in line, err
    assert batch_with_window.count("DeleteJob") == 1  # the job went with the lease
    eventually(lambda: answers(gs_prefix), "the server to answer again", 10)
    (output,) = store_for(gs_prefix).fs.ls(gs_prefix, detail=False)
    status, result = records(f"gs://{output}")
    assert status is not None and status["state"] == "RUNNING", status  # its lease is stale
    assert result is None
    again = launch(batch_with_window, gs_prefix, tmp_path, (0.8, 4.0), WINDOW)
    assert ran(again) == f"gs://{output}"  # took the stale lease over, ran the step again
    assert succeeded(f"gs://{output}") > 0


@pytest.mark.slow
@pytest.mark.parametrize("batch_with_window", [WINDOW], indirect=True)
def test_a_bucket_gone_longer_than_the_stores_window_but_within_the_lease_keeps_the_result(
    tmp_path: Path, fake_gcs: Any, gs_prefix: str, batch_with_window: Any
) -> None:
    # each request gives up after 2 s; the job retries its result with backoff, the driver
    # waits (no heartbeat is due while the bucket is gone: the lease is the default 90 s)
    driver = launch(batch_with_window, gs_prefix, tmp_path, (30, 90), WINDOW)
    freeze_while_the_job_ends(fake_gcs, tmp_path, 8)
    output = ran(driver)
    # the one job's result, written once the bucket was back
    assert succeeded(output) == int((tmp_path / "pid").read_text())
    assert batch_with_window.count("CreateJob") == 1
    log = store_for(output).read(f"{newest_job_dir(output)}/{LOG}")
    assert log is not None
    text = log.data.decode()
    assert "confpipe.worker: writing result.json: gs://confpipe-tests: the storage " in text
    assert "; trying again in 0.5s" in text and "; trying again in 1s" in text  # backoff


def test_a_record_is_tried_again_with_backoff_while_the_store_does_not_answer() -> None:
    from confpipe.backends.patience import patiently
    from confpipe.storage import StoreUnreachable

    outcomes: list[object] = [StoreUnreachable("silent"), TimeoutError("slow"), "written"]
    waits: list[float] = []

    def op() -> object:
        outcome = outcomes.pop(0)
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    told: list[str] = []
    tell = lambda err, delay: told.append(f"{err}; again in {delay:g}s")  # noqa: E731
    assert patiently(op, lambda d: waits.append(d) or False, tell) == "written"
    assert waits == [0.5, 1.0] and told == ["silent; again in 0.5s", "slow; again in 1s"]

    outcomes[:] = [StoreUnreachable("silent")] * 9
    with pytest.raises(StoreUnreachable):  # the wait says stop (a lost lease, a deadline)
        patiently(op, lambda d: d > 4)
    assert len(outcomes) == 4  # tried at once, after 0.5, 1, 2 and 4 s; not after 8 s

    outcomes[:] = [PermissionError("denied"), "never"]
    with pytest.raises(PermissionError):  # not an outage: raised at once
        patiently(op, lambda d: False)
