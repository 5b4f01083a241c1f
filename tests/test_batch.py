"""The Cloud Batch backend: golden Job requests, machine choice, and whole jobs on FakeBatch.

Golden files (tests/golden/batch_*.json) pin the requests; accept an intended change with
``CONFPIPE_UPDATE_GOLDEN=1 .venv/bin/pytest tests/test_batch.py -k golden``. They hold the
request with env values redacted (``batch_request.redacted``): the real request must carry
the values, so the tests check those separately and never write them down.
End-to-end tests drive ``run_job`` against the real google-cloud-batch client talking to
the in-process fake, whose jobs run ``python -m confpipe.backends.vm`` -> the worker.
What every backend does (failures, log tails, cancel, timeouts, re-attach) is in
test_backend_contract.py; here, what Batch does its own way.
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import json
import logging
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from confpipe.backends import JobRequest
from confpipe.backends.gcp.batch import BatchBackend, job_request, redacted
from confpipe.backends.gcp.batch_request import job_dir_of, job_status
from confpipe.backends.gcp.job import StagedCode
from confpipe.backends.gcp.machine_catalog import choose
from confpipe.backends.gcp.settings import GcpConf
from confpipe.backends.gcp.staging import archive
from confpipe.backends.gcp.vm import pip_command
from confpipe.backends.resources import GPU, Resources
from confpipe.cancel import CancelScope
from confpipe.engine import status
from confpipe.engine.remote import run_job
from confpipe.errors import ConfigError, StepFailed
from confpipe.testing.batch import FakeBatch
from tests import batchjobs, gcpfakes, jobfns
from tests.gcpfakes import CALL_DIGEST, CODE, GOLDEN, JOB_DIR, in_thread, run
from tests.waits import eventually

GiB = 2**30
SETTINGS = GcpConf(**gcpfakes.SETTINGS)
SECRET = "projects/proj/secrets/hf-token/versions/latest"
ENV_VALUE = "env-value-that-must-not-leak-7f3a"


# -- golden requests -----------------------------------------------------------------------


def check_golden(name: str, data: dict[str, Any], folder: Path = GOLDEN) -> None:
    """Compare ``data`` with ``folder/batch_{name}.json``; CONFPIPE_UPDATE_GOLDEN=1 rewrites it."""
    text = json.dumps(data, indent=2, sort_keys=True) + "\n"
    path = folder / f"batch_{name}.json"
    gcpfakes.check_golden(path, text, "Batch request", "tests/test_batch.py")


def golden_request(step: str, resources: Resources, code: StagedCode | None = None) -> Any:
    job = JobRequest(step, JOB_DIR.format(step=step), resources, call_digest=CALL_DIGEST)
    return job_request(SETTINGS, job, driver="golden-driver", code=code)


def test_golden_cpu_step() -> None:
    resources = Resources(cpu=4, memory=16 * GiB, disk=100 * GiB, timeout=7200)
    check_golden("cpu_step", redacted(golden_request("tokenize", resources)))


def test_golden_gpu_spot_step_with_retries() -> None:
    resources = Resources(
        cpu=8, memory=32 * GiB, gpu=GPU("nvidia-l4", 1), spot=True, max_retries=3, timeout=86400
    )
    check_golden("gpu_spot_retries", redacted(golden_request("train", resources)))


def test_golden_one_l4_gets_a_g2_machine_with_drivers_installed() -> None:
    request = golden_request("infer", Resources(gpu=GPU("nvidia-l4", 1)))
    check_golden("gpu_l4", redacted(request))
    instance = request.allocation_policy.instances[0]
    assert instance.policy.machine_type == "g2-standard-4"  # the smallest g2 with one L4
    assert instance.install_gpu_drivers
    assert [(a.type_, a.count) for a in instance.policy.accelerators] == [("nvidia-l4", 1)]


def test_golden_eight_a100s_get_an_a2_highgpu_8g() -> None:
    resources = Resources(gpu=GPU("nvidia-tesla-a100", 8), timeout=12 * 3600, disk=500 * GiB)
    request = golden_request("pretrain", resources)
    check_golden("gpu_a100x8", redacted(request))
    instance = request.allocation_policy.instances[0]
    assert instance.policy.machine_type == "a2-highgpu-8g"
    assert instance.install_gpu_drivers
    assert [(a.type_, a.count) for a in instance.policy.accelerators] == [("nvidia-tesla-a100", 8)]


def test_golden_env_secret_env_and_pip_extras_keep_env_values_out() -> None:
    resources = Resources(
        cpu=2,
        env={"WANDB_API_KEY": ENV_VALUE},
        secret_env={"HF_TOKEN": SECRET},
        pip_extras=("tokenize", "eval"),
    )
    request = golden_request("evaluate", resources, code=CODE)
    env = request.task_groups[0].task_spec.environment
    assert env.variables["WANDB_API_KEY"] == ENV_VALUE  # the job needs the value...
    assert dict(env.secret_variables) == {"HF_TOKEN": SECRET}
    data = redacted(request)
    assert ENV_VALUE not in json.dumps(data)  # ...but no file or log may hold it
    check_golden("env_pip_extras", data)


def test_golden_mismatch_says_how_to_accept_the_change(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CONFPIPE_UPDATE_GOLDEN", raising=False)
    (tmp_path / "batch_x.json").write_text("{}\n")
    with pytest.raises(pytest.fail.Exception, match=r"CONFPIPE_UPDATE_GOLDEN=1 .*pytest"):
        check_golden("x", {"a": 1}, folder=tmp_path)


# -- machines and preflight ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("resources", "machine"),
    [
        (Resources(cpu=1), "e2-standard-2"),
        (Resources(cpu=4, memory=16 * GiB), "e2-standard-4"),
        (Resources(cpu=2, memory=64 * GiB), "e2-highmem-8"),
        (Resources(cpu=48), "n2d-standard-48"),
        (Resources(cpu=8, memory=700 * GiB), "n2d-highmem-96"),
        (Resources(cpu=8, memory=32 * GiB, gpu=GPU("nvidia-l4", 1)), "g2-standard-8"),
        (Resources(cpu=4, gpu=GPU("nvidia-l4", 2)), "g2-standard-24"),
        (Resources(cpu=4, gpu=GPU("nvidia-tesla-t4", 1)), "n1-standard-4"),
        (Resources(cpu=8, memory=48 * GiB, gpu=GPU("nvidia-tesla-v100", 1)), "n1-highmem-8"),
        (Resources(gpu=GPU("nvidia-tesla-a100", 2)), "a2-highgpu-2g"),
        (Resources(gpu=GPU("nvidia-tesla-a100", 16)), "a2-megagpu-16g"),
        (Resources(gpu=GPU("nvidia-a100-80gb", 1)), "a2-ultragpu-1g"),
        (Resources(gpu=GPU("nvidia-h100-80gb", 8)), "a3-highgpu-8g"),
        (Resources(gpu=GPU("nvidia-h100-80gb", 1), spot=True), "a3-highgpu-1g"),
        (Resources(cpu=2, machine_type="c2-standard-8"), "c2-standard-8"),
    ],
)
def test_the_smallest_fitting_machine_is_chosen(resources: Resources, machine: str) -> None:
    assert choose(resources).machine.name == machine


PREFLIGHT_ERRORS = [
    (
        Resources(gpu=GPU("nvidia-l5", 1)),
        "resources.gpu.type: unknown GPU 'nvidia-l5' (did you mean 'nvidia-l4'?); Cloud Batch "
        "GPUs: nvidia-l4, nvidia-tesla-t4,",
    ),
    (Resources(gpu=GPU("nvidia-l4", 3)), "comes 1, 2, 4 or 8 per machine (g2-standard-*)"),
    (
        Resources(memory=500 * GiB, gpu=GPU("nvidia-l4", 1)),
        "no g2-standard-* machine with 1 nvidia-l4 has that much; machines for 1 nvidia-l4: "
        "g2-standard-4 (4 vCPU, 16GiB),",
    ),
    (
        Resources(memory=100 * GiB, gpu=GPU("nvidia-tesla-v100", 1)),
        "no n1-* machine with 1 nvidia-tesla-v100 has that much; n1 machines with "
        "nvidia-tesla-v100 have at most 1 GPU(s): 12 vCPU/78GiB; 2 GPU(s): 24 vCPU/156GiB;",
    ),
    (Resources(memory=4000 * GiB), "no machine has that much; largest: e2-standard-32"),
    (
        Resources(cpu=8, machine_type="e2-standard-4"),
        "resources.cpu=8 doesn't fit resources.machine_type=e2-standard-4 (4 vCPU, 16GiB); "
        "machines that fit: e2-standard-8 (8 vCPU, 32GiB)",
    ),
    (Resources(machine_type="e2-standrd-4"), "(did you mean e2-standard-4"),
    (Resources(machine_type="g2-standard-4"), "set resources.gpu: {type: nvidia-l4, count: 1}"),
    (
        Resources(gpu=GPU("nvidia-tesla-t4", 1), machine_type="a2-highgpu-1g"),
        "can't carry 1 nvidia-tesla-t4; machines that can: n1-standard-1",
    ),
    (Resources(gpu=GPU("nvidia-h100-80gb", 1)), "only offered as Spot capacity"),
    (Resources(max_retries=11), "Cloud Batch retries a task at most 10 times"),
    (Resources(tpu="v5litepod-8"), "Cloud Batch runs CPU/GPU steps; TPU steps run on"),
    (Resources(secret_env={"T": "hf-token"}), "not a Secret Manager version name"),
]


def offline() -> BatchBackend:
    """A backend whose client is never used (checks only): no server behind the endpoint."""
    return BatchBackend(GcpConf(project="proj", image="img", batch_endpoint="127.0.0.1:9"))


@pytest.mark.parametrize(("resources", "message"), PREFLIGHT_ERRORS)
def test_preflight_names_the_valid_options(resources: Resources, message: str) -> None:
    backend = offline()
    with pytest.raises(ConfigError) as err:
        backend.check("train", resources)
    backend.close()
    assert str(err.value).startswith("step 'train': ")
    assert message in str(err.value)


@pytest.mark.parametrize(
    ("region", "gpu", "message"),
    [
        (
            "europe-west2",
            GPU("nvidia-tesla-a100", 8),
            "step 'train': resources.gpu.type=nvidia-tesla-a100: no zone of "
            "backend.region=europe-west2 offers it; regions that do: us-central1, us-east1, "
            "us-west1, us-west3, us-west4, europe-west4, asia-northeast1, asia-northeast3, "
            "asia-southeast1, me-west1; GPU types in europe-west2: nvidia-l4, nvidia-tesla-t4",
        ),
        (
            "us-south1",
            GPU("nvidia-l4", 1),
            "step 'train': resources.gpu.type=nvidia-l4: no zone of backend.region=us-south1 "
            "offers it; regions that do: us-central1, ",
        ),
        (
            "africa-south1",
            GPU("nvidia-tesla-t4", 1),
            "; africa-south1 has no GPUs",
        ),
    ],
)
def test_a_gpu_the_region_doesnt_offer_is_refused_before_anything_runs(
    region: str, gpu: GPU, message: str
) -> None:
    backend = BatchBackend(
        GcpConf(project="proj", image="img", region=region, batch_endpoint="127.0.0.1:9")
    )
    with pytest.raises(ConfigError) as err:
        backend.check("train", Resources(gpu=gpu))
    backend.close()
    assert message in str(err.value)
    assert "\n" not in str(err.value)  # one line


def test_every_gpu_type_has_regions_and_every_golden_region_offers_it() -> None:
    from confpipe.backends.gcp.machine_catalog import GPU_REGIONS, GPUS

    assert set(GPU_REGIONS) == set(GPUS)
    assert all(GPU_REGIONS[t] for t in GPUS)
    assert all(SETTINGS.region in GPU_REGIONS[t] for t in ("nvidia-l4", "nvidia-tesla-a100"))


def test_pip_extras_need_the_working_tree_staged() -> None:
    backend = offline()
    with pytest.raises(ConfigError, match=r"pip_extras=\['eval'\] needs the working tree staged"):
        backend.check("s", Resources(pip_extras=("eval",)))
    backend.close()


def test_a_timeout_failure_says_so() -> None:
    from google.cloud import batch_v1

    job = batch_v1.Job(name="projects/p/locations/r/jobs/j")
    job.status.state = batch_v1.JobStatus.State.FAILED
    failed = batch_v1.TaskStatus.State.FAILED
    event = batch_v1.StatusEvent(description="Task state is updated", task_state=failed)
    event.task_execution.exit_code = 50005
    job.status.status_events.append(event)
    assert "exit code 50005: it ran past resources.timeout" in job_status(job).detail


@pytest.mark.parametrize(
    ("timeout", "limit"), [(3, "8s"), (600, "660s"), (3600, "3960s"), (86400, "87000s")]
)
def test_max_run_duration_is_the_timeout_plus_a_grace_for_the_drivers_own_timer(
    timeout: float, limit: str
) -> None:
    request = redacted(golden_request("t", Resources(timeout=timeout)))
    assert request["taskGroups"][0]["taskSpec"]["maxRunDuration"] == limit


@pytest.mark.parametrize(
    ("disk", "size_gb"), [(10 * GiB, "30"), (30 * GiB, "30"), (100.5 * GiB, "101")]
)
def test_disk_is_the_whole_boot_disk_never_below_batchs_default(disk: float, size_gb: str) -> None:
    request = redacted(golden_request("t", Resources(disk=int(disk))))
    assert request["allocationPolicy"]["instances"][0]["policy"]["bootDisk"] == {"sizeGb": size_gb}
    assert "bootDiskMib" not in request["taskGroups"][0]["taskSpec"]["computeResource"]


def test_the_batch_api_is_pinned() -> None:
    """What users and the compiler call: a change here is a change they see."""
    assert [f.name for f in dataclasses.fields(GcpConf)] == [  # the backend.* keys of gcp
        "kind", "cpu", "memory", "gpus", "project", "region", "image", "service_account", "network",
        "subnetwork", "labels", "poll_interval", "api_timeout", "stage_code", "batch_endpoint",
        "tpu_zone", "tpu_runtime_version", "tpu_endpoint", "tpu_start_timeout", "storage_endpoint",
    ]  # fmt: skip
    assert list(inspect.signature(BatchBackend).parameters) == ["settings", "code_folder"]
    assert list(inspect.signature(FakeBatch).parameters) == [
        "secrets", "env", "cwd", "step_seconds", "port", "command",
    ]  # fmt: skip
    assert sorted(n for n in dir(FakeBatch) if not n.startswith("_")) == [
        "cloud_log", "count", "endpoint", "jobs", "pid", "preempt_next", "refuse_connections",
        "start", "stop",
    ]  # fmt: skip


@pytest.mark.slow
def test_the_backend_module_imports_no_google_until_constructed() -> None:
    gcpfakes.imports_no_google(
        "confpipe.backends.gcp.batch",
        "confpipe.backends.gcp.cloud",
        "confpipe.backends.gcp.api",
        "confpipe.backends.gcp.settings",
    )


# -- end to end against FakeBatch ----------------------------------------------------------


@pytest.fixture
def fake() -> Iterator[FakeBatch]:
    with FakeBatch(secrets={SECRET: "secret-value-9c1e"}) as server:
        yield server


def make_backend(fake: FakeBatch, code_folder: str | None = None, **settings: Any) -> BatchBackend:
    settings.setdefault("poll_interval", 0.05)
    conf = GcpConf(project="proj", image="img", batch_endpoint=fake.endpoint, **settings)
    return BatchBackend(conf, code_folder)


@pytest.fixture
def backend(fake: FakeBatch) -> Iterator[BatchBackend]:
    b = make_backend(fake)
    yield b
    b.close()


def states(fake: FakeBatch) -> list[str]:
    return [fake.jobs()[0].status.state.name] if fake.jobs() else []


def events(job: Any) -> list[str]:
    return [e.description for e in job.status.status_events]


@pytest.mark.slow
def test_a_cpu_step_runs_through_the_fake_and_returns_its_value(
    fake: FakeBatch, backend: BatchBackend, tmp_path: Path
) -> None:
    out = tmp_path / "add-0123456789ab"
    value = run(backend, out, jobfns.add, Resources(cpu=2), a=1, b=2)
    assert isinstance(value, dict) and value["sum"] == 3
    # the driver may have seen the job's exit record first: Batch says so a moment later
    eventually(lambda: states(fake) == ["SUCCEEDED"], "the job to succeed", 10)
    (job,) = fake.jobs()
    walk = [e.split(" for job")[0] for e in events(job) if e.startswith("Job state")]
    assert walk == [
        "Job state is set from QUEUED to SCHEDULED",
        "Job state is set from SCHEDULED to RUNNING",
        "Job state is set from RUNNING to SUCCEEDED",
    ]
    assert job.labels["confpipe-step"] == "add"
    assert job.labels["confpipe-hash"] == "0123456789ab"
    job_dir = Path(job_dir_of(job) or "")
    assert {p.name for p in job_dir.iterdir()} == {"call.pkl", "result.json", "log.txt", "exits"}
    assert json.loads((job_dir / "exits" / "0.json").read_text())["code"] == 0
    assert "adding 1 and 2" in (job_dir / "log.txt").read_text()
    assert "adding 1 and 2" in fake.cloud_log(job.name)  # the VM's stdout: Cloud Logging


@pytest.mark.slow
def test_jobs_with_gs_outputs_run_through_both_fakes(gs_prefix: str) -> None:
    """gs:// job folders (fake-gcs-server, tests/conftest.py): the worker and vm reach them."""
    with FakeBatch() as fake:  # made after gs_prefix: the "image" environment finds the fake
        backend = make_backend(fake)

        def run_gs(step: str, fn: Callable[..., object], **kwargs: object) -> object:
            jobs = status.jobs_dir(f"{gs_prefix}/{step}-0123456789ab")
            return run_job(backend, step, jobs, fn, kwargs, Resources(), scope=CancelScope())

        value = run_gs("add", jobfns.add, a=1, b=2)
        assert isinstance(value, dict) and value["sum"] == 3
        with pytest.raises(StepFailed) as err:
            run_gs("boom", jobfns.boom, message="bad input")
        backend.close()
    assert "job folder: gs://" in str(err.value)
    assert "    about to fail: line printed by the job" in str(err.value)


