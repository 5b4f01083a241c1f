"""The GPUs of this machine that local jobs share: ``backend.gpus``, or what ``nvidia-smi -L``
lists when it is unset.

``backend.gpus`` is a count (``2``: devices 0 and 1) or a list of device ids (``[0, 2]``,
or GPU UUIDs), as ``CUDA_VISIBLE_DEVICES`` names them; 0 or ``[]`` means none. Unset, the
machine is asked once, when a step first asks for a GPU (so a CPU-only run never starts
``nvidia-smi``); no ``nvidia-smi``, or one that fails, means no GPU. A local job with
``gpu: {count: N}`` waits until N devices are free and runs with ``CUDA_VISIBLE_DEVICES``
set to them; no two running jobs share a device. ``gpu.type`` is not checked locally: a
workstation's GPUs are whatever it has.
"""

from __future__ import annotations

import logging
import re
import shutil
import subprocess
from collections.abc import Sequence

from confpipe.errors import ConfigError

logger = logging.getLogger(__name__)
_LISTED = re.compile(r"^GPU (\d+):", re.MULTILINE)  # a line of `nvidia-smi -L`
DISCOVERY_TIMEOUT = 10.0  # seconds `nvidia-smi -L` may take


def declared(value: object) -> tuple[str, ...] | None:
    """The device ids ``backend.gpus`` names (None: unset, ask the machine); ConfigError for
    anything but a count or a list of distinct ids."""
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 0:
            raise ConfigError(f"backend.gpus: must be a count >= 0 or a list of ids, got {value}")
        return tuple(str(i) for i in range(value))
    if isinstance(value, Sequence) and not isinstance(value, str | bytes):
        ids = [_device_id(v) for v in value]
        if len(set(ids)) != len(ids):
            raise ConfigError(f"backend.gpus: a device is listed twice in {list(value)}")
        return tuple(ids)
    raise ConfigError(
        f"backend.gpus: must be a count (e.g. 2) or a list of device ids (e.g. [0, 1]), "
        f"got {value!r:.60}"
    )


def _device_id(value: object) -> str:
    """One device id: an index >= 0 or a name such as a GPU UUID."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return str(value)
    if isinstance(value, str) and value.strip() and "," not in value:
        return value.strip()
    raise ConfigError(
        f"backend.gpus: {value!r:.60} is not a device id; use indices (e.g. [0, 1]) or GPU UUIDs"
    )


def discover() -> tuple[str, ...]:
    """The indices of the GPUs ``nvidia-smi -L`` lists; none without a working nvidia-smi."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return ()
    try:
        out = subprocess.run(
            [exe, "-L"], capture_output=True, text=True, timeout=DISCOVERY_TIMEOUT, check=True
        ).stdout
    except (OSError, subprocess.SubprocessError) as err:
        logger.warning("nvidia-smi -L failed (%s): no GPU for local jobs; set backend.gpus", err)
        return ()
    return tuple(_LISTED.findall(out))


class DevicePool:
    """The devices local jobs take in turn; the caller holds its own lock around calls."""

    def __init__(self, gpus: object) -> None:
        self._declared = declared(gpus)
        self._devices: tuple[str, ...] | None = self._declared
        self._free: list[str] | None = None

    @property
    def devices(self) -> tuple[str, ...]:
        """All the devices (asks the machine the first time when ``backend.gpus`` is unset)."""
        if self._devices is None:
            self._devices = discover()
        return self._devices

    def source(self) -> str:
        """Where the device list comes from, for a message."""
        if self._declared is not None:
            return f"backend.gpus=[{', '.join(self._declared)}]"
        return "found by nvidia-smi -L; set backend.gpus if that is wrong"

    def fits(self, count: int) -> bool:
        return count == 0 or count <= len(self._free_list())

    def take(self, count: int) -> tuple[str, ...]:
        """``count`` free devices, lowest first; the caller checked they ``fit``."""
        if count == 0:
            return ()
        free = self._free_list()
        taken, free[:] = tuple(free[:count]), free[count:]
        return taken

    def give_back(self, devices: tuple[str, ...]) -> None:
        if not devices:
            return
        order = {d: i for i, d in enumerate(self.devices)}
        free = self._free_list()
        free.extend(devices)
        free.sort(key=order.__getitem__)

    def _free_list(self) -> list[str]:
        if self._free is None:
            self._free = list(self.devices)
        return self._free
