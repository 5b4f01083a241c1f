"""Step functions that the compiler tests point ``fn`` at (``tests.compilefns.NAME``)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from confpipe.backends.resources import Resources
from confpipe.engine.remote import remote

if TYPE_CHECKING:
    from decimal import Decimal

NOT_A_FUNCTION = 42


def download(output_path: str, url: str = "https://example.com/data") -> str:
    return url


def tokenize(output_path: str, corpus: str, vocab: int = 100) -> str:
    return corpus


def merge(
    output_path: str, inputs: list[str], both: str = "", extra: dict[str, str] | None = None
) -> None:
    return None


def anything(output_path: str, **config: object) -> None:
    return None


def add(output_path: str, a: int, b: int) -> int:
    return a + b


def no_output(a: int) -> int:
    return a


def positional(data: str, /, output_path: str) -> None:
    return None


@remote(resources=Resources(cpu=10_000))
def huge(output_path: str) -> None:
    return None


class Trainer:
    @staticmethod
    def train(output_path: str, lr: float) -> float:
        return lr


def typed(
    output_path: str,
    lr: float = 0.1,
    steps: int = 1,
    name: str = "",
    flag: bool = False,
    limit: int | None = None,
    ratio: Optional[float] = None,  # noqa: UP045 (the old spelling is checked too)
    legacy: int = None,  # noqa: RUF013 (a None default admits null)
    items: list[int] | None = None,
    anything: Any = None,
    where: Path | None = None,
    either: int | str = 0,
    untyped=None,
) -> None:
    return None


def unresolvable(output_path: str, n: int, d: Decimal | None = None) -> None:
    """``Decimal`` is imported for type checkers only: no annotation of it can be checked."""
    return None
