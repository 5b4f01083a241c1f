"""What a job asks of the machine that runs it: ``Resources`` and ``GPU``, and their units.

The vocabulary of the backend seam: a step with resources runs as a job, and a backend
says whether it can serve them (``Backend.check``). Sizes are bytes and durations seconds;
``parse_size`` and ``parse_duration`` read the strings a config writes (``16GiB``, ``2h``).
Every check of a resources value is made here, once: the compiler turns the ConfigError
into one line naming the step's key.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from confpipe.errors import ConfigError

_AMOUNTS = {  # field -> (what Resources takes, an example of a good value)
    "memory": ("bytes or a size such as '16GiB'", "512MiB, 16GiB"),
    "disk": ("bytes or a size such as '100GB'", "512MiB, 16GiB"),
    "timeout": ("seconds or a duration such as '2h'", "30m, 2h"),
}
_NAMES = (  # field -> what a name given there must be
    ("tpu", "a TPU type such as v5litepod-8"),
    ("machine_type", "a machine type such as n2-standard-8"),
)
_BINARY_UNITS = (("PiB", 2**50), ("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10))


@dataclass(frozen=True)
class GPU:
    """An accelerator request for a CPU/GPU job: type (e.g. ``nvidia-l4``) and count."""

    type: str
    count: int = 1

    def __post_init__(self) -> None:
        if not isinstance(self.type, str) or not self.type.strip():
            raise ConfigError(
                f"gpu.type: must be an accelerator type such as nvidia-l4, got {self.type!r}"
            )
        if isinstance(self.count, bool) or not isinstance(self.count, int) or self.count < 1:
            raise ConfigError(f"gpu.count: must be an integer >= 1, got {self.count!r}")


@dataclass(frozen=True)
class Resources:
    """What a step needs from the machine that runs it. Present => the step runs as a job.

    Sizes are bytes and durations seconds; a string is read as the YAML's is (``"16GiB"``,
    ``"2h"``) and stored converted. Not part of the step's identity. Every value is checked
    here, for the Python API and for configs alike (``from_config``); an error names the
    field as ``resources.KEY``.
    """

    cpu: float = 1.0
    memory: int | None = None
    disk: int | None = None
    gpu: GPU | None = None
    tpu: str | None = None
    spot: bool = False
    max_retries: int = 0
    timeout: float | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    secret_env: Mapping[str, str] = field(default_factory=dict)
    pip_extras: tuple[str, ...] = ()
    machine_type: str | None = None  # an explicit machine type (gcp), checked to fit

    def __post_init__(self) -> None:
        if not 0 < self.cpu < math.inf:  # also refuses nan
            raise ConfigError(f"resources.cpu: must be a positive number of CPUs, got {self.cpu!r}")
        for key in _AMOUNTS:
            value = getattr(self, key)
            if value is not None:
                object.__setattr__(self, key, _amount(key, value, plain=True))
        if self.max_retries < 0:
            raise ConfigError(
                f"resources.max_retries: must be an integer >= 0, got {self.max_retries!r}"
            )
        for key, what in _NAMES:
            text = getattr(self, key)
            if text is not None and not text.strip():
                raise ConfigError(f"resources.{key}: must be {what}, got {text!r}")
        _one_accelerator("resources", self.gpu, self.tpu)
        object.__setattr__(self, "pip_extras", tuple(self.pip_extras))

    @classmethod
    def from_config(cls, block: Mapping[str, Any], key: str = "resources") -> Resources:
        """A config's ``resources:`` block (keys and types already checked against the schema),
        whose errors name it as ``key`` (``steps.train.resources``): there a size must name
        its unit (``memory: 16`` is far more often 16GiB than 16 bytes) and ``gpu`` is a
        mapping."""
        values = dict(block)
        _one_accelerator(key, values.get("gpu"), values.get("tpu"))
        try:
            for name in ("memory", "disk"):
                if values.get(name) is not None:
                    values[name] = _amount(name, values[name], plain=False)
            gpu = values.get("gpu")
            if isinstance(gpu, Mapping):
                try:
                    values["gpu"] = GPU(**gpu)
                except ConfigError as err:
                    raise ConfigError(f"resources.{err}") from None
            return cls(**values)
        except ConfigError as err:  # every message starts with "resources"
            raise ConfigError(key + str(err).removeprefix("resources")) from None

    def describe(self) -> str:
        """A short human summary such as ``cpu=4 memory=16GiB gpu=nvidia-l4x1``."""
        parts = [] if self.tpu else [f"cpu={self.cpu:g}"]  # a TPU slice's hosts are fixed
        if self.memory:
            parts.append(f"memory={_size_text(self.memory)}")
        if self.gpu:
            parts.append(f"gpu={self.gpu.type}x{self.gpu.count}")
        if self.tpu:
            parts.append(f"tpu={self.tpu}")
        if self.spot:
            parts.append("spot")
        return " ".join(parts)


def _size_text(size: float) -> str:
    """``512MiB``, ``1.5GiB``, ``100B``: the largest binary unit it reaches, at most two
    decimals, never scientific notation."""
    for unit, factor in _BINARY_UNITS:
        if abs(size) >= factor:
            return f"{size / factor:.2f}".rstrip("0").rstrip(".") + unit
    return f"{size:.0f}B"


def _one_accelerator(key: str, gpu: object, tpu: object) -> None:
    """A job gets a GPU or a TPU, not both."""
    if gpu is not None and tpu is not None:
        raise ConfigError(f"{key}: set either gpu or tpu, not both (remove {key}.gpu or .tpu)")


def _amount(key: str, value: object, *, plain: bool) -> Any:
    """``resources.KEY``'s size (bytes) or duration (seconds), checked positive. A string is
    read in its units; a plain number is bytes or seconds where ``plain`` (the Python API),
    while a config's size must name its unit."""
    what, example = _AMOUNTS[key]
    if not isinstance(value, str | int | float) or isinstance(value, bool):
        raise ConfigError(f"resources.{key}: must be {what}, got {value!r:.60}")
    if plain and not isinstance(value, str):
        number: float = value
    else:
        try:
            number = (
                parse_duration(value) if key == "timeout" else parse_size(value, plain_bytes=False)
            )
        except ValueError as err:
            raise ConfigError(f"resources.{key}: {err}") from None
    if not number > 0:
        raise ConfigError(
            f"resources.{key}: must be positive, got {value!r:.60}; use e.g. {example}"
        )
    return number