@pytest.mark.slow
def test_a_crash_reports_the_exit_code_and_the_status_event(
    backend: BatchBackend, tmp_path: Path
) -> None:
    with pytest.raises(StepFailed) as err:
        run(backend, tmp_path / "crash-0123456789ab", jobfns.exit_hard, code=3)
    text = str(err.value)
    if "(its exit record)" in text:  # the driver read the job's exit record before the API
        assert "job failed (exit code 3 (its exit record); Batch job projects/" in text
    else:
        assert (
            "job failed (exit code 3; last status event: Job state is set from RUNNING to " in text
        )
        assert "with exit code 3." in text
    assert "    exiting with 3" in text  # the log tail


@pytest.mark.slow
def test_a_preempted_job_is_retried_by_batch_not_resubmitted(
    fake: FakeBatch, backend: BatchBackend, tmp_path: Path
) -> None:
    fake.preempt_next(2)
    resources = Resources(spot=True, max_retries=2)
    value = run(
        backend, tmp_path / "c-0123456789ab", batchjobs.count_runs, resources, folder=str(tmp_path)
    )
    assert value == 1  # the preempted attempts were killed before they counted
    assert fake.count("CreateJob") == 1
    eventually(lambda: states(fake) == ["SUCCEEDED"], "Batch to say so too", 10)
    (job,) = fake.jobs()
    assert sum("with exit code 50001" in e for e in events(job)) == 2
    assert job.status.state.name == "SUCCEEDED"


