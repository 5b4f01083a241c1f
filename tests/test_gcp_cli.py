"""``backend=gcp`` end to end: ``python -m confpipe`` in real subprocesses, never Google.

The CLI talks to a FakeBatch (the real google-cloud-batch client over gRPC; the fake runs
each job's command as a local subprocess) and to fake-gcs-server (tests/conftest.py) for a
``gs://`` prefix. The CLI finds both only through ``backend.batch_endpoint`` and
``backend.storage_endpoint``: its environment has no ``STORAGE_EMULATOR_HOST`` and Google
credentials that don't exist, so any attempt to reach Google fails loudly.
"""

from __future__ import annotations

import json
import os
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from confpipe import load_result
from confpipe.testing.batch import FakeBatch
from confpipe.testing.gcs import FakeGcs
from tests.conftest import BUCKET
from tests.gcpfakes import cli, experiment
from tests.waits import eventually

DEMO = """\
# @package _global_
steps:
  prep:
    fn: tests.stepfns.add
    config: {a: 1, b: 2}
  total:
    fn: tests.jobfns.add
    config: {a: 40, b: 2}
    resources: {cpu: 1}
  after:
    fn: tests.stepfns.noop
    config: {up: "${step:total}", first: "${step:prep}"}
"""


@pytest.fixture
def work(tmp_path: Path) -> Path:
    return experiment(tmp_path, "gcp_demo", DEMO)


def gcp(fake: FakeBatch, gcs: FakeGcs, prefix: str, *more: str) -> list[str]:
    """The demo on backend=gcp against both fakes, plus ``more`` overrides."""
    return [
        "--config-dir", "confs", "+experiment=gcp_demo", "backend=gcp",
        "backend.project=p", "backend.image=local", f"backend.batch_endpoint={fake.endpoint}",
        f"backend.storage_endpoint={gcs.endpoint}", "backend.poll_interval=0.2",
        "backend.stage_code=false", "backend.labels={team: lm}", f"prefix={prefix}", *more,
    ]  # fmt: skip


def bucket_objects(gcs: FakeGcs) -> dict[str, str]:
    """Every object in the test bucket, with its generation."""
    found: dict[str, str] = {}
    token = ""
    while True:
        query = urllib.parse.urlencode({"maxResults": 1000, "pageToken": token} if token else {})
        url = f"{gcs.endpoint}/storage/v1/b/{BUCKET}/o?{query}"
        with urllib.request.urlopen(url, timeout=10) as response:
            page = json.load(response)
        found.update((item["name"], item["generation"]) for item in page.get("items", []))
        token = page.get("nextPageToken", "")
        if not token:
            return found


def plan_rows(stdout: str) -> dict[str, list[str]]:
    """The dry-run table's rows by step: step, hash, status, where, output, reason."""
    header, *rows = stdout.splitlines()[:-1]
    starts = [header.index(column) for column in ("hash", "status", "where", "output", "reason")]
    bounds = list(zip([0, *starts], [*starts, None], strict=True))
    cells = [[row[a:b].strip() for a, b in bounds] for row in rows]
    return {row[0]: row for row in cells}


@pytest.mark.slow
def test_batch_steps_run_through_the_fakes_then_are_cached(
    work: Path, fake_batch: FakeBatch, fake_gcs: FakeGcs, gs_prefix: str
) -> None:
    before = bucket_objects(fake_gcs)
    plan = cli(*gcp(fake_batch, fake_gcs, gs_prefix, "dry_run=true"), cwd=work)
    assert plan.returncode == 0, plan.stderr
    rows = plan_rows(plan.stdout)
    assert [rows[s][3] for s in ("prep", "total", "after")] == ["thread", "batch (cpu=1)", "thread"]
    assert rows["total"][4] == f"{gs_prefix}/total-{rows['total'][1]}"
    assert bucket_objects(fake_gcs) == before  # a dry run writes nothing...
    assert fake_batch.count() == 0  # ...and submits nothing

    first = cli(*gcp(fake_batch, fake_gcs, gs_prefix), cwd=work)
    assert first.returncode == 0, first.stderr
    assert "summary: 3 ran, 0 cached, 0 failed" in first.stderr
    creates = [r for m, r in fake_batch.requests if m == "CreateJob"]
    assert len(creates) == 1
    labels = creates[0].job.labels
    assert (labels["confpipe-step"], labels["confpipe-hash"]) == ("total", rows["total"][1])
    assert labels["team"] == "lm"
    assert creates[0].parent == "projects/p/locations/us-central1"
    eventually(
        lambda: [j.status.state.name for j in fake_batch.jobs()] == ["SUCCEEDED"],
        "Batch to say the job ended (its exit record said so first)",
        10,
    )
    (job,) = fake_batch.jobs()
    assert "adding 40 and 2" in fake_batch.cloud_log(job.name)  # it ran in the fake's job
    total = load_result(rows["total"][4])
    assert total["sum"] == 42 and total["pid"] != os.getpid()
    assert load_result(rows["prep"][4]) == 3
    assert load_result(rows["after"][4]) is None

    seen = fake_batch.count()
    again = cli(*gcp(fake_batch, fake_gcs, gs_prefix), cwd=work)
    assert again.returncode == 0, again.stderr
    assert "3 cached, 0 to run" in again.stderr
    assert fake_batch.count("CreateJob") == 1
    assert fake_batch.count() == seen  # cached steps never reach Batch at all


