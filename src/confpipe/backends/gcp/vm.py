"""``python -m confpipe.backends.vm <job folder URL>``: what a cloud VM runs for one job.

1. If ``CONFPIPE_CODE`` names a staged working-tree archive, check that its sha256 is
   ``CONFPIPE_CODE_SHA256`` (the job's spec says what the driver staged; anyone who can
   write to the bucket could have replaced it: if so, the job fails with an
   ``IntegrityError`` record and exit code 1, nothing unpacked), unpack it, make it the
   working folder and ``sys.path`` root, and ``pip install`` it with ``CONFPIPE_PIP_EXTRAS``
   when it is a project (has ``pyproject.toml`` or ``setup.py``).
2. Run ``python -m confpipe.worker <job folder>`` in a fresh interpreter (it sees what was
   just installed, and checks ``call.pkl`` against ``CONFPIPE_CALL_SHA256`` likewise),
   teeing its output to our stdout (Cloud Logging) and to ``log.txt`` in the job folder,
   uploaded whole every ``CONFPIPE_LOG_INTERVAL`` seconds and at exit (an object store
   can't append), capped at its last 8 MiB. A retried task appends to the earlier log.
3. Exit with the worker's exit code (128 + signal if it was killed). SIGTERM is passed on.

A bucket that does not answer for a while is waited out: the job's own records (the log's
last upload, a host's start and exit records) are tried again with backoff for up to
``patience.JOB_PATIENCE`` seconds, saying so on stdout, as the worker does for the result.
A log that still can't be uploaded then does not change the exit code: the result is what
counts, and Cloud Logging has the log.

On a multi-host job (a Cloud TPU slice: every host runs this, the startup script sets
``CONFPIPE_TPU_HOST`` to the host's worker index) host 0 works in the job folder itself, so
the job's ``result.json``, ``error.json`` and ``log.txt`` are host 0's; host N > 0 works in
``host-N/`` below it (a copy of ``call.pkl``, its own records and ``log.txt``). Each host
writes ``starts/N-worker`` first (the driver's start deadline waits for it) and
``exits/N.json`` after its last log upload: the driver learns from these that the job
ended, and which host failed (``confpipe.backends.gcp.hosts``). A Cloud Batch job (one host,
no ``CONFPIPE_TPU_HOST``) writes ``exits/0.json`` likewise, so its driver notices the end
without waiting for its next API poll. A file ``exited`` in
``CONFPIPE_HOST_STATE`` then tells the startup script not to write an exit record of its own.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import tarfile
import tempfile
import threading
from collections.abc import Callable, Sequence
from types import FrameType
from typing import TypeVar

from confpipe.backends import CALL, ERROR, INTEGRITY, LOG, integrity_error
from confpipe.backends.gcp.hosts import (
    WORKER,
    Exit,
    exit_path,
    host_dir,
    parse_exit,
    start_path,
)
from confpipe.backends.gcp.job import CODE_DIGEST_VAR, CODE_VAR, EXTRAS_VAR
from confpipe.backends.patience import TRANSIENT, as_a_job
from confpipe.storage import Store, store_for

T = TypeVar("T")
LOG_LIMIT = 8 * 2**20
INTERVAL_VAR = "CONFPIPE_LOG_INTERVAL"
USAGE = "usage: python -m confpipe.backends.vm <job folder URL>"
HOST_VAR = "CONFPIPE_TPU_HOST"  # this host's index in a multi-host job (set on TPU VMs)
STATE_VAR = "CONFPIPE_HOST_STATE"  # a folder the startup script shares with the container
EXITED = "exited"  # in STATE_VAR's folder: the exit record is written, the script adds none


class IntegrityFailed(Exception):
    """A staged file is not what the job was sent (its sha256 is not the spec's)."""


class LogSink:
    """The job's log: a local file, mirrored whole into the job folder's ``log.txt``."""

    def __init__(self, store: Store, job_dir: str, interval: float) -> None:
        self.store, self.path, self.interval = store, f"{job_dir}/{LOG}", interval
        self.local = tempfile.TemporaryFile()  # noqa: SIM115 - closed by close()
        self._lock = threading.Lock()
        self._dirty = False
        self._stop = threading.Event()
        earlier = _patiently(f"reading {LOG}", lambda: store.read(self.path))
        if earlier is not None:  # a retried task (the VM was preempted): keep what came before
            attempt = os.environ.get("BATCH_TASK_RETRY_ATTEMPT", "?")
            self.local.write(earlier.data + f"\n--- retry attempt {attempt} ---\n".encode())
        self._thread = threading.Thread(target=self._upload_every, name="log-upload", daemon=True)
        self._thread.start()

    def write(self, data: bytes) -> None:
        with self._lock:
            self.local.write(data)
            self._dirty = True
        with contextlib.suppress(OSError, ValueError):
            sys.stdout.buffer.write(data)
            sys.stdout.buffer.flush()

    def close(self) -> None:
        """Stop the uploads and upload the log one last time (patiently); never raises for
        a bucket that stays gone: the job's outcome is in its records, not in its log."""
        self._stop.set()
        self._thread.join()
        try:
            _patiently(f"uploading {LOG}", self.upload)
        except TRANSIENT as err:
            _say(f"confpipe: gave up uploading {self.path}: {err}")
        finally:
            self.local.close()

    def upload(self) -> None:
        with self._lock:
            self._dirty = False
            size = self.local.seek(0, io.SEEK_END)
            self.local.seek(max(0, size - LOG_LIMIT))
            data = self.local.read()
        if size > LOG_LIMIT:
            cut = data.find(b"\n") + 1
            data = b"[... earlier lines cut: the full log is in Cloud Logging]\n" + data[cut:]
        self.store.write(self.path, data)

    def _upload_every(self) -> None:
        while not self._stop.wait(self.interval):
            if self._dirty:
                with contextlib.suppress(Exception):  # the next upload (or the last) retries
                    self.upload()


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1 or args[0].startswith("-"):
        print(USAGE, file=sys.stderr)
        return 2
    job_dir = args[0].rstrip("/")
    host = int(os.environ[HOST_VAR]) if os.environ.get(HOST_VAR) else None
    folder = host_dir(job_dir, host or 0)
    store = store_for(job_dir)
    if host is None:  # a Batch task run again after its job ended: it must not run twice
        before = _ended_before(store, job_dir)
        if before is not None:
            _say(f"confpipe: this job already ended ({before.text()}): not run again")
            return before.code
    sink = LogSink(store, folder, float(os.environ.get(INTERVAL_VAR, "10")))
    code = 1
    try:
        if host is not None:  # the driver's start deadline waits for this (hosts.py)
            started = start_path(job_dir, host, WORKER)
            _patiently("writing the start record", lambda: store.write(started, b""))
        code = _run_job(job_dir, folder, sink)
        return code
    finally:
        try:
            sink.close()
        finally:
            if host is None and _stopped.is_set():  # preempted, say: Batch may retry the
                _say("confpipe: stopped by SIGTERM; no exit record (Batch decides what next)")
            else:  # task, and its driver waits for what Batch says of it
                one = host or 0  # a Batch job's one host writes it too: its driver reads it
                record = json.dumps({"host": one, "code": code, "stage": WORKER}).encode()
                ended = exit_path(job_dir, one)
                _patiently("writing the exit record", lambda: store.write(ended, record))
            _mark_exited()


_stopped = threading.Event()  # the job was sent SIGTERM (a VM being preempted, a delete)


def _ended_before(store: Store, job_dir: str) -> Exit | None:
    """The exit record of an earlier attempt of this Batch job, if it wrote one: the driver
    may have taken its outcome already (it reads that record between API requests), so a
    task that Batch retries afterwards (a VM preempted between that record and its exit)
    ends as that attempt did rather than run the step a second time."""
    blob = _patiently("reading the exit record", lambda: store.read(exit_path(job_dir, 0)))
    ended = None if blob is None else parse_exit(blob.data)
    return ended if ended is not None and ended.stage == WORKER else None


def _patiently(what: str, op: Callable[[], T]) -> T:
    """``op()``, tried again with backoff while the bucket does not answer (saying so)."""
    return as_a_job(f"confpipe: {what}", op, _say)


def _say(line: str) -> None:
    """A line on stdout (Cloud Logging), for when the job's log may not reach the bucket."""
    with contextlib.suppress(OSError, ValueError):
        print(line, flush=True)


def _mark_exited() -> None:
    """Tell the startup script (through the folder it shares with us) that our exit record
    is written: it must not write one of its own."""
    state = os.environ.get(STATE_VAR)
    if state:
        with contextlib.suppress(OSError):
            open(os.path.join(state, EXITED), "wb").close()


def _run_job(job_dir: str, folder: str, sink: LogSink) -> int:
    env, cwd = dict(os.environ), None
    if folder != job_dir:  # another host of a multi-host job: the call, in a folder of its own
        store = store_for(job_dir)
        call = _patiently(f"reading {CALL}", lambda: store.read(f"{job_dir}/{CALL}"))
        if call is None:
            sink.write(f"confpipe: no {CALL} in {job_dir}\n".encode())
            return 2
        copy = call.data
        _patiently(f"copying {CALL}", lambda: store.write(f"{folder}/{CALL}", copy))
    code = os.environ.get(CODE_VAR)
    if code:
        extras = [e for e in os.environ.get(EXTRAS_VAR, "").split(",") if e]
        try:
            cwd = unpack(code, os.environ.get(CODE_DIGEST_VAR, ""))
            command = pip_command(cwd, extras)
        except IntegrityFailed as err:  # the job's failure, as the worker's would be
            sink.write(f"confpipe: {err}\n".encode())
            record = {"type": INTEGRITY, "message": str(err), "traceback": ""}
            data, path = json.dumps(record, indent=1).encode(), f"{folder}/{ERROR}"
            _patiently(f"writing {ERROR}", lambda: store_for(folder).write(path, data))
            return 1
        except Exception as err:  # say why in the job's log, where the driver looks
            sink.write(
                f"confpipe: can't set up the staged code: {type(err).__name__}: {err}\n".encode()
            )
            return 1
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [cwd, env.get("PYTHONPATH")]))
        if command is not None and run(command, sink, env, cwd) != 0:
            sink.write(b"confpipe: pip install of the staged code failed\n")
            return 1
    return run([sys.executable, "-m", "confpipe.worker", folder], sink, env, cwd)