@pytest.mark.slow
def test_preemptions_beyond_max_retries_fail_with_advice(
    fake: FakeBatch, backend: BatchBackend, tmp_path: Path
) -> None:
    fake.preempt_next(2)
    resources = Resources(spot=True, max_retries=1)
    with pytest.raises(StepFailed, match=r"preempted 2 time\(s\), retried 1 time\(s\) \(resources"):
        run(
            backend,
            tmp_path / "c-0123456789ab",
            batchjobs.count_runs,
            resources,
            folder=str(tmp_path),
        )


@pytest.mark.slow
def test_a_bug_is_not_retried(fake: FakeBatch, backend: BatchBackend, tmp_path: Path) -> None:
    resources = Resources(spot=True, max_retries=3)
    with pytest.raises(StepFailed, match="RuntimeError: a bug"):
        run(
            backend,
            tmp_path / "c-0123456789ab",
            batchjobs.count_then_fail,
            resources,
            folder=str(tmp_path),
        )
    assert (tmp_path / "runs").read_text() == "run\n"
    eventually(lambda: states(fake) == ["FAILED"], "Batch to say so too", 10)  # after its record
    (job,) = fake.jobs()
    assert (
        sum(e.startswith("Task state is updated from RUNNING to FAILED") for e in events(job)) == 1
    )


