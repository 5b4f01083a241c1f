"""``--cfg job --resolve`` shows each ``${step:NAME}`` as NAME's output path, never the
internal marker a run resolves it to."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from omegaconf import OmegaConf

from confpipe.config.compiler import compile_steps, output_paths
from confpipe.config.refs import showing_paths


def config(prefix: Path, fn: str = "tests.stepfns.add") -> Any:
    return OmegaConf.create({
        "prefix": str(prefix),
        "steps": {
            "a": {"fn": fn, "config": {"a": 1, "b": 2}},
            "b": {"fn": "tests.stepfns.noop", "config": {"up": "${step:a}", "x": "${step:a}/x"}},
        },
    })  # fmt: skip


def test_a_shown_config_resolves_references_to_output_paths(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    a = compile_steps(config(tmp_path))[0]
    with showing_paths(output_paths):
        OmegaConf.resolve(cfg)
    assert cfg.steps.b.config.up == f"{tmp_path}/{a.identity}"
    assert cfg.steps.b.config.x == f"{tmp_path}/{a.identity}/x"


def test_a_config_that_does_not_compile_shows_its_references_as_written(tmp_path: Path) -> None:
    cfg = config(tmp_path, fn="tests.stepfns.no_such_function")
    with showing_paths(output_paths):
        OmegaConf.resolve(cfg)
    shown = OmegaConf.to_container(cfg.steps.b.config)  # as --cfg prints it: not resolved again
    assert shown == {"up": "${step:a}", "x": "${step:a}/x"}


def test_outside_a_shown_config_a_reference_is_still_a_marker(tmp_path: Path) -> None:
    assert config(tmp_path).steps.b.config.up == "\0confpipe-step:a\0"


@pytest.mark.slow
def test_the_cli_shows_the_output_path_not_the_marker(tmp_path: Path) -> None:
    from tests.test_cli import cli

    out = cli("+experiment=tokenize", "--cfg", "job", "--resolve", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "confpipe-step" not in out.stdout and "\\0" not in out.stdout
    assert f"corpus: {tmp_path}/outputs/download-53aef6fe237b\n" in out.stdout
    assert (
        f"tokenizer: {tmp_path}/outputs/train_tokenizer-1026ad38daa5/tokenizer.json\n" in out.stdout
    )
    assert not (tmp_path / "outputs").exists()
