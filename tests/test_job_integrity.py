"""A job runs what the driver sent, not whatever the bucket holds by then (issue 13, point 9).

The sha256 of ``call.pkl`` and of the staged code archive travel in the job's own spec (its
environment, sent through the backend's API); the worker and ``vm`` refuse a file of another
digest before unpickling or unpacking it. "Someone else wrote to the bucket" is played by
``Tampering``, a backend that overwrites the staged file between the driver's write and the
job's read (after the driver staged it, before the job starts), around a real backend on
the fakes with the real Google client libraries and fake GCS.
"""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path

import cloudpickle
import pytest

from confpipe.backends import CALL, ERROR, INTEGRITY, Backend, JobRequest, JobStatus
from confpipe.backends.gcp.batch import BatchBackend
from confpipe.backends.gcp.settings import GcpConf
from confpipe.backends.gcp.staging import CodeStager, archive
from confpipe.backends.gcp.tpu import TpuBackend
from confpipe.backends.local import LocalBackend
from confpipe.backends.resources import Resources
from confpipe.backends.worker import main as worker_main
from confpipe.engine import status
from confpipe.errors import StepFailed
from confpipe.storage import store_for
from confpipe.testing.batch import FakeBatch
from confpipe.testing.tpu import FakeTpu
from tests import jobfns
from tests.gcpfakes import run

INTEGRITY_LINE = r"integrity check failed: call\.pkl's sha256 is [0-9a-f]{64}, the job was sent "


def write_marker(marker: str) -> str:
    """What an intruder's call.pkl would run: it leaves a mark."""
    Path(marker).write_text("ran")
    return "intruder"


class Tampering:
    """A real backend whose staged files someone else replaces just before each job starts:
    ``tamper(job)`` runs after the driver staged the job and before the inner submit."""

    def __init__(self, inner: Backend, tamper: Callable[[JobRequest], None]) -> None:
        self.inner, self.tamper = inner, tamper
        self.kind, self.reattaches = inner.kind, inner.reattaches
        self.max_poll_interval = inner.max_poll_interval

    def check(self, step: str, resources: Resources) -> str:
        return self.inner.check(step, resources)

    def submit(self, job: JobRequest) -> object:
        self.tamper(job)
        return self.inner.submit(job)

    def poll(self, handle: object) -> JobStatus:
        return self.inner.poll(handle)

    def cancel(self, handle: object) -> None:
        self.inner.cancel(handle)

    def close(self) -> None:
        self.inner.close()


def replace_call(marker: Path) -> Callable[[JobRequest], None]:
    def tamper(job: JobRequest) -> None:
        payload = cloudpickle.dumps((write_marker, {"marker": str(marker)}, {}))
        store_for(job.job_dir).write(f"{job.job_dir}/{CALL}", payload)

    return tamper


def batch_conf(fake: FakeBatch) -> GcpConf:
    return GcpConf(project="proj", image="img", batch_endpoint=fake.endpoint, poll_interval=0.05)


# -- the worker itself -----------------------------------------------------------------------


def test_the_worker_never_unpickles_a_call_pkl_of_another_digest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    marker = tmp_path / "marker"
    job_dir = tmp_path / "job"
    job_dir.mkdir()
    payload = cloudpickle.dumps((write_marker, {"marker": str(marker)}, {}))
    (job_dir / CALL).write_bytes(payload)
    sent = hashlib.sha256(b"what the driver sent").hexdigest()
    monkeypatch.setenv("CONFPIPE_CALL_SHA256", sent)
    assert worker_main([str(job_dir)]) == 1
    assert not marker.exists()
    record = json.loads((job_dir / ERROR).read_text())
    actual = hashlib.sha256(payload).hexdigest()
    assert record["type"] == INTEGRITY
    assert record["message"] == (
        f"integrity check failed: call.pkl's sha256 is {actual}, the job was sent {sent}"
    )


# -- a replaced call.pkl, end to end on each backend --------------------------------------------