@pytest.mark.slow
def test_env_and_secrets_reach_the_job_but_no_log(
    fake: FakeBatch, backend: BatchBackend, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="confpipe")
    resources = Resources(env={"MY_KEY": ENV_VALUE}, secret_env={"HF_TOKEN": SECRET})
    out = tmp_path / "env-0123456789ab"
    digests = run(backend, out, batchjobs.env_digests, resources, names=["MY_KEY", "HF_TOKEN"])
    assert digests == {
        "MY_KEY": hashlib.sha256(ENV_VALUE.encode()).hexdigest(),
        "HF_TOKEN": hashlib.sha256(b"secret-value-9c1e").hexdigest(),
    }
    assert "creating Batch job" in caplog.text  # the request was logged, redacted
    for value in (ENV_VALUE, "secret-value-9c1e"):
        assert value not in caplog.text
        assert not [p for p in out.rglob("*") if p.is_file() and value.encode() in p.read_bytes()]


@pytest.mark.slow
def test_a_missing_secret_fails_naming_it(backend: BatchBackend, tmp_path: Path) -> None:
    missing = "projects/proj/secrets/nope/versions/1"
    with pytest.raises(StepFailed, match=f"secret {missing} could not be accessed"):
        run(
            backend,
            tmp_path / "s-0123456789ab",
            jobfns.add,
            Resources(secret_env={"X": missing}),
            a=1,
            b=1,
        )


