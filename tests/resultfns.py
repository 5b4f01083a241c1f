"""Step and job functions returning what a result record must convert, or refuse."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np


@dataclasses.dataclass
class Stats:
    mean: float
    where: Path


class Tensor:  # stands for torch.Tensor: a value no result record can hold
    pass


def numpy_mean(output_path: str) -> dict[str, object]:
    a = np.arange(10, dtype=np.int64)
    return {"mean": a.mean(), "total": a.sum(), "ok": np.bool_(True), "head": a[:3]}


def mixed(output_path: str) -> dict[str, object]:
    return {
        "pair": (1, np.float32(0.5)),
        "stats": Stats(float("nan"), Path(output_path) / "model.bin"),
        "bounds": [float("-inf"), float("inf")],
    }


def tensor_after_work(output_path: str) -> dict[str, object]:
    Path(output_path).mkdir(parents=True, exist_ok=True)
    Path(output_path, "weights.bin").write_bytes(b"expensive")
    return {"stats": [1, 2, Tensor()]}


def huge(output_path: str) -> str:
    return "x" * (11 * 1024 * 1024)


def big_bytes(output_path: str, mib: int = 4) -> str:
    return "y" * (mib * 1024 * 1024)