@pytest.fixture(params=["local", "batch", "tpu"])
def any_backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    if request.param == "local":
        backend: Backend = LocalBackend()
    elif request.param == "batch":
        backend = BatchBackend(batch_conf(request.getfixturevalue("fake_batch")))
    else:
        tpu: FakeTpu = request.getfixturevalue("fake_tpu")
        backend = TpuBackend(
            GcpConf(project="proj", image="img", tpu_endpoint=tpu.endpoint, poll_interval=0.05)
        )
    yield backend
    backend.close()


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_a_call_pkl_replaced_in_the_bucket_fails_the_step_with_an_integrity_error(
    any_backend: Backend, gs_prefix: str, tmp_path: Path
) -> None:
    marker = tmp_path / "marker"
    tampering = Tampering(any_backend, replace_call(marker))
    resources = Resources(tpu="v5litepod-8") if isinstance(any_backend, TpuBackend) else None
    with pytest.raises(StepFailed, match=INTEGRITY_LINE) as failed:
        run(tampering, f"{gs_prefix}/add-0123456789ab", jobfns.add, resources, a=1, b=2)
    assert f"{INTEGRITY}: integrity check failed" in str(failed.value)
    assert not marker.exists()  # the intruder's call never ran


@pytest.mark.slow
def test_a_job_is_sent_its_call_pkl_digest_and_runs_it(
    fake_batch: FakeBatch, gs_prefix: str
) -> None:
    backend = BatchBackend(batch_conf(fake_batch))
    out = f"{gs_prefix}/add-0123456789ab"
    try:
        value = run(backend, out, jobfns.add, a=1, b=2)
    finally:
        backend.close()
    assert isinstance(value, dict) and value["sum"] == 3
    (job,) = fake_batch.jobs()
    sent = job.task_groups[0].task_spec.environment.variables["CONFPIPE_CALL_SHA256"]
    jobs = status.jobs_dir(out)
    (folder,) = store_for(jobs).fs.ls(jobs, detail=False)
    blob = store_for(jobs).read(f"gs://{folder}/{CALL}")
    assert blob is not None and sent == hashlib.sha256(blob.data).hexdigest()


# -- the staged code archive ---------------------------------------------------------------


def git_repo(root: Path, files: dict[str, str]) -> Path:
    root.mkdir()
    for args in (["init", "-q"], ["config", "user.email", "t@t"], ["config", "user.name", "t"]):
        subprocess.run(["git", *args], cwd=root, check=True)
    for name, text in files.items():
        (root / name).write_text(text)
    subprocess.run(["git", "add", *files], cwd=root, check=True)
    return root


def other_archive(marker: Path) -> bytes:
    """An archive an intruder would stage: a module that leaves a mark when imported."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        data = f"open({str(marker)!r}, 'w').write('ran')\n".encode()
        info = tarfile.TarInfo("sitecustomize.py")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def test_staging_replaces_an_archive_whose_bytes_are_not_its_name(
    tmp_path: Path, gs_prefix: str
) -> None:
    repo = git_repo(tmp_path / "repo", {"a.py": "x = 1\n"})
    data = archive(str(repo))
    digest = hashlib.sha256(data).hexdigest()
    url = f"{gs_prefix}/.confpipe/code/code-{digest[:16]}.tar.gz"
    store = store_for(url)
    store.write(url, other_archive(tmp_path / "marker"))  # someone else's bytes, our name
    staged = CodeStager(f"{gs_prefix}/.confpipe/code", str(repo)).staged()
    assert staged == (url, digest)
    blob = store.read(url)
    assert blob is not None and blob.data == data


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_a_code_archive_replaced_in_the_bucket_fails_the_step_before_it_is_unpacked(
    fake_batch: FakeBatch, gs_prefix: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = git_repo(tmp_path / "repo", {"a.py": "x = 1\n"})
    monkeypatch.chdir(repo)
    marker = tmp_path / "marker"
    inner = BatchBackend(batch_conf(fake_batch), f"{gs_prefix}/code")

    def tamper(job: JobRequest) -> None:
        assert inner._stager is not None
        url, _ = inner._stager.staged()  # staged as the driver does, then replaced
        store_for(url).write(url, other_archive(marker))

    backend = Tampering(inner, tamper)
    try:
        with pytest.raises(StepFailed) as failed:
            run(backend, f"{gs_prefix}/add-0123456789ab", jobfns.add, a=1, b=2)
    finally:
        backend.close()
    text = str(failed.value)
    assert f"{INTEGRITY}: integrity check failed: code-" in text
    assert ".tar.gz's sha256 is " in text and ", the job was sent " in text
    assert not marker.exists()  # never unpacked, never imported
