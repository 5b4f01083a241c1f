"""Step functions with float annotations, for the tests of config coercion (``1`` -> ``1.0``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Optional


def scaled(
    output_path: str,
    scale: float = 1.0,
    weights: list[float] | None = None,
    by_name: dict[str, float] | None = None,
    maybe: Optional[float] = None,  # noqa: UP045 (the old spelling is coerced too)
    pair: tuple[float, int] = (0.0, 0),
    nested: Mapping[str, Sequence[float]] | None = None,
    count: int = 0,
    flag: bool = False,
    either: int | float = 0,
    anything: object = None,
) -> float:
    return scale


def untyped(output_path, scale=1.0):  # type: ignore[no-untyped-def]
    return scale
