"""Whether folders can be made under a local path, asked before a run writes anything there.

``check_writable`` (``confpipe.storage``) asks the permission bits, which root passes
everywhere: a prefix under ``/proc``, a read-only mount or a full-blown pseudo filesystem
would only fail when the first step wrote. ``check_creatable`` looks further, from the
nearest existing folder of the path: a dry run (which writes nothing) reads the mount table
for a read-only or pseudo filesystem; a run makes a temporary folder there and removes it at
once, which every filesystem answers truthfully. Local paths only; other URLs pass.

May import: ``confpipe.errors`` only.
"""

from __future__ import annotations

import os
import re
import tempfile

from confpipe.errors import ConfigError

__all__ = ["check_creatable"]

_OCTAL = re.compile(r"\\([0-7]{3})")

# filesystems of the kernel's own objects: no folder of outputs can be made in them
_PSEUDO = frozenset(
    {
        "proc", "sysfs", "cgroup", "cgroup2", "devpts", "securityfs", "debugfs", "tracefs",
        "pstore", "bpf", "configfs", "efivarfs", "fusectl", "mqueue", "binfmt_misc", "nsfs",
    }
)  # fmt: skip


def check_creatable(folder: str, *, probe: bool) -> None:
    """Raise ConfigError if no folder can be made at the local path ``folder`` (an absolute
    path). ``probe``: make (and remove) a temporary folder to be sure; else write nothing."""
    existing = folder
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        return  # check_writable names a file in the way
    if probe:
        try:
            os.rmdir(tempfile.mkdtemp(prefix=".confpipe-probe-", dir=existing))
        except OSError as err:
            why = err.strerror or type(err).__name__
            raise ConfigError(_refused(folder, existing, f"{why}{_mounted_on(existing)}")) from None
        return
    mount = _mount_of(existing)
    if mount is not None and (mount[0] in _PSEUDO or "ro" in mount[1]):
        kind = "read-only" if "ro" in mount[1] else f"a {mount[0]} filesystem"
        raise ConfigError(_refused(folder, existing, kind))


def _refused(folder: str, existing: str, why: str) -> str:
    return f"prefix {folder!r}: can't create folders in {existing} ({why}); choose another prefix"


def _mounted_on(path: str) -> str:
    mount = _mount_of(path)
    return "" if mount is None else f"; a {mount[0]} filesystem"


def _mount_of(path: str) -> tuple[str, set[str]] | None:
    """The type and options of the filesystem ``path`` is on, from ``/proc/self/mounts``
    (None where there is no such file: not Linux)."""
    try:
        with open("/proc/self/mounts", encoding="utf-8") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    real = os.path.realpath(path)
    best: tuple[int, str, set[str]] | None = None
    for line in lines:
        fields = line.split()
        if len(fields) < 4:
            continue
        point = _unescape(fields[1])
        inside = real == point or real.startswith(point.rstrip("/") + "/")
        if inside and (best is None or len(point) >= best[0]):  # the last mount on top wins
            best = (len(point), fields[2], set(fields[3].split(",")))
    return None if best is None else (best[1], best[2])


def _unescape(field: str) -> str:
    r"""A mount point as written in the mount table: spaces and the like as ``\040``."""
    return _OCTAL.sub(lambda m: chr(int(m.group(1), 8)), field)
