"""``backend=gcp``'s settings, declared once: the structured config Hydra checks the YAML and
the command line against, and the value ``BatchBackend``, ``TpuBackend`` and ``GcpBackend``
read.

``GcpConf`` is registered as the gcp backend's schema (``confpipe.config.schema``), so its
fields are the ``backend.*`` keys of ``conf/backend/gcp.yaml``; every value is checked here,
once, when an instance is made (``__post_init__``), with messages naming the key.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from omegaconf import MISSING

from confpipe.backends.gcp.job import LABEL, LABEL_VALUE
from confpipe.backends.resources import parse_duration
from confpipe.backends.settings import BackendConf, how_to_set, missing_setting
from confpipe.errors import ConfigError

__all__ = ["GcpConf"]


@dataclass
class GcpConf(BackendConf):
    """``backend=gcp``: Cloud Batch for CPU/GPU steps, Cloud TPU for TPU steps; the endpoints
    point at local emulators.

    ``cpu``/``memory`` (the local budget) must stay null: each step's resources size its VM.
    """

    kind: str = "gcp"
    project: str = field(
        default=MISSING,
        metadata=how_to_set("the Google Cloud project the jobs run in", "my-project"),
    )
    region: str = field(
        default="us-central1", metadata=how_to_set("the region the jobs run in", "us-central1")
    )
    image: str = field(  # the container image jobs run in (it has confpipe installed)
        default=MISSING,
        metadata=how_to_set(
            "the container image the jobs run in (confpipe installed)",
            "us-docker.pkg.dev/my-project/ml/confpipe:latest",
        ),
    )
    service_account: str | None = None
    network: str | None = None
    subnetwork: str | None = None
    labels: dict[str, str] = field(default_factory=dict)
    poll_interval: float = 10  # seconds between two ListJobs of this launch's jobs
    api_timeout: float = 600  # seconds an API outage is retried before a step fails
    stage_code: bool = True  # ship the git working tree to each job; false: the image's code
    batch_endpoint: str | None = None  # host:port of another Batch server (FakeBatch)
    tpu_zone: str | None = None  # TPU steps' zone; null: the region's first offering the type
    tpu_runtime_version: str | None = None  # TPU VM image; null: the generation's default
    tpu_endpoint: str | None = None  # host:port of another Cloud TPU server (FakeTpu)
    # how long every host of an ACTIVE slice has to start its worker (a duration: 10m, or
    # seconds); read as seconds when the settings are made
    tpu_start_timeout: Any = "10m"
    storage_endpoint: str | None = None  # URL of a Cloud Storage emulator (fake-gcs-server)

    def __post_init__(self) -> None:
        for key in ("cpu", "memory"):
            if getattr(self, key) is not None:
                raise ConfigError(
                    f"backend.{key}: only the local backend has a {key} budget; with "
                    f"backend=gcp each step's resources.{key} sizes its own machine, so drop "
                    f"backend.{key}"
                )
        for key in ("project", "region", "image"):
            value = getattr(self, key)
            if value is None or value == MISSING or not str(value).strip():
                raise ConfigError(missing_setting(GcpConf, key))
        for key in ("poll_interval", "api_timeout"):
            value = getattr(self, key)
            if not value > 0:
                raise ConfigError(
                    f"backend.{key}: must be a positive number of seconds, got {value!r}"
                )
        try:
            self.tpu_start_timeout = parse_duration(self.tpu_start_timeout)
        except ValueError as err:
            raise ConfigError(f"backend.tpu_start_timeout: {err}") from None
        if not self.tpu_start_timeout > 0:
            raise ConfigError(
                "backend.tpu_start_timeout: must be a positive duration such as 10m or 600 "
                f"(seconds), got {self.tpu_start_timeout:g}"
            )
        for key, value in self.labels.items():
            if not LABEL.fullmatch(key) or not LABEL_VALUE.fullmatch(value):
                raise ConfigError(
                    f"backend.labels: {key}={value!r} is not a valid label: keys start with a "
                    "lowercase letter; keys and values use lowercase letters, digits, '_' and "
                    "'-', at most 63 characters"
                )
            if key.startswith("confpipe-"):
                raise ConfigError(f"backend.labels: {key} is reserved for confpipe's own labels")

    @property
    def parent(self) -> str:
        """Where Batch jobs live: ``projects/{project}/locations/{region}``."""
        return f"projects/{self.project}/locations/{self.region}"

    def zone_parent(self, zone: str) -> str:
        """Where a TPU zone's queued resources live: ``projects/{project}/locations/{zone}``."""
        return f"projects/{self.project}/locations/{zone}"
