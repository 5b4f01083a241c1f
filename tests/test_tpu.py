"""The Cloud TPU backend: golden requests, preflight, and whole jobs on FakeTpu + fake GCS.

Golden files (tests/golden/tpu_*) pin the QueuedResource requests and the startup script;
accept an intended change with
``CONFPIPE_UPDATE_GOLDEN=1 .venv/bin/pytest tests/test_tpu.py -k golden``. They hold the
request with env values redacted (``tpu_request.redacted``).
End-to-end tests drive ``run_job`` with the real google-cloud-tpu client against the
in-process fake, whose hosts run the startup script -> ``confpipe.backends.vm`` -> the
worker as local subprocesses, with job folders on fake-gcs-server (tests/conftest.py).
What every backend does (failures, log tails, cancel, timeouts, re-attach) is in
test_backend_contract.py; here, what TPU slices add: hosts, preemptions, the service.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from confpipe.backends import JobRequest
from confpipe.backends.gcp.settings import GcpConf
from confpipe.backends.gcp.tpu import TpuBackend
from confpipe.backends.gcp.tpu_request import queued_resource, redacted, startup_script
from confpipe.backends.resources import GPU, Resources
from confpipe.engine import status
from confpipe.errors import ConfigError, StepFailed
from confpipe.storage import store_for
from confpipe.testing.tpu import FakeTpu
from tests import batchjobs, gcpfakes, jobfns, tpujobs
from tests.gcpfakes import CALL_DIGEST, CODE, GOLDEN, JOB_DIR, in_thread, run
from tests.waits import alive, eventually

GiB = 2**30
SETTINGS = GcpConf(**gcpfakes.SETTINGS)
ENV_VALUE = "env-value-that-must-not-leak-4b2d"
HASH = "0123456789ab"


# -- golden requests -----------------------------------------------------------------------


def check_golden(name: str, text: str) -> None:
    """Compare ``text`` with ``tests/golden/tpu_{name}``; CONFPIPE_UPDATE_GOLDEN=1 rewrites it."""
    gcpfakes.check_golden(GOLDEN / f"tpu_{name}", text, "TPU request", "tests/test_tpu.py")


def golden(name: str, step: str, resources: Resources, settings: GcpConf = SETTINGS) -> Any:
    job = JobRequest(step, JOB_DIR.format(step=step), resources, call_digest=CALL_DIGEST)
    request = queued_resource(settings, job, driver="golden-driver", code=CODE)
    check_golden(f"{name}.json", json.dumps(redacted(request), indent=2, sort_keys=True) + "\n")
    return request


def test_golden_single_host_with_env_keeps_env_values_out() -> None:
    resources = Resources(tpu="v5litepod-8", env={"WANDB_API_KEY": ENV_VALUE}, pip_extras=("tpu",))
    request = golden("single_host", "train", resources)
    node = request.tpu.node_spec[0].node
    assert node.metadata["confpipe-env-WANDB_API_KEY"] == ENV_VALUE  # the hosts need it...
    assert ENV_VALUE not in json.dumps(redacted(request))  # ...but no file or log may hold it
    assert ENV_VALUE not in node.metadata["startup-script"]
    check_golden("single_host_startup.sh", node.metadata["startup-script"])


def test_golden_multi_host_in_an_explicit_zone() -> None:
    settings = GcpConf(
        project="proj", region="us-central2", image="img:latest", tpu_zone="us-central2-b"
    )
    request = golden("multi_host", "train", Resources(tpu="v4-32", timeout=3600), settings)
    assert request.tpu.node_spec[0].parent == "projects/proj/locations/us-central2-b"
    assert request.tpu.node_spec[0].node.runtime_version == "tpu-ubuntu2204-base"


def test_golden_spot_topology_with_retries() -> None:
    resources = Resources(tpu="v5p:2x2x4", spot=True, max_retries=3)
    request = golden("spot", "pretrain", resources)
    assert "spot" in request and request.tpu.node_spec[0].node.accelerator_config.topology


def test_golden_mismatch_says_how_to_accept_the_change(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CONFPIPE_UPDATE_GOLDEN", raising=False)
    with pytest.raises(pytest.fail.Exception, match=r"CONFPIPE_UPDATE_GOLDEN=1 .*test_tpu"):
        check_golden("single_host.json", "{}\n")


def test_the_script_runs_the_job_entry_with_the_hosts_index() -> None:
    job = JobRequest("s", "gs://b/s-1/.confpipe/jobs/j", Resources(tpu="v6e-16"))
    script = startup_script(SETTINGS, job)
    assert 'CONFPIPE_TPU_HOST="$(md attributes/agent-worker-number)"' in script
    assert (
        "us-docker.pkg.dev/proj/ml/confpipe:latest python -m confpipe.backends.vm "
        'gs://b/s-1/.confpipe/jobs/j 2>&1 | tee -a "$log"\n'
    ) in script
    assert script.rstrip().endswith('report "docker run" "$code"\nexit "$code"')
    assert "gcloud auth configure-docker us-docker.pkg.dev --quiet" in script


# -- preflight -----------------------------------------------------------------------------


def offline(region: str = "us-central1", **settings: Any) -> TpuBackend:
    """A backend whose client is never used (checks only): no server behind the endpoint."""
    return TpuBackend(
        GcpConf(project="proj", region=region, image="img", tpu_endpoint="127.0.0.1:9", **settings)
    )


PREFLIGHT_ERRORS = [
    (
        {},
        Resources(tpu="v5litepod-7"),
        "resources.tpu=v5litepod-7: TPU v5e comes in 1, 4, 8, 16, 32, 64, 128, 256 (chips), "
        "e.g. v5litepod-8",
    ),
    (
        {},
        Resources(tpu="v5lp-8"),
        "resources.tpu=v5lp-8: unknown TPU generation 'v5lp' (did you mean 'v5p'?); "
        "generations: v2, v3, v4, v5litepod, v5p, v6e",
    ),
    ({}, Resources(tpu="tpu-large"), "resources.tpu=tpu-large: not a TPU type; use an"),
    (
        {},
        Resources(tpu="v5p:3x3x3"),
        "resources.tpu=v5p:3x3x3: unknown topology '3x3x3'; TPU v5p topologies: 2x2x1, 2x2x2,",
    ),
    (
        {},
        Resources(tpu="v4-32"),
        "resources.tpu=v4-32: no zone of backend.region=us-central1 offers TPU v4; zones that "
        "do: us-central2-b; set backend.tpu_zone to one of them",
    ),
    (
        {"tpu_zone": "us-central1-a"},
        Resources(tpu="v6e-8"),
        "resources.tpu=v6e-8: zone us-central1-a (backend.tpu_zone) doesn't offer TPU v6e "
        "(Trillium); zones that do: us-central1-b, us-east1-d,",
    ),
    ({}, Resources(tpu="v5litepod-8", memory=64 * GiB), "resources.memory: a TPU host's machine"),
    (
        {},
        Resources(tpu="v5litepod-8", secret_env={"T": "x"}),
        "resources.secret_env: not supported for TPU steps",
    ),
]


@pytest.mark.parametrize(("settings", "resources", "message"), PREFLIGHT_ERRORS)
def test_preflight_names_the_valid_options(
    settings: dict[str, Any], resources: Resources, message: str
) -> None:
    backend = offline(**settings)
    with pytest.raises(ConfigError) as err:
        backend.check("train", resources)
    backend.close()
    assert str(err.value).startswith(f"step 'train': {message}")


@pytest.mark.parametrize(
    ("tpu", "region", "hosts"),
    [
        ("v5litepod-8", "us-central1", 1),
        ("v5litepod-16", "us-west4", 4),
        ("v4-8", "us-central2", 1),
        ("v4-32", "us-central2", 4),
        ("v6e-256", "us-east5", 64),
        ("v5p:4x4x4", "us-east5", 16),
        ("v3-8", "us-central1", 1),
    ],
)
def test_valid_tpus_pass_preflight(tpu: str, region: str, hosts: int) -> None:
    from confpipe.backends.gcp.tpu_catalog import parse

    backend = offline(region)
    where = backend.check("train", Resources(tpu=tpu))  # the plan's "where" column
    backend.close()
    assert parse(tpu).hosts == hosts
    assert where == (f"tpu ({hosts} hosts)" if hosts > 1 else "tpu (1 host)")


PUBLISHED_HOSTS = [  # (type, chips, TPU VMs): the rows tpu_catalog's docstring cites
    # v5p table (cloud.google.com/tpu/docs/v5p): topology, chips, hosts
    ("v5p:2x2x1", 4, 1), ("v5p:2x2x2", 8, 2), ("v5p:2x4x4", 32, 8), ("v5p:4x4x4", 64, 16),
    ("v5p:4x4x8", 128, 32), ("v5p:8x8x8", 512, 128), ("v5p:16x16x24", 6144, 1536),
    ("v5p-8", 4, 1), ("v5p-16", 8, 2), ("v5p-128", 64, 16), ("v5p-12288", 6144, 1536),
    # v4 (cloud.google.com/tpu/docs/v4): 4 chips per VM
    ("v4-8", 4, 1), ("v4-16", 8, 2), ("v4-32", 16, 4), ("v4:2x2x4", 16, 4), ("v4-4096", 2048, 512),
    # v5e (cloud.google.com/tpu/docs/v5e): 1-, 4- and 8-chip single VMs, then 4-chip VMs
    ("v5litepod-1", 1, 1), ("v5litepod-4", 4, 1), ("v5litepod-8", 8, 1),
    ("v5litepod-16", 16, 4), ("v5litepod-32", 32, 8), ("v5litepod-256", 256, 64),
    ("v5e:4x4", 16, 4), ("v5e:16x16", 256, 64),
    # v6e (cloud.google.com/tpu/docs/v6e): as v5e
    ("v6e-1", 1, 1), ("v6e-8", 8, 1), ("v6e-16", 16, 4), ("v6e-256", 256, 64),
    # v2/v3: 4 chips (8 TensorCores) per VM
    ("v2-8", 4, 1), ("v2-32", 16, 4), ("v3-8", 4, 1), ("v3-32", 16, 4), ("v3-2048", 1024, 256),
]  # fmt: skip


@pytest.mark.parametrize(("tpu", "chips", "hosts"), PUBLISHED_HOSTS)
def test_hosts_per_slice_match_the_published_tables(tpu: str, chips: int, hosts: int) -> None:
    from confpipe.backends.gcp.tpu_catalog import parse

    found = parse(tpu)
    assert (found.chips, found.hosts) == (chips, hosts)


def test_gcp_routes_tpu_steps_to_cloud_tpu_and_the_rest_to_batch() -> None:
    from confpipe.backends.gcp.router import GcpBackend
    from confpipe.config.compiler import backend_for

    settings = {"kind": "gcp", "project": "p", "image": "img", "stage_code": False}
    endpoints = {"batch_endpoint": "127.0.0.1:9", "tpu_endpoint": "127.0.0.1:9"}
    backend = backend_for({"prefix": "/tmp/x", "backend": {**settings, **endpoints}})
    assert isinstance(backend, GcpBackend)
    assert backend.check("cpu", Resources(cpu=2)) == "batch"
    assert "tpu" not in backend._made  # the TPU client is made on the first TPU step only
    assert backend.check("tpu", Resources(tpu="v5litepod-8")) == "tpu (1 host)"
    with pytest.raises(ConfigError, match=r"step 'g': resources\.gpu\.type: unknown GPU"):
        backend.check("g", Resources(gpu=GPU("nvidia-l5", 1)))
    with pytest.raises(ConfigError, match=r"step 't': resources\.tpu=v4-8: no zone of"):
        backend.check("t", Resources(tpu="v4-8"))
    backend.close()


@pytest.mark.slow
def test_the_tpu_modules_import_no_google_until_constructed() -> None:
    gcpfakes.imports_no_google(
        "confpipe.backends.gcp.tpu",
        "confpipe.backends.gcp.tpu_request",
        "confpipe.backends.gcp.router",
        "confpipe.backends.registry",
    )


# -- end to end against FakeTpu, job folders on fake GCS -------------------------------------


@pytest.fixture
def fake(fake_tpu: FakeTpu) -> FakeTpu:
    return fake_tpu


def make_backend(fake: FakeTpu, region: str = "us-central1", **more: Any) -> TpuBackend:
    settings = GcpConf(
        project="proj",
        region=region,
        image="img",
        tpu_endpoint=fake.endpoint,
        poll_interval=0.05,
        **more,
    )
    return TpuBackend(settings)


@pytest.fixture
def backend(fake: FakeTpu) -> Iterator[TpuBackend]:
    b = make_backend(fake)
    yield b
    b.close()


def read(url: str) -> str:
    blob = store_for(url).read(url)
    return blob.data.decode() if blob is not None else ""


def job_dirs(out: str) -> list[str]:
    jobs = status.jobs_dir(out)
    found = store_for(jobs).fs.ls(jobs, detail=False)
    return sorted(f"gs://{p.rstrip('/')}" for p in found)


@pytest.mark.slow
def test_a_single_host_step_runs_and_its_queued_resource_is_deleted(
    fake: FakeTpu, backend: TpuBackend, gs_prefix: str
) -> None:
    out = f"{gs_prefix}/add-{HASH}"
    value = run(backend, out, jobfns.add, Resources(tpu="v5litepod-8"), a=1, b=2)
    assert isinstance(value, dict) and value["sum"] == 3 and value["pid"] != os.getpid()
    ((_, create),) = [(m, r) for m, r in fake.requests if m == "CreateQueuedResource"]
    node = create.queued_resource.tpu.node_spec[0].node
    assert create.parent == "projects/proj/locations/us-central1-a"
    assert node.accelerator_type == "v5litepod-8"
    assert node.runtime_version == "v2-alpha-tpuv5-lite"
    assert (node.labels["confpipe-step"], node.labels["confpipe-hash"]) == ("add", HASH)
    assert fake.count("GetOperation") >= 1  # the create operation, waited for
    assert fake.count("DeleteQueuedResource") == 1
    eventually(lambda: fake.queued_resources() == [], "the queued resource to be deleted")
    (job_dir,) = job_dirs(out)
    assert "adding 1 and 2" in read(f"{job_dir}/log.txt")
    assert json.loads(read(f"{job_dir}/exits/0.json")) == {"host": 0, "code": 0, "stage": "worker"}
    starts = store_for(job_dir).fs.ls(f"{job_dir}/starts", detail=False)
    assert sorted(p.rsplit("/", 1)[-1] for p in starts) == ["0-boot-1", "0-worker"]


@pytest.mark.slow
def test_every_host_of_a_multi_host_slice_runs_and_host_0_writes_the_result(
    fake: FakeTpu, gs_prefix: str
) -> None:
    backend = make_backend(fake, "us-west4")
    out = f"{gs_prefix}/which-{HASH}"
    value = run(backend, out, tpujobs.which_host, Resources(tpu="v5litepod-16"))
    backend.close()
    assert isinstance(value, dict) and value["host"] == 0
    (job_dir,) = job_dirs(out)
    for host in (1, 2, 3):
        assert json.loads(read(f"{job_dir}/host-{host}/result.json"))["value"]["host"] == host
        assert read(f"{job_dir}/host-{host}/log.txt") == f"host {host} ran\n"
        exit = {"host": host, "code": 0, "stage": "worker"}
        assert json.loads(read(f"{job_dir}/exits/{host}.json")) == exit
    assert read(f"{job_dir}/log.txt") == "host 0 ran\n"
    (resource,) = [r for m, r in fake.requests if m == "CreateQueuedResource"]
    name = f"{resource.parent}/queuedResources/{resource.queued_resource_id}"
    assert "host 3 ran" in fake.serial_log(name, 3)  # the VM's output: its serial console


@pytest.mark.slow
def test_a_preempted_slice_is_retried_then_succeeds(
    fake: FakeTpu, backend: TpuBackend, gs_prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="confpipe")
    fake.preempt_next()
    out = f"{gs_prefix}/add-{HASH}"
    resources = Resources(tpu="v5litepod-4", spot=True, max_retries=1)
    value = run(backend, out, jobfns.add, resources, a=2, b=3)
    assert isinstance(value, dict) and value["sum"] == 5
    creates = [r for m, r in fake.requests if m == "CreateQueuedResource"]
    assert len(creates) == 2 and all("spot" in r.queued_resource for r in creates)
    assert "suspended by the Cloud TPU service), retrying" in caplog.text
    assert fake.count("DeleteQueuedResource") == 2  # the suspended slice, then the finished one
    eventually(lambda: fake.queued_resources() == [], "both queued resources to be deleted")


@pytest.mark.slow
def test_a_slice_the_service_failed_is_retried_and_deleted(
    fake: FakeTpu, backend: TpuBackend, gs_prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    # FAILED before the backend's first read: it must still be deleted, then retried
    caplog.set_level(logging.INFO, logger="confpipe")
    fake.fail_next("no v5e capacity in us-central1-a")
    resources = Resources(tpu="v5litepod-1", spot=True, max_retries=1)
    value = run(backend, f"{gs_prefix}/add-{HASH}", jobfns.add, resources, a=4, b=5)
    assert isinstance(value, dict) and value["sum"] == 9
    assert "failed: no v5e capacity in us-central1-a), retrying" in caplog.text
    assert fake.count("CreateQueuedResource") == 2
    assert fake.count("DeleteQueuedResource") == 2
    eventually(lambda: fake.queued_resources() == [], "both queued resources to be deleted")


@pytest.mark.slow
def test_a_slice_failing_every_time_is_reported_with_the_services_reason(
    fake: FakeTpu, backend: TpuBackend, gs_prefix: str
) -> None:
    fake.fail_next("no capacity")
    with pytest.raises(StepFailed) as err:
        resources = Resources(tpu="v5litepod-1", spot=True, max_retries=0)
        run(backend, f"{gs_prefix}/add-{HASH}", jobfns.add, resources, a=1, b=1)
    assert "job preempted 1 time(s) (queued resource projects/proj/" in str(err.value)
    assert "failed: no capacity); raise resources.max_retries" in str(err.value)
    assert fake.count("DeleteQueuedResource") == 1


@pytest.mark.slow
def test_preemptions_beyond_max_retries_fail_with_the_reason(
    fake: FakeTpu, backend: TpuBackend, gs_prefix: str
) -> None:
    fake.preempt_next(2)
    with pytest.raises(StepFailed) as err:
        resources = Resources(tpu="v5litepod-1", spot=True, max_retries=1)
        run(backend, f"{gs_prefix}/add-{HASH}", jobfns.add, resources, a=1, b=1)
    text = str(err.value)
    assert "job preempted 2 time(s) (queued resource projects/proj/locations/us-central1-a/" in text
    assert "suspended by the Cloud TPU service); raise resources.max_retries" in text


@pytest.mark.slow
def test_a_failing_host_fails_the_step_with_its_own_log_tail(fake: FakeTpu, gs_prefix: str) -> None:
    backend = make_backend(fake, "us-central2")
    out = f"{gs_prefix}/boom-{HASH}"
    with pytest.raises(StepFailed) as err:
        run(backend, out, tpujobs.fail_on_host, Resources(tpu="v4-16"), host=1, message="bad shard")
    backend.close()
    text = str(err.value)
    assert text.startswith("step 'boom': ValueError: bad shard\n  job folder: gs://")
    assert "    --- host 1 of 2: gs://" in text and "/host-1/log.txt ---" in text
    assert "    host 1: about to fail" in text
    assert (err.value.log_path or "").endswith("/host-1/log.txt")  # the summary's log: line
    assert "raise ValueError(message)" in (err.value.remote_traceback or "")
    eventually(lambda: fake.queued_resources() == [], "the queued resource to be deleted")


@pytest.mark.slow
def test_a_killed_host_fails_the_step_naming_the_host_and_signal(
    fake: FakeTpu, tmp_path: Path, gs_prefix: str
) -> None:
    backend = make_backend(fake, "us-central2")
    out = f"{gs_prefix}/wait-{HASH}"
    resources = Resources(tpu="v4-16")
    thread, outcome = in_thread(
        lambda: run(backend, out, tpujobs.wait_on_hosts, resources, pid_dir=str(tmp_path))
    )
    started = lambda: all((tmp_path / f"host-{i}").exists() for i in (0, 1))  # noqa: E731
    eventually(started, "both hosts to start")
    (resource,) = fake.queued_resources()
    fake.fail_host(resource.name, 1)
    thread.join(60)
    backend.close()
    text = str(outcome[0])
    assert "job failed (host 1 of 2 exited with exit code 137 (killed by SIGKILL)) without" in text
    assert "    host 1 waiting" in text
    eventually(lambda: not alive(int((tmp_path / "host-0").read_text())), "host 0 to stop")


@pytest.mark.slow
def test_the_fake_refuses_a_zone_without_the_type(fake: FakeTpu) -> None:
    from google.api_core import exceptions
    from google.cloud import tpu_v2

    from confpipe.backends.gcp import api as gcp_api

    client = gcp_api.tpu_client(fake.endpoint)
    node = tpu_v2.Node(accelerator_type="v4-8", runtime_version="tpu-ubuntu2204-base")
    parent = "projects/p/locations/us-central1-a"
    spec = tpu_v2.QueuedResource.Tpu.NodeSpec(parent=parent, node_id="n", node=node)
    request = tpu_v2.CreateQueuedResourceRequest(
        parent=parent,
        queued_resource_id="n",
        queued_resource=tpu_v2.QueuedResource(tpu=tpu_v2.QueuedResource.Tpu(node_spec=[spec])),
    )
    with pytest.raises(
        exceptions.InvalidArgument, match="v4-8 is not available in zone us-central1-a"
    ):
        client.create_queued_resource(request=request)
    gcp_api.close(client)


@pytest.mark.slow
def test_the_fake_serves_from_the_command_line() -> None:
    command = [sys.executable, "-m", "confpipe.testing.tpu", "--port", "0"]
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True) as proc:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        proc.terminate()
    assert line.startswith("fake Cloud TPU serving: backend.tpu_endpoint=127.0.0.1:")
    assert proc.returncode == 0  # SIGTERM stops it cleanly (its hosts and files go too)


@pytest.mark.slow
def test_env_values_reach_every_host_through_the_metadata_but_no_file(
    fake: FakeTpu, gs_prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    import hashlib

    caplog.set_level(logging.DEBUG, logger="confpipe")
    backend = make_backend(fake, "us-central2")
    out = f"{gs_prefix}/env-{HASH}"
    resources = Resources(tpu="v4-16", env={"MY_KEY": ENV_VALUE})
    digests = run(backend, out, batchjobs.env_digests, resources, names=["MY_KEY"])
    backend.close()
    assert digests == {"MY_KEY": hashlib.sha256(ENV_VALUE.encode()).hexdigest()}
    assert "creating queued resource" in caplog.text  # the request was logged, redacted
    assert ENV_VALUE not in caplog.text
    (job_dir,) = job_dirs(out)
    store = store_for(job_dir)
    files = [f"gs://{p}" for p in store.fs.find(job_dir)]
    blobs = store.read_many(files)  # call.pkl is binary: compare bytes
    assert len(files) >= 8 and not [b for b in blobs if b and ENV_VALUE.encode() in b.data]


# -- hosts that die before their worker starts ----------------------------------------------


def test_the_start_timeout_is_a_duration_and_defaults_to_10_minutes() -> None:
    assert GcpConf(project="p", image="i").tpu_start_timeout == 600
    assert GcpConf(project="p", image="i", tpu_start_timeout="1h30m").tpu_start_timeout == 5400
    assert GcpConf(project="p", image="i", tpu_start_timeout=45).tpu_start_timeout == 45


@pytest.mark.slow
def test_an_image_that_cant_be_pulled_fails_the_step_with_the_pull_log(
    fake: FakeTpu, backend: TpuBackend, gs_prefix: str
) -> None:
    fake.missing_image("img")
    out = f"{gs_prefix}/add-{HASH}"
    with pytest.raises(StepFailed) as err:
        run(backend, out, jobfns.add, Resources(tpu="v5litepod-8", timeout=60), a=1, b=2)
    text = str(err.value)
    assert text.startswith(
        "step 'add': job failed (the TPU host exited with exit code 1 in docker pull) without "
        "writing a record\n  job folder: gs://"
    )
    assert "    Error response from daemon: manifest for img not found: manifest unknown" in text
    (job_dir,) = job_dirs(out)
    assert json.loads(read(f"{job_dir}/exits/0.json")) == {
        "host": 0, "code": 1, "stage": "docker pull"
    }  # fmt: skip
    assert fake.count("DeleteQueuedResource") == 1
    eventually(lambda: fake.queued_resources() == [], "the queued resource to be deleted")


@pytest.mark.slow
def test_a_host_whose_container_exits_at_once_fails_the_step_naming_it(
    fake: FakeTpu, tmp_path: Path, gs_prefix: str
) -> None:
    backend = make_backend(fake, "us-central2")
    fake.crash_next(host=1, code=1)  # as an image without confpipe in it does
    out = f"{gs_prefix}/wait-{HASH}"
    resources = Resources(tpu="v4-16", timeout=60)
    with pytest.raises(StepFailed) as err:
        run(backend, out, tpujobs.wait_on_hosts, resources, pid_dir=str(tmp_path))
    backend.close()
    text = str(err.value)
    assert text.startswith(
        "step 'wait': job failed (host 1 of 2 exited with exit code 1 in docker run) without "
        "writing a record\n"
    )
    assert "    --- host 1 of 2: gs://" in text and "/host-1/log.txt ---" in text
    assert "No module named 'confpipe'" in text  # the container's own last words
    eventually(lambda: fake.queued_resources() == [], "the queued resource to be deleted")
    if (tmp_path / "host-0").exists():  # host 0's worker, if it got going, is stopped too
        eventually(lambda: not alive(int((tmp_path / "host-0").read_text())), "host 0 to stop")


@pytest.mark.slow
def test_a_host_that_never_boots_fails_the_step_at_the_start_deadline(
    fake: FakeTpu, tmp_path: Path, gs_prefix: str
) -> None:
    # long enough for host 0 to start its worker on a loaded machine; host 1 never boots
    backend = make_backend(fake, "us-central2", tpu_start_timeout="6s")
    fake.dead_next(host=1)
    out = f"{gs_prefix}/wait-{HASH}"
    thread, outcome = in_thread(
        lambda: run(
            backend, out, tpujobs.wait_on_hosts, Resources(tpu="v4-16"), pid_dir=str(tmp_path)
        )
    )
    thread.join(60)
    backend.close()
    (failure,) = outcome
    assert isinstance(failure, StepFailed)
    text = str(failure)
    assert text.startswith(
        "step 'wait': job failed (host 1 of 2 never reported (did the VM boot?) within 6s of "
        "the slice becoming ACTIVE (backend.tpu_start_timeout); the serial console says more: "
        "gcloud compute tpus tpu-vm get-serial-port-output cp-wait-0-"
    )
    assert "--worker=1 --zone=us-central2-b) without writing a record" in text
    assert fake.count("DeleteQueuedResource") == 1  # the idle slice stops billing
    eventually(lambda: fake.queued_resources() == [], "the queued resource to be deleted")
    eventually(lambda: not alive(int((tmp_path / "host-0").read_text())), "host 0 to stop")


@pytest.mark.parametrize("real", [1, 3])
@pytest.mark.slow
def test_a_slice_with_another_host_count_than_the_catalogue_is_waited_for_as_it_is(
    fake_gcs: object, gs_prefix: str, caplog: pytest.LogCaptureFixture, real: int
) -> None:
    # the hosts say how many VMs their slice has (worker-network-endpoints): that count wins
    caplog.set_level(logging.WARNING, logger="confpipe")
    with FakeTpu(hosts={"v4-16": real}) as fake:
        backend = make_backend(fake, "us-central2", tpu_start_timeout="20s")
        out = f"{gs_prefix}/which-{HASH}"
        value = run(backend, out, tpujobs.which_host, Resources(tpu="v4-16", timeout=60))
        backend.close()
    assert isinstance(value, dict) and value["host"] == 0
    assert f"has {real} hosts, not the 2 confpipe's TPU catalogue expected" in caplog.text
    (job_dir,) = job_dirs(out)
    exits = store_for(job_dir).fs.ls(f"{job_dir}/exits", detail=False)
    assert len(exits) == real  # every host that exists ran, none was waited for in vain


def test_the_start_deadline_says_which_hosts_booted_and_which_never_reported() -> None:
    from confpipe.backends.gcp.hosts import never_started

    assert never_started([1, 3], [3], 4, 600) == (
        "host 1 of 4 never reported (did the VM boot?); host 3 of 4 booted but never started "
        "the worker (is docker pull of backend.image still running?) within 10m of the slice "
        "becoming ACTIVE (backend.tpu_start_timeout)"
    )
    assert never_started([0], [], 1, 5400).startswith("the TPU host never reported")
    assert never_started([0], [], 1, 5400).endswith(
        "within 1h30m of the slice becoming ACTIVE (backend.tpu_start_timeout)"
    )


@pytest.mark.slow
def test_the_driver_times_a_slice_out_and_deletes_its_queued_resource(
    fake: FakeTpu, tmp_path: Path, gs_prefix: str
) -> None:
    # a queued resource has no run limit of its own: run_job's timer is what stops it
    backend = make_backend(fake, "us-central2")
    out = f"{gs_prefix}/wait-{HASH}"
    with pytest.raises(StepFailed) as err:
        run(backend, out, tpujobs.wait_on_hosts, Resources(tpu="v4-16", timeout=3),
            pid_dir=str(tmp_path))  # fmt: skip
    backend.close()
    assert str(err.value).startswith(
        "step 'wait': timed out after running 3s (resources.timeout); job cancelled\n"
    )
    assert fake.count("DeleteQueuedResource") == 1
    eventually(lambda: fake.queued_resources() == [], "the queued resource to be deleted")
    for host in (0, 1):  # both hosts' workers stop with their slice
        pid = int((tmp_path / f"host-{host}").read_text())
        eventually(lambda pid=pid: not alive(pid), f"host {host}'s worker to stop")


@pytest.mark.slow
def test_a_host_whose_pull_never_ends_fails_at_the_start_deadline_saying_it_booted(
    fake: FakeTpu, gs_prefix: str
) -> None:
    backend = make_backend(fake, tpu_start_timeout=3)
    fake.stall_pull_next(host=0)
    out = f"{gs_prefix}/add-{HASH}"
    with pytest.raises(StepFailed) as err:
        run(backend, out, jobfns.add, Resources(tpu="v5litepod-8", timeout=60), a=1, b=2)
    backend.close()
    assert str(err.value).startswith(
        "step 'add': job failed (the TPU host booted but never started the worker (is docker "
        "pull of backend.image still running?) within 3s of the slice becoming ACTIVE "
        "(backend.tpu_start_timeout); the serial console says more: gcloud compute tpus "
        "tpu-vm get-serial-port-output cp-add-0-"
    )
    eventually(lambda: fake.queued_resources() == [], "the queued resource to be deleted")
