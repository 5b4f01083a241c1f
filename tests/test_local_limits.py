"""The local backend keeps its word: a job's memory limit holds, its children end with it,
its GPUs are its own, and its spooled log can't be redirected by another user.

Real jobs (subprocesses of the worker) throughout; GPUs are declared fake devices
(``backend.gpus=[0, 1]``): the scheduling needs no GPU.
"""

from __future__ import annotations

import json
import os
import stat
import tempfile
from pathlib import Path

import pytest

from confpipe.backends import JobRequest, JobState
from confpipe.backends.local import LocalBackend, build
from confpipe.backends.local.spool import Spool, open_private
from confpipe.backends.resources import GPU, Resources
from confpipe.backends.settings import BackendConf
from confpipe.errors import ConfigError, StepFailed
from confpipe.storage import store_for
from tests import jobfns, localjobs
from tests.gcpfakes import run
from tests.test_backend_local import read_pids, stage, state_of
from tests.test_cli import cli
from tests.waits import alive, eventually

MiB = 2**20


@pytest.mark.slow
def test_a_job_over_its_memory_is_killed_and_reported_with_its_peak(tmp_path: Path) -> None:
    with pytest.raises(StepFailed) as info:
        run(
            LocalBackend(), tmp_path / "hog-0123456789ab", localjobs.hog,
            Resources(memory=128 * MiB), megabytes=600, seconds=30,
        )  # fmt: skip
    first = str(info.value).splitlines()[0]
    assert first.startswith("step 'hog': MemoryError: exceeded its memory: 128 MiB (peak ")
    peak = int(first.rsplit("(peak ", 1)[1].removesuffix(" MiB)"))
    assert 128 < peak <= 700


@pytest.mark.slow
def test_the_memory_of_a_jobs_children_counts_against_its_limit(tmp_path: Path) -> None:
    with pytest.raises(StepFailed, match=r"^step 'out': MemoryError: exceeded its memory: 128 MiB"):
        run(
            LocalBackend(), tmp_path / "out", localjobs.hog_in_child,
            Resources(memory=128 * MiB), megabytes=300,
        )  # fmt: skip


@pytest.mark.slow
def test_a_job_under_its_memory_succeeds(tmp_path: Path) -> None:
    value = run(
        LocalBackend(), tmp_path / "out", localjobs.hog, Resources(memory=512 * MiB),
        megabytes=64, seconds=0.6,
    )  # fmt: skip
    assert value == 64 * MiB


@pytest.mark.slow
@pytest.mark.parametrize("own_session", [False, True], ids=["same-group", "setsid"])
def test_a_jobs_children_do_not_outlive_it(tmp_path: Path, own_session: bool) -> None:
    pid_file = tmp_path / "pids"
    value = run(
        LocalBackend(), tmp_path / "out", localjobs.spawn,
        pid_file=str(pid_file), own_session=own_session, linger=1.0,
    )  # fmt: skip
    assert value == "done"  # the job itself succeeded
    job, child = read_pids(pid_file)
    assert not alive(job)
    eventually(lambda: not alive(child), "the job's child to be stopped", seconds=2)


@pytest.mark.slow
def test_cancel_stops_a_child_that_left_the_jobs_session(tmp_path: Path) -> None:
    backend = LocalBackend()
    pid_file = tmp_path / "pids"
    job_dir = stage(tmp_path, localjobs.spawn, pid_file=str(pid_file), own_session=True, linger=60)
    handle = backend.submit(JobRequest("s", job_dir, Resources()))
    job, child = read_pids(pid_file)
    eventually(lambda: child in _seen(backend, handle), "the walk to see the child", seconds=5)
    backend.cancel(handle)
    assert state_of(backend, handle) is JobState.CANCELLED
    assert not alive(job)
    eventually(lambda: not alive(child), "the detached child to be stopped", seconds=2)


def _seen(backend: LocalBackend, handle: object) -> set[int]:
    """The descendants the backend's walks of the job's tree have seen so far."""
    tree = handle.tree  # type: ignore[attr-defined]
    return set(tree._known) if tree is not None else set()


@pytest.mark.slow
def test_two_one_gpu_jobs_share_two_devices_and_a_third_waits(tmp_path: Path) -> None:
    backend = LocalBackend(cpu=8, gpus=[0, 1])
    one = Resources(gpu=GPU("any", 1))
    files = [tmp_path / f"devices{i}" for i in range(3)]
    handles = [
        backend.submit(
            JobRequest(f"s{i}", stage(tmp_path, localjobs.gpu_sleeper, devices_file=str(f)), one)
        )
        for i, f in enumerate(files)
    ]
    try:
        for f in files[:2]:
            eventually(f.exists, f"{f} to be written")
        assert {f.read_text() for f in files[:2]} == {"0", "1"}
        assert state_of(backend, handles[2]) is JobState.QUEUED
        freed = files[0].read_text()
        backend.cancel(handles[0])
        eventually(files[2].exists, "the third job to start on the freed device")
        assert files[2].read_text() == freed
    finally:
        backend.close()


