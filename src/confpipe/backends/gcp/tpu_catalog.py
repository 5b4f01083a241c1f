"""The Cloud TPU catalogue: which TPU a step's ``resources.tpu`` names, and where it is offered.

``parse(text)`` reads an accelerator type (``v5litepod-8``, ``v4-32``, ``v6e-16``) or a
generation with a topology (``v5p:4x4x4``, ``v6e:4x8``) into a ``Slice``: its generation,
chips, hosts (every host runs the step's function) and what the API takes; ``zone_for``
picks the zone (``backend.tpu_zone``, else the first zone of ``backend.region`` offering
it). Mistakes raise ``ConfigError`` naming the valid options.

Figures are Cloud TPU's published ones: the number in a v2/v3/v4/v5p type counts
TensorCores (two per chip), in a v5e/v6e type it counts chips. ``hosts`` is the number of
TPU VMs, each of which runs the startup script and must report to the driver (a count too
high makes the driver wait for hosts that don't exist, until ``backend.tpu_start_timeout``):

- v4 and v5p: 4 chips per VM, so chips / 4. The v5p table lists it per shape ("Hosts":
  2x2x1: 1, 2x2x2: 2, 2x4x4: 8, 4x4x4: 16, ..., 16x16x24: 1536),
  https://cloud.google.com/tpu/docs/v5p and https://cloud.google.com/tpu/docs/v5p-training;
  v4 slices (v4-8 = 2x2x1, 4 chips, one VM): https://cloud.google.com/tpu/docs/v4 and
  https://cloud.google.com/tpu/docs/types-topologies.
- v5e and v6e: slices of 1, 4 or 8 chips are one VM (ct5lp-hightpu-1t/4t/8t); larger ones
  are made of 4-chip VMs, so v5litepod-16 has 4 VMs and v5litepod-256 64,
  https://cloud.google.com/tpu/docs/v5e ("Each TPU VM in a v5e TPU slice contains 1, 4 or 8
  chips"); v6e likewise, https://cloud.google.com/tpu/docs/v6e. Note that the v5e page's
  shape table counts *physical 8-chip hosts* (4x4: 2, 16x16: 32; 1x1: 1/8), not VMs.
- v2 and v3: 4 chips (8 TensorCores) per VM, so v2-8 and v3-8 are one VM,
  https://cloud.google.com/tpu/docs/types-topologies.

``tests/test_tpu.py::test_hosts_per_slice_match_the_published_tables`` pins these rows.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from confpipe.errors import ConfigError, did_you_mean

__all__ = ["GENERATIONS", "Generation", "Slice", "parse", "zone_for"]


@dataclass(frozen=True)
class Generation:
    """A TPU generation: its type prefix, sizes, zones and the runtime its VMs boot by default.

    ``sizes`` are the numbers a type name may carry; ``zones`` offer every size, unless
    ``zones_by_size`` says otherwise for a size. ``topologies`` are the shapes an
    ``AcceleratorConfig`` takes (3D for v4/v5p, 2D for v5e/v6e; none for v2/v3).
    """

    prefix: str
    name: str
    sizes: tuple[int, ...]
    cores_per_chip: int  # what one unit of the type's number is: 1 => the number counts chips
    zones: tuple[str, ...]
    runtime_version: str
    config_type: str | None = None  # AcceleratorConfig.Type name, if topologies are accepted
    topologies: tuple[str, ...] = ()
    max_chips: int = 0  # the largest topology (v4/v5p: larger AxBxC shapes, multiples of 4)
    zones_by_size: Mapping[int, tuple[str, ...]] = field(default_factory=dict)

    def zones_of(self, size: int) -> tuple[str, ...]:
        return self.zones_by_size.get(size, self.zones)

    def hosts(self, chips: int) -> int:
        """TPU VMs of a slice with ``chips``: 4 chips per VM; a v5e/v6e slice of up to 8
        chips is one VM (see the module docstring for the sources)."""
        if self.cores_per_chip == 1 and chips <= 8:
            return 1
        return max(1, chips // 4)


_V5P_SIZES = (8, 16, 32, 64, *range(128, 12288 + 1, 128))
_2D = ("1x1", "2x2", "2x4", "4x4", "4x8", "8x8", "8x16", "16x16")
_3D = ("2x2x1", "2x2x2", "2x2x4", "2x4x4", "4x4x4", "4x4x8", "4x8x8", "8x8x8")

GENERATIONS: dict[str, Generation] = {
    g.prefix: g
    for g in (
        Generation(
            "v2", "TPU v2", (8, 32, 128, 256, 512), 2,
            ("us-central1-a", "europe-west4-a"), "tpu-ubuntu2204-base",
            zones_by_size={8: ("us-central1-b", "us-central1-c", "europe-west4-a", "asia-east1-c")},
        ),
        Generation(
            "v3", "TPU v3", (8, 32, 64, 128, 256, 512, 1024, 2048), 2,
            ("europe-west4-a",), "tpu-ubuntu2204-base",
            zones_by_size={8: ("us-central1-a", "us-central1-b", "europe-west4-a")},
        ),
        Generation(
            "v4", "TPU v4", (8, 16, 32, 64, 128, 256, 512, 1024, 1536, 2048, 4096), 2,
            ("us-central2-b",), "tpu-ubuntu2204-base", "V4", _3D, 2048,
        ),
        Generation(
            "v5litepod", "TPU v5e", (1, 4, 8, 16, 32, 64, 128, 256), 1,
            ("us-central1-a", "us-south1-a", "us-west1-c", "us-west4-a", "europe-west4-b",
             "asia-southeast1-b"),
            "v2-alpha-tpuv5-lite", "V5LITE_POD", _2D, 256,
        ),
        Generation(
            "v5p", "TPU v5p", _V5P_SIZES, 2, ("us-central1-a", "us-east5-a", "europe-west4-b"),
            "v2-alpha-tpuv5", "V5P", _3D, 6144,
        ),
        Generation(
            "v6e", "TPU v6e (Trillium)", (1, 4, 8, 16, 32, 64, 128, 256), 1,
            ("us-central1-b", "us-east1-d", "us-east5-a", "us-east5-b", "europe-west4-a",
             "asia-northeast1-b", "southamerica-west1-a"),
            "v2-alpha-tpuv6e", "V6E", _2D, 256,
        ),
    )
}  # fmt: skip
_ALIASES = {"v5e": "v5litepod", "v5lite": "v5litepod"}
_TYPE = re.compile(r"(v[0-9a-z]+)-([0-9]+)")
_TOPOLOGY = re.compile(r"(v[0-9a-z]+):([0-9]+(?:x[0-9]+){1,2})")


@dataclass(frozen=True)
class Slice:
    """One TPU slice: what the step asked for and what the API is sent.

    ``accelerator_type`` is set for a type name (``v4-32``); ``topology`` (with
    ``generation.config_type``) for a ``generation:topology`` request.
    """

    text: str
    generation: Generation
    chips: int
    hosts: int
    accelerator_type: str | None = None
    topology: str | None = None

    @property
    def size(self) -> int:
        return self.chips * self.generation.cores_per_chip

    def describe(self) -> str:
        hosts = "1 host" if self.hosts == 1 else f"{self.hosts} hosts"
        return f"{self.text} ({self.generation.name}, {self.chips} chips, {hosts})"


def parse(text: str) -> Slice:
    """The slice ``text`` names; ConfigError (naming the valid options) if there is none."""
    text = text.strip()
    if (found := _TOPOLOGY.fullmatch(text)) is not None:
        return _topology(text, _generation(found.group(1), text), found.group(2))
    found = _TYPE.fullmatch(text)
    if found is None:
        raise ConfigError(
            f"resources.tpu={text}: not a TPU type; use an accelerator type such as "
            "v5litepod-8, v4-32 or v6e-16, or a generation and topology such as v5p:2x2x4"
        )
    gen, size = _generation(found.group(1), text), int(found.group(2))
    if size not in gen.sizes:
        raise ConfigError(
            f"resources.tpu={text}: {gen.name} comes in {_sizes(gen)} "
            f"({'chips' if gen.cores_per_chip == 1 else 'TensorCores'}), e.g. "
            f"{gen.prefix}-{_nearest(size, gen.sizes)}"
        )
    chips = max(1, size // gen.cores_per_chip)
    return Slice(text, gen, chips, gen.hosts(chips), accelerator_type=f"{gen.prefix}-{size}")


def zone_for(tpu: Slice, zone: str | None, region: str) -> str:
    """The zone the slice runs in: ``zone`` if it offers the type, else the region's first."""
    offered = tpu.generation.zones_of(tpu.size)
    if zone:
        if zone not in offered:
            raise ConfigError(
                f"resources.tpu={tpu.text}: zone {zone} (backend.tpu_zone) doesn't offer "
                f"{_kind(tpu)}; zones that do: {', '.join(offered)}"
            )
        return zone
    in_region = [z for z in offered if z.rsplit("-", 1)[0] == region]
    if not in_region:
        raise ConfigError(
            f"resources.tpu={tpu.text}: no zone of backend.region={region} offers "
            f"{_kind(tpu)}; zones that do: {', '.join(offered)}; set backend.tpu_zone to one "
            "of them"
        )
    return in_region[0]


