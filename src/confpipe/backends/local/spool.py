"""Where local jobs whose folders are remote (gs://) write their logs until they are uploaded.

A private folder made by ``tempfile.mkdtemp`` (mode 0700, a name no one can guess) in the
system temp folder, made when a spooled job starts and removed when the last log in it has
been uploaded; a later job makes a new one, never re-using the old name. Each log is opened
with ``O_CREAT | O_EXCL | O_NOFOLLOW`` (mode 0600): a file or symlink planted at its name
makes the job fail to start rather than write through it. A predictable name such as
``confpipe-jobs-<pid>`` let another user of the machine plant a symlink there and have the
driver overwrite a file of the user's.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import tempfile
from typing import BinaryIO

from confpipe.backends import LOG
from confpipe.storage import store_for

logger = logging.getLogger(__name__)
_PRIVATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)


class Spool:
    """The spool folder of one backend; the caller holds its own lock around calls."""

    def __init__(self) -> None:
        self._folder: str | None = None
        self._names = itertools.count()

    def new_log(self) -> str:
        """A fresh log path in the spool folder (made now if there is none)."""
        if self._folder is None:
            self._folder = tempfile.mkdtemp(prefix="confpipe-jobs-")
        return os.path.join(self._folder, f"{next(self._names)}-{LOG}")

    def tidy(self) -> None:
        """Remove the spool folder once no log is left in it."""
        if self._folder is not None:
            with contextlib.suppress(OSError):
                os.rmdir(self._folder)
                self._folder = None


def open_private(path: str) -> BinaryIO:
    """``path`` opened for writing, created by this call (never an existing file or a
    symlink), readable by this user only."""
    return os.fdopen(os.open(path, _PRIVATE, 0o600), "wb")


def upload_log(log: str, job_dir: str, step: str) -> bool:
    """Put a spooled log into the job's remote folder, then drop the spool file; whether it
    is there now."""
    try:
        with open(log, "rb") as f:
            store_for(job_dir).write(f"{job_dir}/{LOG}", f.read())
    except Exception as err:  # the log is kept locally: say where
        logger.warning("step %r: could not upload %s: %s", step, log, err)
        return False
    with contextlib.suppress(OSError):
        os.unlink(log)
    return True
