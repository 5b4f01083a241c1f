"""A confpipe job on Google Cloud, whichever service runs it: its id, labels, entry and env.

Cloud Batch and Cloud TPU run the same entry, ``python -m confpipe.backends.vm <job
folder>`` (``VM_MODULE``), with the same variables of confpipe's own (``entry_env``: the
staged code, the sha256 of it and of ``call.pkl``, which the job checks before it trusts
either (the bucket may be written by others; the API is the trusted channel), the step's
pip extras, a storage emulator); they name a job the same way
(``job_id``, stable for its folder, so a retried create finds its own job) and label it
with the step's name, hash and output (``step_labels``), by which a restarted driver finds
a live job again. Requests are logged and written down only with env values hidden
(``REDACTED``). Light on purpose: ``vm`` imports it on every VM.
"""

from __future__ import annotations

import hashlib
import re
from typing import NamedTuple

from confpipe.backends import CALL_DIGEST_VAR, RECORDS, JobRequest

VM_MODULE = "confpipe.backends.vm"  # the command is a contract with images: see backends/vm.py
CODE_VAR = "CONFPIPE_CODE"  # URL of the staged working-tree archive, if any
CODE_DIGEST_VAR = "CONFPIPE_CODE_SHA256"  # its sha256: vm unpacks no other archive
EXTRAS_VAR = "CONFPIPE_PIP_EXTRAS"  # the step's pip_extras, comma-separated
STORAGE_VARS = ("STORAGE_EMULATOR_HOST", "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT")
OWN_VARS = frozenset(
    {CODE_VAR, CODE_DIGEST_VAR, CALL_DIGEST_VAR, EXTRAS_VAR, "PYTHONUNBUFFERED", *STORAGE_VARS}
)
STEP, HASH, OUT, DRIVER = "confpipe-step", "confpipe-hash", "confpipe-out", "confpipe-driver"
LABEL = re.compile(r"[a-z][a-z0-9_-]{0,62}")
LABEL_VALUE = re.compile(r"[a-z0-9_-]{0,63}")
REDACTED = "<redacted>"  # an env value, in whatever is logged or written down


class StagedCode(NamedTuple):
    """A staged working-tree archive: where it is, and the sha256 (hex) of its bytes."""

    url: str
    sha256: str


def entry_env(
    job: JobRequest, *, storage_endpoint: str | None, code: StagedCode | None
) -> dict[str, str]:
    """The variables confpipe sets for the job's entry (``OWN_VARS``), the step's env aside."""
    env = {"PYTHONUNBUFFERED": "1"}
    if storage_endpoint:
        env.update(zip(STORAGE_VARS, (storage_endpoint, "false"), strict=True))
    if job.call_digest:
        env[CALL_DIGEST_VAR] = job.call_digest
    if code:
        env[CODE_VAR], env[CODE_DIGEST_VAR] = code
    if job.resources.pip_extras:
        env[EXTRAS_VAR] = ",".join(job.resources.pip_extras)
    return env


def step_labels(job: JobRequest) -> dict[str, str]:
    """The labels that find a step's live job again: its name, its hash and its output."""
    output = output_of(job.job_dir)
    name = output.rstrip("/").rsplit("/", 1)[-1]
    digest = hashlib.sha256(output.encode()).hexdigest()[:12]
    step_hash = name[len(job.step) + 1 :] if name.startswith(f"{job.step}-") else digest
    return {STEP: slug(job.step), HASH: slug(step_hash), OUT: digest}


def job_id(job: JobRequest) -> str:
    """A valid, unique job id, stable for the job folder (so retried creates dedupe)."""
    digest = hashlib.sha256(job.job_dir.encode()).hexdigest()[:10]
    return f"cp-{slug(job.step)[:40].strip('-_').replace('_', '-')}-{job.attempt}-{digest}"


def output_of(job_dir: str) -> str:
    """The step output a job folder belongs to (``{output}/.confpipe/jobs/{id}``)."""
    head, _, _ = job_dir.rstrip("/").rpartition("/")
    suffix = f"/{RECORDS}/jobs"
    return head[: -len(suffix)] if head.endswith(suffix) else head


def slug(text: str) -> str:
    """``text`` as a label value: lowercase letters, digits, '_' and '-', at most 63."""
    return re.sub(r"[^a-z0-9_-]", "-", text.lower())[:63]