def unpack(url: str, sha256: str = "") -> str:
    """Unpack the archive at ``url`` into a fresh folder; that folder. With ``sha256``, an
    archive of another digest is refused (``IntegrityFailed``) before anything is unpacked."""
    blob = store_for(url).read(url)
    if blob is None:
        raise FileNotFoundError(f"staged code {url} is missing")
    wrong = integrity_error(url.rsplit("/", 1)[-1], blob.data, sha256) if sha256 else None
    if wrong:
        raise IntegrityFailed(wrong)
    folder = tempfile.mkdtemp(prefix="confpipe-code-")
    with tarfile.open(fileobj=io.BytesIO(blob.data), mode="r:gz") as tar:
        if hasattr(tarfile, "data_filter"):  # Python >= 3.11.4: refuse paths outside folder
            tar.extractall(folder, filter="data")
        else:
            tar.extractall(folder)  # our own archive, written by staging.archive
    return folder


def pip_command(folder: str, extras: Sequence[str]) -> list[str] | None:
    """``pip install folder[extras]`` for a project; None if ``folder`` isn't one."""
    if not any(os.path.exists(os.path.join(folder, f)) for f in ("pyproject.toml", "setup.py")):
        if extras:
            raise ValueError(f"pip_extras {list(extras)} need a pyproject.toml or setup.py")
        return None
    target = f"{folder}[{','.join(extras)}]" if extras else folder
    return [sys.executable, "-m", "pip", "install", "--quiet", "--no-input", target]


def run(command: list[str], sink: LogSink, env: dict[str, str], cwd: str | None) -> int:
    """Run ``command`` with its output in ``sink``; its exit code (128 + signal if killed)."""
    proc = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, cwd=cwd
    )

    def forward(signum: int, frame: FrameType | None) -> None:
        _stopped.set()
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signum)

    previous = signal.signal(signal.SIGTERM, forward)
    try:
        assert proc.stdout is not None
        while chunk := os.read(proc.stdout.fileno(), 65536):
            sink.write(chunk)
        code = proc.wait()
    finally:
        signal.signal(signal.SIGTERM, previous)
    return 128 - code if code < 0 else code


if __name__ == "__main__":
    sys.exit(main())
