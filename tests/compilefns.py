"""Step functions that the compiler tests point ``fn`` at (``tests.compilefns.NAME``)."""

from __future__ import annotations

from confpipe.jobs import remote
from confpipe.spec import Resources

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