_SIZE_UNITS = {"b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12, "pb": 10**15}
_SIZE_UNITS |= {"kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40, "pib": 2**50}
_SIZE = re.compile(r"\s*([+-]?(?:\d+\.?\d*|\.\d+)(?:e[+-]?\d+)?)\s*([a-z]*)\s*", re.IGNORECASE)
_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_DURATION_PART = re.compile(r"(\d+\.?\d*|\.\d+)\s*([smhd])", re.IGNORECASE)
_DURATION = re.compile(r"\s*(?:(?:\d+\.?\d*|\.\d+)\s*[smhd]\s*)+", re.IGNORECASE)


def parse_size(value: object, *, plain_bytes: bool = True) -> int:
    """Bytes in ``16GiB``, ``512MiB``, ``50GB`` (1000s), ``1.5KiB``, or a plain number of bytes.

    With ``plain_bytes=False`` a positive number without a unit is refused: ``memory: 16``
    means 16GiB far more often than 16 bytes, so a step's resources must say (``16B`` for
    bytes). Raises ValueError for anything else; the sign is kept (callers check positivity).
    """
    if isinstance(value, int | float) and not isinstance(value, bool):
        number, unit, unit_name = _finite(value), 1, ""
        text = str(value)
    else:
        match = _SIZE.fullmatch(value) if isinstance(value, str) else None
        unit_name = match.group(2).lower() if match else ""
        if match is None or (unit_name and unit_name not in _SIZE_UNITS):
            raise ValueError(f"{value!r:.60} is not a size; use e.g. 512MiB, 16GiB")
        number, unit = float(match.group(1)), _SIZE_UNITS.get(unit_name, 1)
        text = match.group(1)
    if not unit_name and not plain_bytes and number > 0:
        raise ValueError(
            f"{value!r:.60} has no unit; write e.g. {text:.30}GiB, {text:.30}MiB or {text:.30}B "
            "(bytes)"
        )
    size = number * unit
    if not math.isfinite(size) or size != int(size):
        raise ValueError(f"{value!r:.60} is not a whole number of bytes; use e.g. 512MiB, 16GiB")
    return int(size)


def parse_duration(value: object) -> float:
    """Seconds in ``2h``, ``1h30m``, ``90s``, ``1.5d``, or a plain number of seconds.

    Raises ValueError for anything else.
    """
    seconds: float | None = None
    if isinstance(value, int | float) and not isinstance(value, bool):
        seconds = _finite(value)
    elif isinstance(value, str):
        try:
            seconds = float(value)
        except ValueError:
            if _DURATION.fullmatch(value):
                parts = _DURATION_PART.findall(value)
                seconds = sum(float(n) * _DURATION_UNITS[u.lower()] for n, u in parts)
    if seconds is not None and math.isfinite(seconds):
        return seconds
    raise ValueError(f"{value!r:.60} is not a duration; use e.g. 90s, 30m, 2h, 1h30m")


def _finite(number: float) -> float:
    """``float(number)``, or NaN when it is too large for a float (parsers then refuse it)."""
    try:
        return float(number)
    except OverflowError:
        return math.nan
