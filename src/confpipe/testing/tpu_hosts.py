"""The fake Cloud TPU's hosts at work: each one's startup script run as a local subprocess.

Private to ``confpipe.testing.tpu``. A ``Host`` is one TPU VM of a slice: a metadata server
of its own on a loopback port (``computeMetadata/v1/instance/attributes/...``: the node's
metadata plus ``agent-worker-number``, ``accelerator-type`` and ``worker-network-endpoints``,
as a TPU VM's server answers; ``GCE_METADATA_HOST`` points the script at it) and the
node's ``startup-script`` run by ``/bin/bash`` in a session of its own, its output kept as
the VM's serial console log; a host told not to boot runs nothing. The metadata server
also hands out an access token (``service-accounts/default/token``), as the VM's does.
``shims`` makes the folder put first on ``PATH``: a ``docker`` whose ``pull`` succeeds
unless the image is in ``FAKE_DOCKER_MISSING`` (comma-separated; as Docker says of an image
the registry doesn't have) and never returns with ``FAKE_DOCKER_PULL_HANGS`` set, and whose
``run`` executes the container's command on this
machine with this interpreter (the "image" is this environment), or, with
``FAKE_DOCKER_RUN_EXIT=CODE``, prints why and exits with CODE at once (an image without
confpipe); and a ``gcloud`` that only says what it was asked.
"""

from __future__ import annotations

import contextlib
import http.server
import os
import signal
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path

__all__ = ["Host", "descendants", "shims"]

TOKEN_PATH = "/computeMetadata/v1/instance/service-accounts/default/token"
_TOKEN = '{"access_token":"fake-tpu-token","expires_in":3599,"token_type":"Bearer"}'

_DOCKER = '''#!{python}
"""fake docker (confpipe.testing.tpu): `docker run [options] IMAGE COMMAND...` runs COMMAND
here, in this environment; python/python3 is the fake's interpreter."""
import os, sys, time
args = sys.argv[1:]
if args[:1] == ["pull"] and len(args) == 2:
    image = args[1]
    if os.environ.get("FAKE_DOCKER_PULL_HANGS"):
        print(f"latest: Pulling from {{image}}", flush=True)
        while True:  # a registry that never finishes sending (until the VM is shut down)
            time.sleep(1)
    if image in os.environ.get("FAKE_DOCKER_MISSING", "").split(","):
        print(f"Error response from daemon: manifest for {{image}} not found: manifest "
              "unknown: manifest unknown", file=sys.stderr)
        sys.exit(1)
    print(f"Status: Image is up to date for {{image}}")
    sys.exit(0)
if not args or args[0] != "run":
    sys.exit(f"fake docker: only `docker pull IMAGE` and `docker run` are supported, "
             f"not {{args[:1]}}")
if os.environ.get("FAKE_DOCKER_RUN_EXIT"):
    print("/usr/bin/python: Error while finding module specification for "
          "'confpipe.backends.vm' (ModuleNotFoundError: No module named 'confpipe')",
          file=sys.stderr)
    sys.exit(int(os.environ["FAKE_DOCKER_RUN_EXIT"]))
env, i = dict(os.environ), 1
valued = {{"-e", "--env", "-v", "--volume", "--name", "-w", "--workdir", "--entrypoint",
          "--shm-size", "--network", "--user", "-u"}}
while i < len(args) and args[i].startswith("-"):
    option, i = args[i], i + 1
    if option in valued:
        value, i = args[i], i + 1
        if option in ("-e", "--env") and "=" in value:
            key, _, val = value.partition("=")
            env[key] = val
command = args[i + 1:]
if not command:
    sys.exit("fake docker: no command after the image")
if command[0] in ("python", "python3"):
    command[0] = {python!r}
os.execvpe(command[0], command, env)
'''
_GCLOUD = """#!/bin/sh
echo "fake gcloud (confpipe.testing.tpu): gcloud $*"
"""


