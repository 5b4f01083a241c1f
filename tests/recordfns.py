"""Step functions for the tests of results and records: what they return, leave or fail with."""

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


def partial_then_fail(output_path: str, flag: str) -> str:
    """Writes a file named after its attempt; the first attempt fails after writing it."""
    first = not Path(flag).exists()
    Path(output_path).mkdir(parents=True, exist_ok=True)
    name = "first.part" if first else "second.part"
    Path(output_path, name).write_text("x")
    if first:
        Path(flag).write_text("failed once")
        raise RuntimeError("first attempt fails")
    return sorted(p.name for p in Path(output_path).iterdir())


def listing(output_path: str) -> list[str]:
    """What the folder holds when the step starts (its records aside)."""
    Path(output_path).mkdir(parents=True, exist_ok=True)
    return sorted(p.name for p in Path(output_path).iterdir() if p.name != ".confpipe")


def remote_listing(output_path: str, flag: str) -> list[str]:
    """``listing`` for any store: the names in the folder, then writes ``new.part``; the
    first attempt (no ``flag`` file yet) then fails."""
    from confpipe.storage import store_for

    fs = store_for(output_path).fs
    try:
        names = sorted(str(p).rstrip("/").rsplit("/", 1)[-1] for p in fs.ls(output_path))
    except FileNotFoundError:
        names = []
    fs.pipe_file(f"{output_path}/new.part", b"x")
    if not Path(flag).exists():
        Path(flag).write_text("failed once")
        raise RuntimeError("boom")
    return [n for n in names if n != ".confpipe"]


def fill_then_fail(output_path: str, flag: str) -> None:
    """Fills the disk under ``output_path``, then fails: its failure can't be recorded
    (only the first time: without the ``flag`` file, which it then writes)."""
    if Path(flag).exists():
        raise ValueError("the step's own error, again")
    Path(flag).write_text("filled once")
    Path(output_path).mkdir(parents=True, exist_ok=True)
    with open(Path(output_path, "filler"), "wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * 4096)
        except OSError:
            pass
    raise ValueError("the step's own error")


def chatty(output_path: str, lines: int) -> int:
    """Prints ``lines`` numbered lines."""
    for i in range(lines):
        print(f"line {i:06d}")
    return lines
