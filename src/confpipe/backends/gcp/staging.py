"""Stage the working tree for remote jobs: an archive of its git-tracked files, under the prefix.

The archive holds each tracked file as it is now on disk (uncommitted edits included), so
a job runs the code the user has now. It is deterministic (sorted, zero timestamps and
owners) and content-addressed (``code-{digest}.tar.gz``), so one run uploads it once and
an unchanged tree is never uploaded twice. An object of that name whose bytes are not the
archive's (written by someone else) is replaced; jobs check the archive's sha256 anyway
(``CONFPIPE_CODE_SHA256``, in their spec) before unpacking it.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import subprocess
import tarfile
import threading

from confpipe.backends.gcp.job import StagedCode
from confpipe.errors import ConfigError
from confpipe.storage import store_for


def worktree(path: str = ".") -> str:
    """The top folder of the git working tree that holds ``path``."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--show-toplevel"],
            cwd=path,
            capture_output=True,
            text=True,
            check=True,
        )
    except (OSError, subprocess.CalledProcessError) as err:
        said = (getattr(err, "stderr", "") or str(err)).strip()
        raise ConfigError(
            f"backend.stage_code: {os.path.abspath(path)} is not in a git working tree (git "
            f"said: {said}); run from your repository or set "
            "backend.stage_code=false and bake the code into backend.image"
        ) from None
    return out.stdout.strip()


def archive(root: str) -> bytes:
    """A gzipped tar of the tracked files under ``root``, byte-identical for identical trees."""
    listed = subprocess.run(
        ["git", "ls-files", "-z"], cwd=root, capture_output=True, check=True
    ).stdout
    buffer = io.BytesIO()
    with (
        gzip.GzipFile(fileobj=buffer, mode="wb", mtime=0) as zipped,
        tarfile.open(fileobj=zipped, mode="w", format=tarfile.PAX_FORMAT) as tar,
    ):
        for name in sorted(p.decode() for p in listed.split(b"\0") if p):
            path = os.path.join(root, name)
            if os.path.islink(path):
                info = tarfile.TarInfo(name)
                info.type, info.linkname, info.mode = tarfile.SYMTYPE, os.readlink(path), 0o777
                tar.addfile(info)
            elif os.path.isfile(path):  # skips deleted files and submodules
                with open(path, "rb") as f:
                    data = f.read()
                info = tarfile.TarInfo(name)
                info.size = len(data)
                info.mode = 0o755 if os.access(path, os.X_OK) else 0o644
                tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


class CodeStager:
    """Uploads the working tree's archive to ``folder`` once, on first use; thread-safe."""

    def __init__(self, folder: str, root: str) -> None:
        self.folder = folder.rstrip("/")
        self.root = root
        self._lock = threading.Lock()
        self._staged: StagedCode | None = None

    def staged(self) -> StagedCode:
        """The archive's URL and sha256, uploading it first if this stager hasn't yet."""
        with self._lock:
            if self._staged is None:
                data = archive(self.root)
                digest = hashlib.sha256(data).hexdigest()
                url = f"{self.folder}/code-{digest[:16]}.tar.gz"
                store = store_for(url)
                if store.create(url, data) is None:  # there already: the same tree, or else?
                    there = store.read(url)
                    if there is None or there.data != data:  # not what its name says: replace
                        store.write(url, data)
                self._staged = StagedCode(url, digest)
            return self._staged
