"""docs/gcp-image.md and docs/Dockerfile against the code: the command, the variables, the disk.

The page says what jobs run and what the image must hold; these tests keep it true. The
image itself can't be built here (no Docker daemon), so the slow test builds what the
Dockerfile's one install step makes, a fresh environment with only ``pip install ".[gcp]"``,
and runs a Batch job in it through FakeBatch and fake GCS, with no other path on its
``PYTHONPATH``: if confpipe needed more than its ``gcp`` extra, the job would fail.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from confpipe.backends.gcp.batch import BatchBackend
from confpipe.backends.gcp.batch_request import BOOT_DISK_GB
from confpipe.backends.gcp.job import OWN_VARS, VM_MODULE
from confpipe.backends.gcp.settings import GcpConf
from confpipe.backends.gcp.vm import HOST_VAR, INTERVAL_VAR, STATE_VAR
from confpipe.testing.gcs import FakeGcs
from tests.gcpfakes import ROOT, run

DOC = (ROOT / "docs" / "gcp-image.md").read_text()
DOCKERFILE = (ROOT / "docs" / "Dockerfile").read_text()


def test_the_page_names_the_command_jobs_run() -> None:
    assert f"    python -m {VM_MODULE} <job folder URL>\n" in DOC
    assert f"python -m {VM_MODULE} <job folder URL>" in DOCKERFILE


def test_the_page_lists_every_variable_confpipe_sets() -> None:
    for name in sorted({*OWN_VARS, HOST_VAR, STATE_VAR, INTERVAL_VAR}):
        assert f"`{name}`" in DOC, name


def test_the_page_says_where_disk_goes_and_the_floor() -> None:
    assert "`allocationPolicy.instances[].policy.bootDisk.sizeGb`" in DOC
    assert f"never below {BOOT_DISK_GB} GB" in DOC
    assert "`disk` is not `computeResource.bootDiskMib`" in DOC


def test_the_dockerfile_installs_confpipe_with_the_gcp_extra_and_sets_no_command() -> None:
    assert 'RUN python -m pip install ".[gcp]"' in DOCKERFILE
    assert not [line for line in DOCKERFILE.splitlines() if line.startswith(("CMD", "ENTRYPOINT"))]


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_an_image_with_only_confpipe_gcp_installed_runs_a_job(
    tmp_path: Path, fake_gcs: FakeGcs, gs_prefix: str
) -> None:
    from confpipe.testing.batch import FakeBatch

    image = tmp_path / "image"
    subprocess.run([sys.executable, "-m", "venv", str(image)], check=True, timeout=120)
    python = str(image / "bin" / "python")
    install = [python, "-m", "pip", "install", "--quiet", f"{ROOT}[gcp]"]
    subprocess.run(install, check=True, timeout=600, cwd=tmp_path)

    def square(x: int, output_path: str | None = None) -> dict[str, object]:
        import sys  # pickled by value (a local function): the image needs no test code

        return {"x": x * x, "python": sys.executable}

    env = {  # the container's environment: no PYTHONPATH, no path into this checkout
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path),
        **fake_gcs.env,
        "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false",
    }
    with FakeBatch(
        env=env, cwd=str(tmp_path), command=lambda r: [python, *r.container.commands]
    ) as fake:
        settings = GcpConf(
            project="p", image="img", batch_endpoint=fake.endpoint, poll_interval=0.05
        )
        backend = BatchBackend(settings)
        value = run(backend, f"{gs_prefix}/square-0123456789ab", square, x=7)
        backend.close()
    assert value == {"x": 49, "python": python}