@pytest.mark.slow
def test_the_driver_outlasts_a_server_refusing_connections(
    fake: FakeBatch, backend: BatchBackend, tmp_path: Path
) -> None:
    release = tmp_path / "release"
    first, first_out = in_thread(
        lambda: run(backend, tmp_path / "w-0123456789ab", batchjobs.wait_for, path=str(release))
    )
    eventually(lambda: states(fake) == ["RUNNING"], "the job to run")
    started = time.monotonic()
    fake.refuse_connections(3.0)
    second, second_out = in_thread(  # submitted while the server is down: create is retried
        lambda: run(backend, tmp_path / "a-0123456789ab", jobfns.add, a=2, b=3)
    )
    time.sleep(1.0)
    release.touch()  # the first job ends while nobody can ask
    first.join(30)
    second.join(30)
    assert first_out == ["released"]
    assert isinstance(second_out[0], dict) and second_out[0]["sum"] == 5
    assert time.monotonic() - started >= 3.0
    assert fake.count("CreateJob") == 2


@pytest.mark.slow
def test_the_log_reaches_the_job_folder_while_the_job_runs(
    fake: FakeBatch, backend: BatchBackend, tmp_path: Path
) -> None:
    fake.env["CONFPIPE_LOG_INTERVAL"] = "0.05"
    release, out = tmp_path / "release", tmp_path / "w-0123456789ab"
    thread, outcome = in_thread(lambda: run(backend, out, batchjobs.wait_for, path=str(release)))
    logs = lambda: [p.read_text() for p in out.rglob("log.txt")]  # noqa: E731
    eventually(lambda: logs() == ["waiting for release\n"], "the log to be uploaded")
    release.touch()
    thread.join(30)
    assert outcome == ["released"]