def shims(folder: Path) -> Path:
    """Write the ``docker`` and ``gcloud`` shims into ``folder`` (put it first on PATH)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in (("docker", _DOCKER.format(python=sys.executable)), ("gcloud", _GCLOUD)):
        path = folder / name
        path.write_text(text)
        path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return folder


class _Metadata(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, attributes: Mapping[str, str]) -> None:
        super().__init__(("127.0.0.1", 0), _MetadataHandler)
        self.attributes = dict(attributes)


class _MetadataHandler(http.server.BaseHTTPRequestHandler):
    server: _Metadata
    PREFIX = "/computeMetadata/v1/instance/attributes/"

    def do_GET(self) -> None:
        if self.headers.get("Metadata-Flavor") != "Google":
            self._send(403, "Missing required header: Metadata-Flavor: Google\n")
            return
        path = self.path.split("?", 1)[0]
        if path == TOKEN_PATH:
            self._send(200, _TOKEN)
            return
        key = path[len(self.PREFIX) :] if path.startswith(self.PREFIX) else None
        if key == "":
            self._send(200, "".join(f"{k}\n" for k in sorted(self.server.attributes)))
        elif key is not None and key in self.server.attributes:
            self._send(200, self.server.attributes[key])
        else:
            self._send(404, f"not found: {path}\n")

    def _send(self, code: int, text: str) -> None:
        body = text.encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/text")
        self.send_header("Metadata-Flavor", "Google")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


class Host:
    """One TPU VM: its metadata server and its startup script's process."""

    def __init__(
        self,
        index: int,
        attributes: Mapping[str, str],
        env: Mapping[str, str],
        cwd: str | None,
        log: Path,
        shim_dir: Path,
        *,
        boot: bool = True,
    ) -> None:
        self.index = index
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None
        self._metadata = _Metadata({**attributes, "agent-worker-number": str(index)})
        threading.Thread(
            target=self._metadata.serve_forever, name=f"fake-tpu-metadata-{index}", daemon=True
        ).start()
        host, port = self._metadata.server_address[:2]
        script = log.with_suffix(".sh")
        script.write_text(attributes.get("startup-script", "#!/bin/sh\n"))
        path = os.pathsep.join([str(shim_dir), env.get("PATH", os.defpath)])
        full_env = {**env, "PATH": path, "GCE_METADATA_HOST": f"{host!s}:{port}"}
        if not boot:  # a VM that never came up: nothing runs, nothing is printed
            return
        with open(log, "ab") as out:
            self.proc = subprocess.Popen(
                ["/bin/bash", str(script)],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=full_env,
                cwd=cwd,
                start_new_session=True,
            )

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def exit_code(self) -> int | None:
        """The startup script's exit code; None while it runs, or if the VM never booted."""
        return self.proc.poll() if self.proc is not None else None

    def stop(self, grace: float) -> None:
        """Shut the VM down: SIGTERM to its processes, SIGKILL after ``grace`` seconds."""
        self._signal(signal.SIGTERM)
        deadline = time.monotonic() + grace
        while self.running() and time.monotonic() < deadline:
            time.sleep(0.01)
        self._signal(signal.SIGKILL)
        if self.proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=5)
        self._metadata.shutdown()
        self._metadata.server_close()

    def kill_worker(self) -> bool:
        """SIGKILL this host's ``confpipe.worker`` process (as the OOM killer would)."""
        if self.proc is None:
            return False
        for pid in descendants(self.proc.pid):
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"confpipe.worker" in cmdline:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                return True
        return False

    def _signal(self, signum: int) -> None:
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signum)


def descendants(pid: int) -> list[int]:
    """Every process below ``pid``, parents first (from /proc: Linux only)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry.name))
    found, queue = [], list(children.get(pid, []))
    while queue:
        child = queue.pop(0)
        found.append(child)
        queue.extend(children.get(child, []))
    return found