@pytest.mark.slow
def test_jobs_are_told_the_storage_endpoint(
    work: Path, fake_batch: FakeBatch, fake_gcs: FakeGcs, gs_prefix: str
) -> None:
    """A VM (or a FakeBatch started elsewhere) finds the emulator only through the job env."""
    out = cli(*gcp(fake_batch, fake_gcs, gs_prefix, "run_only=[total]"), cwd=work)
    assert out.returncode == 0, out.stderr
    creates = [r for m, r in fake_batch.requests if m == "CreateJob"]
    variables = creates[0].job.task_groups[0].task_spec.environment.variables
    assert variables.get("STORAGE_EMULATOR_HOST") == fake_gcs.endpoint


@pytest.mark.slow
def test_a_missing_project_is_one_line_and_nothing_is_written(
    work: Path, fake_batch: FakeBatch, fake_gcs: FakeGcs, gs_prefix: str
) -> None:
    before = bucket_objects(fake_gcs)
    args = [a for a in gcp(fake_batch, fake_gcs, gs_prefix) if not a.startswith("backend.project=")]
    out = cli(*args, cwd=work)
    assert out.returncode == 2
    (line,) = out.stderr.splitlines()
    assert line.startswith(
        "confpipe: error: backend.project: missing; set the Google Cloud project the jobs run "
        "in, e.g. backend.project=my-project"
    )
    assert bucket_objects(fake_gcs) == before
    assert fake_batch.count() == 0


@pytest.mark.slow
def test_config_mistakes_on_gcp_exit_2_with_one_line(
    work: Path, fake_batch: FakeBatch, fake_gcs: FakeGcs, gs_prefix: str
) -> None:
    for override, expected in [
        ("backend.projct=x", "backend.projct: unknown key (did you mean 'project'?); valid keys: "),
        ("backend.cpu=4", "backend.cpu: only the local backend has a cpu budget"),
        ("backend.poll_interval=0", "backend.poll_interval: must be a positive number of seconds"),
        (
            "steps.total.resources.tpu=v4-8",
            "step 'total': resources.tpu=v4-8: no zone of backend.region=us-central1 offers "
            "TPU v4; zones that do: us-central2-b",
        ),
        (
            "backend.region=europe-west2 "
            "+steps.total.resources.gpu={type:nvidia-tesla-v100,count:1}",
            "step 'total': resources.gpu.type=nvidia-tesla-v100: no zone of "
            "backend.region=europe-west2 offers it; regions that do: us-central1,",
        ),
    ]:
        out = cli(*gcp(fake_batch, fake_gcs, gs_prefix, *override.split(" ")), cwd=work)
        assert out.returncode == 2, (override, out.stderr)
        (line,) = out.stderr.splitlines()
        assert line.startswith(f"confpipe: error: {expected}"), line
    assert not [k for k in bucket_objects(fake_gcs) if k.startswith(gs_prefix[5 + len(BUCKET) :])]
    assert fake_batch.count() == 0


# ---- the same settings from Python: backend_for on a plain mapping -------------------------


def test_backend_for_builds_batch_from_a_plain_mapping() -> None:
    from confpipe.backends.gcp.batch import BatchBackend
    from confpipe.backends.gcp.router import GcpBackend
    from confpipe.backends.resources import Resources
    from confpipe.config.compiler import backend_for

    settings = {"kind": "gcp", "project": "p", "image": "img", "labels": {"team": "lm"}}
    cfg = {"prefix": "gs://b/runs/", "backend": {**settings, "batch_endpoint": "127.0.0.1:9"}}
    gcp = backend_for(cfg)
    assert isinstance(gcp, GcpBackend)
    backend = gcp.serving(Resources())  # a CPU step: Batch
    assert isinstance(backend, BatchBackend)
    try:
        assert backend.settings.parent == "projects/p/locations/us-central1"
        assert (backend.settings.image, dict(backend.settings.labels)) == ("img", {"team": "lm"})
        assert backend.settings.poll_interval == 10
        stager = backend._stager  # where the working tree is staged: under the prefix
        assert stager is not None and stager.folder == "gs://b/runs/.confpipe/code"
    finally:
        backend.close()


@pytest.mark.parametrize(
    ("backend", "expected"),
    [
        ({"kind": "gcp"}, "backend.project: missing; set the Google Cloud project the jobs run "
         "in, e.g. backend.project=my-project"),
        ({"kind": "gcp", "project": "p"}, "backend.image: missing; set the container image "),
        ({"kind": "gcp", "project": "p", "image": "i", "region": ""}, "backend.region: missing"),
        ({"kind": "gcp", "projct": "p"}, "backend.projct: unknown key (did you mean 'project'?)"),
        ({"kind": "gcp", "project": "p", "image": "i", "api_timeout": -1},
         "backend.api_timeout: must be a positive number of seconds, got -1.0"),
        ({"kind": "gcp", "project": "p", "image": "i", "labels": {"Team": "x"}},
         "backend.labels: Team='x' is not a valid label"),
        ({"kind": "gcp", "project": "p", "image": "i", "tpu_start_timeout": "soon"},
         "backend.tpu_start_timeout: 'soon' is not a duration; use e.g. 90s, 30m, 2h"),
        ({"kind": "gcp", "project": "p", "image": "i", "tpu_start_timeout": 0},
         "backend.tpu_start_timeout: must be a positive duration such as 10m or 600 (seconds)"),
    ],
)  # fmt: skip
def test_gcp_settings_errors_name_the_key(backend: dict[str, object], expected: str) -> None:
    from confpipe.config.compiler import backend_for
    from confpipe.errors import ConfigError

    with pytest.raises(ConfigError) as info:
        backend_for({"backend": backend})
    assert str(info.value).startswith(expected)