@pytest.mark.slow
def test_polling_costs_one_request_per_interval_for_all_jobs(
    fake: FakeBatch, tmp_path: Path
) -> None:
    """20 jobs in flight, polled every 0.2 s: one ListJobs per interval answers them all."""
    interval, jobs = 0.2, 20
    backend = make_backend(fake, poll_interval=interval)
    release = tmp_path / "release"
    threads = [
        in_thread(
            lambda i=i: run(
                backend, tmp_path / f"w{i}-0123456789ab", batchjobs.wait_for, path=str(release)
            )
        )
        for i in range(jobs)
    ]
    eventually(
        lambda: [j.status.state.name for j in fake.jobs()] == ["RUNNING"] * jobs,
        "all jobs to run",
        60,
    )
    before, started = fake.count(), time.monotonic()
    time.sleep(2.0)
    requests, seconds = fake.count() - before, time.monotonic() - started
    release.touch()
    for thread, _ in threads:
        thread.join(60)
    backend.close()
    assert [outcome for _, outcome in threads] == [["released"]] * jobs
    assert requests <= seconds / interval + 2
    per_job_minute_at_10s = requests / jobs / seconds * 60 * (interval / 10.0)
    assert per_job_minute_at_10s <= 6


@pytest.mark.slow
def test_a_lone_job_costs_one_create_then_one_status_request_per_interval(
    fake: FakeBatch, tmp_path: Path
) -> None:
    """No ListJobs at submit (no earlier launch can have submitted one: the step has no older
    job folder), no status request before a poll interval has passed, then one per interval."""
    interval = 0.5
    backend = make_backend(fake, poll_interval=interval)
    started = time.monotonic()
    folder = str(tmp_path)  # a job of a few intervals: it ends after some status requests
    value = run(
        backend, tmp_path / "c-0123456789ab", batchjobs.count_runs, folder=folder, seconds=2
    )
    life = time.monotonic() - started
    backend.close()
    assert value == 1
    methods = [m for m, _ in fake.requests]
    assert methods[0] == "CreateJob"  # nothing before it: no re-attach search
    assert set(methods[1:]) == {"ListJobs"}  # the shared poll; no GetJob burst
    assert len(methods) - 1 <= life / interval + 1  # at most one status request per interval


