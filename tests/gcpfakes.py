"""What the job backends' tests share (Cloud Batch, Cloud TPU, local): goldens, jobs, the CLI.

``SETTINGS`` and ``JOB_DIR`` make golden requests, ``check_golden`` compares one with its
file under ``tests/golden``; ``run`` drives one job through ``run_job`` (the step is named
by its output folder, ``{step}-{hash}``) and ``in_thread`` in a thread (``tests.waits``
waits on them); ``imports_no_google`` checks that Google's SDKs load lazily;
``cli`` runs ``python -m confpipe`` as a user would (in a folder ``experiment`` made),
unable to reach Google. The fakes' fixtures are in ``conftest``.
"""

from __future__ import annotations

import difflib
import os
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from confpipe.backends import Backend
from confpipe.backends.gcp.job import StagedCode
from confpipe.backends.resources import Resources
from confpipe.cancel import CancelScope
from confpipe.engine import status
from confpipe.engine.remote import run_job

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = Path(__file__).parent / "golden"
SETTINGS: dict[str, Any] = {  # the golden requests' backend settings: every optional one set
    "project": "proj",
    "region": "us-central1",
    "image": "us-docker.pkg.dev/proj/ml/confpipe:latest",
    "service_account": "jobs@proj.iam.gserviceaccount.com",
    "network": "projects/proj/global/networks/default",
    "subnetwork": "projects/proj/regions/us-central1/subnetworks/default",
    "labels": {"team": "lm"},
}
JOB_DIR = "gs://bucket/outputs/{step}-0123456789ab/.confpipe/jobs/20250101-000000.000-0-0a1b2c3d"
CALL_DIGEST = "ca11" * 16  # the golden jobs' call.pkl sha256, which the job checks
CODE = StagedCode("gs://bucket/outputs/.confpipe/code/code-0123456789abcdef.tar.gz", "c0de" * 16)


def check_golden(path: Path, text: str, what: str, test: str) -> None:
    """Compare ``text`` with the golden file ``path``; CONFPIPE_UPDATE_GOLDEN=1 rewrites it.

    A mismatch says how to accept the change: rerun ``test``'s golden tests with the variable.
    """
    if os.environ.get("CONFPIPE_UPDATE_GOLDEN") == "1":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return
    old = path.read_text() if path.exists() else ""
    if old != text:
        diff = "".join(difflib.unified_diff(old.splitlines(True), text.splitlines(True)))
        pytest.fail(
            f"the {what} differs from {path}; if the change is intended, accept it with\n"
            f"    CONFPIPE_UPDATE_GOLDEN=1 .venv/bin/pytest {test} -k golden\n{diff}"
        )


def run(
    backend: Backend,
    out: str | Path,
    fn: Callable[..., object],
    resources: Resources | None = None,
    scope: CancelScope | None = None,
    detach: bool = False,
    **kwargs: object,
) -> object:
    """Run ``fn(**kwargs)`` as the job of the step whose output is ``out`` (``{step}-{hash}``)."""
    step = str(out).rstrip("/").rsplit("/", 1)[-1].rsplit("-", 1)[0]
    return run_job(
        backend,
        step,
        status.jobs_dir(str(out)),
        fn,
        kwargs,
        resources or Resources(),
        scope=scope or CancelScope(),
        detach=detach,
    )


def in_thread(fn: Callable[[], object]) -> tuple[threading.Thread, list[object]]:
    """Run ``fn`` in a thread; the list gets its value or exception."""
    outcome: list[object] = []

    def target() -> None:
        try:
            outcome.append(fn())
        except BaseException as err:
            outcome.append(err)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread, outcome


def imports_no_google(*modules: str) -> None:
    """Importing ``modules`` in a fresh interpreter loads no ``google.*`` module."""
    code = (
        f"import sys, {', '.join(modules)}; "
        "assert not [m for m in sys.modules if m.startswith('google')], 'google imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def experiment(root: Path, name: str, text: str) -> Path:
    """``root`` with ``confs/experiment/{name}.yaml`` holding ``text`` (``--config-dir confs``)."""
    confs = root / "confs" / "experiment"
    confs.mkdir(parents=True)
    (confs / f"{name}.yaml").write_text(text)
    return root


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """``python -m confpipe ARGS`` in ``cwd``: no emulator in its environment and Google
    credentials that don't exist, so it finds the fakes only through the ``backend`` keys."""
    return subprocess.run(
        [sys.executable, "-m", "confpipe", *args],
        cwd=cwd, env=cli_env(cwd), capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def cli_env(cwd: Path) -> dict[str, str]:
    """The environment ``cli`` runs in."""
    env = {k: v for k, v in os.environ.items() if k != "STORAGE_EMULATOR_HOST"}
    env.pop("CONFPIPE_FULL_ERROR", None)
    env.update(
        PYTHONPATH=str(ROOT),
        GOOGLE_APPLICATION_CREDENTIALS=str(cwd / "no-such-credentials.json"),
        CLOUDSDK_CONFIG=str(cwd / "no-gcloud-config"),
    )
    return env