def _generation(prefix: str, text: str) -> Generation:
    gen = GENERATIONS.get(_ALIASES.get(prefix, prefix))
    if gen is None:
        raise ConfigError(
            f"resources.tpu={text}: unknown TPU generation {prefix!r}"
            f"{did_you_mean(prefix, GENERATIONS)}; generations: {', '.join(GENERATIONS)}"
        )
    return gen


def _topology(text: str, gen: Generation, shape: str) -> Slice:
    dims = [int(d) for d in shape.split("x")]
    chips = math.prod(dims)
    rank = len(gen.topologies[0].split("x")) if gen.topologies else 0
    big = rank == 3 and all(d % 4 == 0 for d in dims) and chips <= gen.max_chips
    if gen.config_type is None or len(dims) != rank or (shape not in gen.topologies and not big):
        if gen.config_type is None:
            valid = f"{gen.name} takes no topology; use a type: {_sizes(gen, gen.prefix + '-')}"
        else:
            more = " or larger AxBxC shapes in multiples of 4" if rank == 3 else ""
            valid = f"{gen.name} topologies: {', '.join(gen.topologies)}{more}"
        raise ConfigError(f"resources.tpu={text}: unknown topology {shape!r}; {valid}")
    return Slice(text, gen, chips, gen.hosts(chips), topology=shape)


def _kind(tpu: Slice) -> str:
    if tpu.accelerator_type and tpu.generation.zones_by_size:
        return tpu.accelerator_type
    return tpu.generation.name


def _sizes(gen: Generation, prefix: str = "") -> str:
    sizes = [f"{prefix}{s}" for s in gen.sizes]
    return ", ".join(sizes if len(sizes) <= 12 else [*sizes[:6], "...", sizes[-1]])


def _nearest(size: int, sizes: Iterable[int]) -> int:
    return min(sizes, key=lambda s: (abs(s - size), s))