@pytest.mark.slow
def test_a_finished_job_is_noticed_by_its_exit_record_long_before_the_next_poll(
    fake: FakeBatch, tmp_path: Path
) -> None:
    backend = make_backend(fake, poll_interval=30)  # the API is asked after 30 s at the soonest
    started = time.monotonic()
    value = run(backend, tmp_path / "add-0123456789ab", jobfns.add, a=1, b=2)
    took = time.monotonic() - started
    with pytest.raises(StepFailed, match=r"ValueError: bad input") as err:
        run(backend, tmp_path / "boom-0123456789ab", jobfns.boom, message="bad input")
    took_failing = time.monotonic() - started - took
    backend.close()
    assert isinstance(value, dict) and value["sum"] == 3
    assert took < 6 and took_failing < 6, (took, took_failing)
    assert "    about to fail: line printed by the job" in str(err.value)  # the whole log
    assert [m for m, _ in fake.requests] == ["CreateJob", "CreateJob"]  # no status request


@pytest.mark.slow
def test_an_exit_record_without_a_result_record_is_never_a_success(tmp_path: Path) -> None:
    # a job that says it exited 0 but left no result.json: run_job's own check fails it
    script = "import pathlib, sys; p = pathlib.Path(sys.argv[1], 'exits'); p.mkdir(); "
    script += "(p / '0.json').write_text('{\"host\": 0, \"code\": 0}'); import time; "
    script += "time.sleep(60)"  # Batch never says the job ended: only its record does

    def command(runnable: Any) -> list[str]:
        return [sys.executable, "-c", script, list(runnable.container.commands)[2]]

    with FakeBatch(command=command) as fake:
        backend = make_backend(fake, poll_interval=30)
        with pytest.raises(StepFailed, match=r"job succeeded but wrote no result\.json"):
            run(backend, tmp_path / "liar-0123456789ab", jobfns.add, a=1, b=2)
        backend.close()
        assert [m for m, _ in fake.requests] == ["CreateJob"]


@pytest.mark.slow
def test_a_step_with_an_earlier_job_folder_still_looks_for_its_live_job(
    fake: FakeBatch, tmp_path: Path
) -> None:
    out = tmp_path / "add-0123456789ab"
    (out / ".confpipe" / "jobs" / "20250101-000000.000-0-0a1b2c3d").mkdir(parents=True)
    backend = make_backend(fake)
    run(backend, out, jobfns.add, a=1, b=2)
    backend.close()
    (first, _), (second, _) = fake.requests[:2]
    assert (first, second) == ("ListJobs", "CreateJob")  # by labels, then a new job


