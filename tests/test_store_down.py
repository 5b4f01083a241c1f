"""A gs:// store that goes down mid-run: each step fails with one line, within the store's
retry window, and gcsfs's retry tracebacks stay out of the terminal.

Each test starts its own fake-gcs-server (it is killed), unlike the shared one of conftest.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from confpipe import ConfigError, ConfpipeError
from confpipe.storage import Store, StoreUnreachable
from confpipe.testing.gcs import FakeGcs, find_binary
from tests.waits import eventually

ROOT = Path(__file__).resolve().parents[1]
BUCKET = "store-down"
WINDOW = 4.0  # the retry window the launch is given (CONFPIPE_STORAGE_RETRY_WINDOW)

EXPERIMENT = """\
# @package _global_
steps:
  first:
    fn: tests.pipelines.record_url
    config: {log: "${oc.env:CALLS_LOG}", name: first, sleep: 2}
  second:
    fn: tests.pipelines.record_url
    config: {log: "${oc.env:CALLS_LOG}", name: second, sleep: 2}
  after:
    fn: tests.pipelines.record_url
    config: {log: "${oc.env:CALLS_LOG}", name: "${step:first}"}
"""


@pytest.fixture
def own_gcs() -> Iterator[FakeGcs]:
    """A fake-gcs-server of this test's own, with bucket BUCKET."""
    pytest.importorskip("gcsfs", reason="gs:// tests need confpipe[gcp]")
    try:
        find_binary()
    except ConfpipeError as err:
        pytest.skip(str(err))
    with FakeGcs() as gcs:
        gcs.create_bucket(BUCKET)
        yield gcs


@pytest.mark.slow
def test_a_store_that_goes_down_fails_each_step_in_one_line_within_the_retry_window(
    tmp_path: Path, own_gcs: FakeGcs
) -> None:
    confs = tmp_path / "confs" / "experiment"
    confs.mkdir(parents=True)
    (confs / "down.yaml").write_text(EXPERIMENT)
    calls = tmp_path / "calls.log"
    env = {**os.environ, **own_gcs.env, "PYTHONPATH": str(ROOT), "CALLS_LOG": str(calls)}
    env["CONFPIPE_STORAGE_RETRY_WINDOW"] = str(WINDOW)
    env.pop("CONFPIPE_FULL_ERROR", None)
    prefix = f"gs://{BUCKET}/{uuid.uuid4().hex[:8]}"
    launch = subprocess.Popen(
        [sys.executable, "-m", "confpipe", "--config-dir", "confs", "+experiment=down",
         f"prefix={prefix}"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    eventually(lambda: len(calls.read_text().split()) >= 4 if calls.exists() else False,
               "both steps to start", 60)  # fmt: skip
    assert own_gcs._proc is not None
    own_gcs._proc.kill()  # the storage server is gone, mid-step
    killed = time.monotonic()
    out, err = launch.communicate(timeout=120)
    took = time.monotonic() - killed
    assert launch.returncode == 1, err
    # the steps end within the window (plus their own 2 s and the probes), not minutes later
    assert took < WINDOW + 10, f"took {took:.0f}s after the store went down"
    text = out + err
    assert "Traceback" not in text, text
    assert "gcsfs" not in text, text
    lines = err.splitlines()
    assert len(lines) <= 25, err  # was: 34 retry tracebacks of gcsfs
    for step in ("first", "second"):
        (failed,) = [line for line in lines if line.startswith(f"failed {step} (")]
        # confpipe's own records say how long the store was silent; a step whose own code
        # reached the server first fails with that code's error (gcsfs's, not retried by us)
        ours = "has not answered for" in failed and f"retries for at most {WINDOW:g}s" in failed
        assert ours or "Cannot connect to host" in failed, failed
    assert any(line.startswith("dep failed after") for line in lines), err


def test_a_retry_window_that_is_not_seconds_is_a_config_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pytest.importorskip("gcsfs", reason="gs:// tests need confpipe[gcp]")
    from confpipe.storage.gcs import GcsStore

    monkeypatch.setenv("CONFPIPE_STORAGE_RETRY_WINDOW", "soon")
    with pytest.raises(ConfigError, match=r"CONFPIPE_STORAGE_RETRY_WINDOW='soon': give"):
        GcsStore(endpoint="http://127.0.0.1:9")
    monkeypatch.setenv("CONFPIPE_STORAGE_RETRY_WINDOW", "12")
    assert GcsStore(endpoint="http://127.0.0.1:9").retry_window == 12


@pytest.mark.slow
def test_a_frozen_server_fails_each_call_within_the_window_and_is_used_again_when_back(
    own_gcs: FakeGcs,
) -> None:
    from confpipe.storage.gcs import GcsStore

    store = GcsStore(endpoint=own_gcs.endpoint, retry_window=2)
    path = f"gs://{BUCKET}/{uuid.uuid4().hex[:8]}/record"
    store.write(path, b"before")
    assert own_gcs._proc is not None
    os.kill(own_gcs._proc.pid, signal.SIGSTOP)  # alive, silent: requests hang, unanswered
    try:
        for _ in range(3):  # the first waits out the window; the others fail at once or probe
            started = time.monotonic()
            with pytest.raises(StoreUnreachable, match=r"has not answered for \d+s \(the gs://"):
                store.write(path, b"during")
            assert time.monotonic() - started < 2 + 3.5  # the window, or one quick probe
    finally:
        os.kill(own_gcs._proc.pid, signal.SIGCONT)
    eventually(lambda: _answers(store, path), "the server to answer again", 10)
    store.write(path, b"after")
    blob = store.read(path)
    assert blob is not None and blob.data == b"after"


def _answers(store: Store, path: str) -> bool:
    try:
        store.read(path)
    except StoreUnreachable:
        time.sleep(0.2)
        return False
    return True