@pytest.mark.slow
def test_a_gpu_job_sees_its_devices_and_a_cpu_job_is_left_alone(tmp_path: Path) -> None:
    backend = LocalBackend(gpus=["GPU-a", "GPU-b", "GPU-c"])
    two = Resources(gpu=GPU("any", 2))
    assert run(backend, tmp_path / "a", localjobs.visible_devices, two) == "GPU-a,GPU-b"
    assert run(backend, tmp_path / "b", localjobs.visible_devices) == os.environ.get(
        "CUDA_VISIBLE_DEVICES", "<unset>"
    )


def test_more_gpus_than_the_machine_has_is_a_config_error() -> None:
    with pytest.raises(ConfigError) as info:
        build(BackendConf(gpus=0)).check("train", Resources(gpu=GPU("nvidia-l4", 1)))
    assert str(info.value) == (
        "step 'train': resources.gpu.count=1 is more than the 0 GPU(s) of the local backend "
        "(backend.gpus=[]); lower it, set backend.gpus or use backend=gcp"
    )
    assert build(BackendConf(gpus=2)).check("t", Resources(gpu=GPU("x", 2))) == "local job"


@pytest.mark.parametrize(
    ("gpus", "message"),
    [
        (-1, "backend.gpus: must be a count >= 0 or a list of ids, got -1"),
        ([0, 0], "backend.gpus: a device is listed twice in [0, 0]"),
        ("two", "backend.gpus: must be a count (e.g. 2) or a list of device ids (e.g. [0, 1]), "
         "got 'two'"),
        ([-1], "backend.gpus: -1 is not a device id; use indices (e.g. [0, 1]) or GPU UUIDs"),
    ],
)  # fmt: skip
def test_a_wrong_backend_gpus_is_one_line(gpus: object, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        build(BackendConf(gpus=gpus))
    assert str(info.value) == message


GPU_STEP = """\
# @package _global_
steps:
  train:
    fn: tests.localjobs.visible_devices
    resources: {gpu: {type: any, count: COUNT}}
"""


@pytest.mark.slow
def test_a_gpu_step_runs_on_a_declared_device_and_too_many_gpus_is_one_line_exit_2(
    tmp_path: Path,
) -> None:
    confs = tmp_path / "confs" / "experiment"
    confs.mkdir(parents=True)
    (confs / "one.yaml").write_text(GPU_STEP.replace("COUNT", "1"))
    (confs / "two.yaml").write_text(GPU_STEP.replace("COUNT", "2"))
    refused = cli("--config-dir", "confs", "+experiment=two", "backend.gpus=[1]", cwd=tmp_path)
    assert refused.returncode == 2
    assert refused.stderr.strip().splitlines() == [
        "confpipe: error: step 'train': resources.gpu.count=2 is more than the 1 GPU(s) of the "
        "local backend (backend.gpus=[1]); lower it, set backend.gpus or use backend=gcp  "
        "(CONFPIPE_FULL_ERROR=1 shows the traceback)"
    ]
    assert not (tmp_path / "outputs").exists()
    ran = cli("--config-dir", "confs", "+experiment=one", "backend.gpus=[1]", cwd=tmp_path)
    assert ran.returncode == 0, ran.stderr
    (result,) = (tmp_path / "outputs").glob("train-*/.confpipe/result.json")
    assert json.loads(result.read_text())["value"] == "1"


def test_without_nvidia_smi_the_machine_has_no_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    assert LocalBackend().gpus.devices == ()


def test_a_spool_file_is_never_opened_through_a_planted_symlink(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("precious")
    spool = Spool()
    path = spool.new_log()
    try:
        assert stat.S_IMODE(os.stat(os.path.dirname(path)).st_mode) == 0o700
        os.symlink(victim, path)  # a name guessed in the folder
        with pytest.raises(FileExistsError):
            open_private(path)
        os.unlink(path)
        with open_private(path) as f:
            f.write(b"log")
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        assert victim.read_text() == "precious"
    finally:
        Path(path).unlink(missing_ok=True)
        spool.tidy()
    assert not Path(path).parent.exists()


@pytest.mark.slow
def test_a_remote_jobs_spooled_log_ignores_a_symlink_at_the_old_predictable_path(
    tmp_path: Path, gs_prefix: str
) -> None:
    victim = tmp_path / "victim"
    victim.write_text("precious")
    planted = tmp_path / "planted"
    planted.mkdir()
    (planted / "0-log.txt").symlink_to(victim)
    old = Path(tempfile.gettempdir(), f"confpipe-jobs-{os.getpid()}")
    if old.exists() or old.is_symlink():
        pytest.skip(f"{old} is there already (another process's?)")
    old.symlink_to(planted)
    try:
        out = f"{gs_prefix}/add-0123456789ab"
        assert run(LocalBackend(), out, jobfns.add, a=1, b=2)["sum"] == 3  # type: ignore[index]
    finally:
        old.unlink()
    assert victim.read_text() == "precious"
    assert [p.name for p in planted.iterdir()] == ["0-log.txt"]
    logs = store_for(out).fs.glob(f"{out}/.confpipe/jobs/*/log.txt")
    assert len(logs) == 1
    assert "adding 1 and 2" in store_for(out).fs.cat(logs[0]).decode()