@pytest.mark.slow
def test_the_fake_kills_a_task_past_max_run_duration_when_no_driver_watches(
    tmp_path: Path,
) -> None:
    # detach=true, or a dead driver: nobody runs run_job's timer, Batch's limit stops the VM
    with FakeBatch(command=lambda runnable: ["sleep", "60"]) as fake:
        backend = make_backend(fake)
        job_dir = f"{tmp_path}/s-0123456789ab/.confpipe/jobs/j"
        handle = backend.submit(JobRequest("s", job_dir, Resources(timeout=1)))
        started = time.monotonic()
        status = backend.poll(handle)
        while not status.state.done and time.monotonic() - started < 30:
            time.sleep(0.05)
            status = backend.poll(handle)
        backend.close()
        (job,) = fake.jobs()
    assert status.state.name == "FAILED"
    assert status.detail.startswith("exit code 50005: it ran past resources.timeout")
    assert 6 <= time.monotonic() - started < 20  # maxRunDuration: 1 s + the 5 s grace
    assert any("ran past its maxRunDuration of 6s" in e for e in events(job))


@pytest.mark.slow
def test_the_driver_times_a_job_out_first_and_deletes_it(fake: FakeBatch, tmp_path: Path) -> None:
    out = tmp_path / "hold-0123456789ab"
    with pytest.raises(StepFailed) as err:
        run(
            make_backend(fake), out, jobfns.hold, Resources(timeout=2), pid_file=str(tmp_path / "p")
        )
    assert str(err.value).startswith(
        "step 'hold': timed out after running 2s (resources.timeout); job cancelled\n"
    )
    ((_, create),) = [(m, r) for m, r in fake.requests if m == "CreateJob"]
    assert create.job.task_groups[0].task_spec.max_run_duration.total_seconds() == 7
    assert fake.count("DeleteJob") == 1
    eventually(lambda: fake.pid(create.job.name) is None, "the task to be killed")


# -- the code that reaches the job ---------------------------------------------------------


def git_repo(root: Path) -> Path:
    root.mkdir()
    for args in (["init", "-q"], ["config", "user.email", "t@t"], ["config", "user.name", "t"]):
        subprocess.run(["git", *args], cwd=root, check=True)
    return root


def test_the_archive_holds_tracked_files_as_they_are_now(tmp_path: Path) -> None:
    repo = git_repo(tmp_path / "repo")
    (repo / "a.py").write_text("x = 1\n")
    subprocess.run(["git", "add", "a.py"], cwd=repo, check=True)
    subprocess.run(["git", "commit", "-qm", "a"], cwd=repo, check=True)
    (repo / "a.py").write_text("x = 2\n")  # uncommitted edit: staged as it is now
    (repo / "untracked.py").write_text("")
    data = archive(str(repo))
    assert data == archive(str(repo))  # deterministic: content-addressed uploads dedupe
    with tarfile.open(fileobj=__import__("io").BytesIO(data)) as tar:
        assert tar.getnames() == ["a.py"]
        assert tar.extractfile("a.py").read() == b"x = 2\n"  # type: ignore[union-attr]


@pytest.mark.slow
def test_staged_code_is_what_the_job_runs(
    fake: FakeBatch, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = git_repo(tmp_path / "repo")
    (repo / "stagedmod.py").write_text("def where(output_path=None):\n    return __file__\n")
    subprocess.run(["git", "add", "stagedmod.py"], cwd=repo, check=True)
    monkeypatch.chdir(repo)
    monkeypatch.syspath_prepend(str(repo))
    import stagedmod  # type: ignore[import-not-found]

    code = tmp_path / "prefix" / ".confpipe" / "code"
    backend = make_backend(fake, code_folder=str(code))
    where = run(backend, tmp_path / "prefix" / "st-0123456789ab", stagedmod.where)
    backend.close()
    (archive_path,) = code.iterdir()
    assert archive_path.name.startswith("code-") and archive_path.name.endswith(".tar.gz")
    assert isinstance(where, str) and "confpipe-code-" in where  # the unpacked copy, not repo


def test_pip_installs_a_staged_project_with_the_steps_extras(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"need a pyproject\.toml or setup\.py"):
        pip_command(str(tmp_path), ["eval"])
    assert pip_command(str(tmp_path), []) is None
    (tmp_path / "pyproject.toml").write_text("")
    assert pip_command(str(tmp_path), ["eval", "tok"])[-1] == f"{tmp_path}[eval,tok]"  # type: ignore[index]
