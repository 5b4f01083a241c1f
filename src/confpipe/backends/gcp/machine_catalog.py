"""The Compute Engine machine catalogue: which machine type serves a step's resources.

``choose(resources)`` picks the smallest machine that fits cpu and memory (fewest vCPUs,
then least memory, then the cheaper family), or checks an explicit ``machine_type``; GPUs
restrict the choice to their compatible family (L4 on g2, A100 on a2, H100 on a3, T4/V100/P4
attached to n1 within the per-count vCPU/memory limits). ``check_region(gpu, region)``
refuses a GPU type that no zone of the region offers (``GPU_REGIONS``), naming the regions
that have it and the GPU types the region has. Mistakes raise ``ConfigError`` naming the
valid options. Figures are Compute Engine's published ones (its "GB" is GiB): machine
families at https://cloud.google.com/compute/docs/gpus and
https://cloud.google.com/compute/docs/accelerator-optimized-machines, regions at
https://cloud.google.com/compute/docs/gpus/gpu-regions-zones (a region is listed when at
least one of its zones offers the type; the list grows, so a region missing here is a
refusal to update, not a fact: ``gcloud compute accelerator-types list --filter=zone:REGION``
says what a region has today).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from confpipe.backends.resources import GPU, Resources
from confpipe.errors import ConfigError

GiB = 2**30


@dataclass(frozen=True)
class Machine:
    """A machine type: vCPUs, memory in GiB and, for accelerator-optimized ones, its GPUs."""

    name: str
    cpus: int
    memory_gib: float
    gpus: int = 0
    spot_only: bool = False  # a3-highgpu-1g/2g/4g: Spot (or flex-start) capacity only

    def describe(self) -> str:
        return f"{self.name} ({self.cpus} vCPU, {self.memory_gib:g}GiB)"


@dataclass(frozen=True)
class GpuKind:
    """A GPU type and the machines that carry it.

    ``attached`` kinds come built into their machine type (one count per type); the others
    are attached to an n1 machine, within ``limits``: count -> (max vCPUs, max GiB).
    """

    type: str
    machines: tuple[Machine, ...]
    attached: bool
    limits: Mapping[int, tuple[int, float]] | None = None

    @property
    def counts(self) -> tuple[int, ...]:
        if self.limits is not None:
            return tuple(sorted(self.limits))
        return tuple(sorted({m.gpus for m in self.machines}))

    @property
    def family(self) -> str:
        return "n1-*" if not self.attached else f"{self.machines[0].name.rsplit('-', 1)[0]}-*"


@dataclass(frozen=True)
class Choice:
    """The machine for a step and the accelerators to request on it."""

    machine: Machine
    gpu: GPU | None = None


def _series(prefix: str, sizes: Iterable[int], gib_per_cpu: float, **odd: float) -> list[Machine]:
    return [Machine(f"{prefix}-{n}", n, odd.get(f"m{n}", n * gib_per_cpu)) for n in sizes]


_N2_SIZES = (2, 4, 8, 16, 32, 48, 64, 80, 96, 128)

# general-purpose and compute-optimized, cheapest family first (the tie-break)
CPU_MACHINES: tuple[Machine, ...] = (
    *_series("e2-standard", (2, 4, 8, 16, 32), 4),
    *_series("e2-highmem", (2, 4, 8, 16), 8),
    *_series("n2d-standard", (*_N2_SIZES, 224), 4),
    *_series("n2-standard", _N2_SIZES, 4),
    *_series("n2d-highmem", (2, 4, 8, 16, 32, 48, 64, 80, 96), 8),
    *_series("n2-highmem", _N2_SIZES, 8, m128=864),
    *_series("c2-standard", (4, 8, 16, 30, 60), 4),
)
N1_MACHINES: tuple[Machine, ...] = (
    *_series("n1-standard", (1, 2, 4, 8, 16, 32, 64, 96), 3.75),
    *_series("n1-highmem", (2, 4, 8, 16, 32, 64, 96), 6.5),
    *_series("n1-highcpu", (2, 4, 8, 16, 32, 64, 96), 0.9),
)


def _a(prefix: str, rows: Iterable[tuple[int, int, float]], spot_only: int = 0) -> list[Machine]:
    return [Machine(f"{prefix}-{g}g", c, m, g, g <= spot_only) for g, c, m in rows]


GPUS: dict[str, GpuKind] = {
    kind.type: kind
    for kind in (
        GpuKind(
            "nvidia-l4",
            tuple(
                Machine(f"g2-standard-{c}", c, 4.0 * c, g)
                for c, g in ((4, 1), (8, 1), (12, 1), (16, 1), (32, 1), (24, 2), (48, 4), (96, 8))
            ),
            attached=True,
        ),
        GpuKind("nvidia-tesla-t4", N1_MACHINES, False, {1: (48, 312), 2: (48, 312), 4: (96, 624)}),
        GpuKind(
            "nvidia-tesla-v100",
            N1_MACHINES,
            False,
            {1: (12, 78), 2: (24, 156), 4: (48, 312), 8: (96, 624)},
        ),
        GpuKind("nvidia-tesla-p4", N1_MACHINES, False, {1: (24, 156), 2: (48, 312), 4: (96, 624)}),
        GpuKind(
            "nvidia-tesla-a100",
            (
                *_a("a2-highgpu", ((1, 12, 85), (2, 24, 170), (4, 48, 340), (8, 96, 680))),
                Machine("a2-megagpu-16g", 96, 1360, 16),
            ),
            attached=True,
        ),
        GpuKind(
            "nvidia-a100-80gb",
            tuple(_a("a2-ultragpu", ((1, 12, 170), (2, 24, 340), (4, 48, 680), (8, 96, 1360)))),
            attached=True,
        ),
        GpuKind(
            "nvidia-h100-80gb",
            tuple(
                _a(
                    "a3-highgpu",
                    ((1, 26, 234), (2, 52, 468), (4, 104, 936), (8, 208, 1872)),
                    spot_only=4,
                )
            ),
            attached=True,
        ),
    )
}

ALL_MACHINES: dict[str, Machine] = {
    m.name: m
    for m in (
        *CPU_MACHINES,
        *N1_MACHINES,
        *(m for k in GPUS.values() if k.attached for m in k.machines),
    )
}


_US = ("us-central1", "us-east1", "us-east4", "us-west1", "us-west4")
GPU_REGIONS: dict[str, tuple[str, ...]] = {  # the regions with a zone offering each type
    "nvidia-l4": (
        *_US, "northamerica-northeast2", "europe-west1", "europe-west2", "europe-west3",
        "europe-west4", "europe-west6", "asia-east1", "asia-northeast1", "asia-northeast3",
        "asia-south1", "asia-southeast1",
    ),
    "nvidia-tesla-t4": (
        *_US, "us-west2", "us-west3", "northamerica-northeast1", "southamerica-east1",
        "europe-central2", "europe-west1", "europe-west2", "europe-west3", "europe-west4",
        "asia-east1", "asia-east2", "asia-northeast1", "asia-northeast3", "asia-south1",
        "asia-southeast1", "asia-southeast2", "australia-southeast1", "me-west1",
    ),
    "nvidia-tesla-v100": ("us-central1", "us-east1", "us-west1", "europe-west4", "asia-east1"),
    "nvidia-tesla-p4": (
        "us-central1", "us-east4", "us-west2", "northamerica-northeast1", "europe-west4",
        "asia-southeast1", "australia-southeast1",
    ),
    "nvidia-tesla-a100": (
        "us-central1", "us-east1", "us-west1", "us-west3", "us-west4", "europe-west4",
        "asia-northeast1", "asia-northeast3", "asia-southeast1", "me-west1",
    ),
    "nvidia-a100-80gb": ("us-central1", "us-east4", "us-east5", "europe-west4", "asia-southeast1"),
    "nvidia-h100-80gb": (
        "us-central1", "us-east4", "us-east5", "us-west1", "us-west4", "us-south1",
        "europe-west1", "europe-west4", "asia-northeast1", "asia-southeast1",
    ),
}  # fmt: skip


def check_region(gpu: GPU, region: str) -> None:
    """ConfigError unless some zone of ``region`` offers ``gpu.type`` (a known type)."""
    regions = GPU_REGIONS.get(gpu.type, ())
    if region in regions:
        return
    here = [t for t, where in GPU_REGIONS.items() if region in where]
    offered = f"GPU types in {region}: {', '.join(here)}" if here else f"{region} has no GPUs"
    raise ConfigError(
        f"resources.gpu.type={gpu.type}: no zone of backend.region={region} offers it; "
        f"regions that do: {', '.join(regions)}; {offered}"
    )


def choose(resources: Resources) -> Choice:
    """The machine (and accelerators) for ``resources``; ConfigError says what would fit."""
    gpu = resources.gpu
    kind = _gpu_kind(gpu) if gpu is not None else None
    if resources.machine_type is not None:
        return _check_explicit(resources, kind)
    if gpu is None or kind is None:
        fitting = [m for m in CPU_MACHINES if _fits(m, resources)]
        if not fitting:
            largest = ", ".join(m.describe() for m in _largest_per_family(CPU_MACHINES))
            raise ConfigError(f"{_ask(resources)}: no machine has that much; largest: {largest}")
        return Choice(min(fitting, key=_size), None)
    candidates = _gpu_machines(kind, gpu.count, resources.spot)
    fitting = [m for m in candidates if _fits(m, resources)]
    # n1-highcpu (0.9GiB per vCPU) starves a GPU job: chosen only when named explicitly
    fitting = [m for m in fitting if "highcpu" not in m.name] or fitting
    if not fitting and kind.limits is not None:
        limits = "; ".join(f"{n} GPU(s): {c} vCPU/{g:g}GiB" for n, (c, g) in kind.limits.items())
        raise ConfigError(
            f"{_ask(resources)}: no n1-* machine with {gpu.count} {kind.type} has that much; "
            f"n1 machines with {kind.type} have at most {limits}"
        )
    if not fitting:
        options = ", ".join(m.describe() for m in candidates)
        raise ConfigError(
            f"{_ask(resources)}: no {kind.family} machine with {gpu.count} {kind.type} has that "
            f"much; machines for {gpu.count} {kind.type}: {options}"
        )
    return Choice(min(fitting, key=_size), gpu)


def _gpu_kind(gpu: GPU) -> GpuKind:
    kind = GPUS.get(gpu.type)
    if kind is None:
        close = difflib.get_close_matches(gpu.type, GPUS, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(
            f"resources.gpu.type: unknown GPU {gpu.type!r}{hint}; Cloud Batch GPUs: "
            f"{', '.join(GPUS)}"
        )
    if gpu.count not in kind.counts:
        raise ConfigError(
            f"resources.gpu.count={gpu.count}: {kind.type} comes {_or(kind.counts)} per "
            f"machine ({kind.family})"
        )
    return kind


def _gpu_machines(kind: GpuKind, count: int, spot: bool) -> list[Machine]:
    """The machines that can carry ``count`` GPUs of ``kind`` (n1: within the count's limits)."""
    if kind.attached:
        machines = [m for m in kind.machines if m.gpus == count]
        if not spot and all(m.spot_only for m in machines):
            raise ConfigError(
                f"resources.gpu: {count} {kind.type} ({machines[0].name}) is only offered as "
                "Spot capacity: set resources.spot=true, or ask for "
                f"{_or([c for c in kind.counts if not _spot_only(kind, c)])} GPUs"
            )
        return machines
    assert kind.limits is not None
    max_cpus, max_gib = kind.limits[count]
    return [m for m in kind.machines if m.cpus <= max_cpus and m.memory_gib <= max_gib]


def _spot_only(kind: GpuKind, count: int) -> bool:
    return all(m.spot_only for m in kind.machines if m.gpus == count)


def _check_explicit(resources: Resources, kind: GpuKind | None) -> Choice:
    name = resources.machine_type or ""
    machine = ALL_MACHINES.get(name)
    if machine is None:
        close = difflib.get_close_matches(name, ALL_MACHINES, n=3)
        hint = f" (did you mean {_or(close)}?)" if close else ""
        families = sorted({m.name.rsplit("-", 1)[0] for m in ALL_MACHINES.values()})
        raise ConfigError(
            f"resources.machine_type: unknown machine type {name!r}{hint}; known families: "
            f"{', '.join(f + '-*' for f in families)}"
        )
    gpu = resources.gpu
    if kind is None and machine.gpus:
        carried = next(k.type for k in GPUS.values() if k.attached and machine in k.machines)
        raise ConfigError(
            f"resources.machine_type={name} carries {machine.gpus} {carried} GPU(s): set "
            f"resources.gpu: {{type: {carried}, count: {machine.gpus}}} or pick a CPU machine"
        )
    if kind is not None and gpu is not None:
        candidates = _gpu_machines(kind, gpu.count, resources.spot)
        if machine not in candidates:
            raise ConfigError(
                f"resources.machine_type={name} can't carry {gpu.count} {kind.type}; machines "
                f"that can: {', '.join(m.name for m in candidates)}"
            )
    else:
        candidates = list(CPU_MACHINES)
    if not _fits(machine, resources):
        fitting = sorted((m for m in candidates if _fits(m, resources)), key=_size)[:5]
        which = ", ".join(m.describe() for m in fitting) or "none"
        raise ConfigError(
            f"{_ask(resources)} doesn't fit resources.machine_type={machine.describe()}; "
            f"machines that fit: {which}"
        )
    return Choice(machine, gpu if kind is not None else None)


def _fits(machine: Machine, resources: Resources) -> bool:
    memory = resources.memory or 0
    return machine.cpus >= resources.cpu and machine.memory_gib * GiB >= memory


def _size(machine: Machine) -> tuple[int, float, int]:
    return machine.cpus, machine.memory_gib, _FAMILY_RANK.get(machine.name.rsplit("-", 1)[0], 99)


_FAMILY_RANK = {
    name: rank
    for rank, name in enumerate(dict.fromkeys(m.name.rsplit("-", 1)[0] for m in CPU_MACHINES))
}


def _largest_per_family(machines: Iterable[Machine]) -> list[Machine]:
    largest: dict[str, Machine] = {}
    for m in machines:
        family = m.name.rsplit("-", 1)[0]
        if family not in largest or _size(m) > _size(largest[family]):
            largest[family] = m
    return list(largest.values())


def _ask(resources: Resources) -> str:
    parts = [f"resources.cpu={resources.cpu:g}"]
    if resources.memory:
        parts.append(f"memory={resources.memory / GiB:g}GiB")
    return " ".join(parts)


def _or(values: Iterable[object]) -> str:
    items = [str(v) for v in values]
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} or {items[-1]}"
