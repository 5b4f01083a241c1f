"""A YAML bomb (nested aliases, "billion laughs") is refused while loading, in one line naming
the file; Ctrl-C and SIGTERM stop a launch while Hydra composes."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from confpipe import ConfigError
from confpipe.config import yamlload
from tests.test_cli import ROOT


def bomb(levels: int) -> str:
    """10**levels leaves from ``levels`` nested lists of ten aliases each."""
    lines = ["# @package _global_", "lol0: &a0 [" + ", ".join(["lol"] * 10) + "]"]
    lines += [f"lol{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, levels)]
    return "\n".join([*lines, "steps: {}", ""])


@pytest.fixture(autouse=True)
def bounded() -> None:
    yamlload.install()  # what the CLI does before Hydra reads a file


@pytest.mark.parametrize(("levels", "added"), [(9, "1,234,567,880"), (5, "123,440")])
def test_a_billion_laughs_file_is_refused_at_once(tmp_path: Path, levels: int, added: str) -> None:
    path = tmp_path / "bomb.yaml"
    path.write_text(bomb(levels))
    start = time.monotonic()
    with pytest.raises(ConfigError) as info:
        OmegaConf.load(path)
    assert time.monotonic() - start < 2
    assert str(info.value) == (
        f"{path}: its YAML aliases expand to {added} more nodes, past the 10,000 allowed; "
        "write the values out or nest fewer aliases"
    )


def test_aliases_and_merge_keys_within_the_bound_load_as_before(tmp_path: Path) -> None:
    path = tmp_path / "ok.yaml"
    path.write_text(
        "base: &base {lr: 0.1, steps: 10}\n"
        "a: {<<: *base, lr: 0.2}\n"
        "b: *base\n"
        "big: &big [" + ", ".join(map(str, range(5000))) + "]\n"
        "again: *big\n"
    )
    cfg = OmegaConf.load(path)
    assert cfg.a == {"lr": 0.2, "steps": 10} and cfg.b == {"lr": 0.1, "steps": 10}
    assert len(cfg.again) == 5000


def test_an_alias_that_contains_itself_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "loop.yaml"
    path.write_text("a: &loop [1, *loop]\n")
    with pytest.raises(
        ConfigError, match=r"loop.yaml: a YAML alias contains itself; remove the loop$"
    ):
        OmegaConf.load(path)


def test_a_yaml_string_is_bounded_too() -> None:
    with pytest.raises(ConfigError, match="<unicode string>: its YAML aliases expand to"):
        OmegaConf.create(bomb(6))


@pytest.mark.slow
def test_the_cli_refuses_a_bomb_in_one_line(tmp_path: Path) -> None:
    from tests.test_cli import cli

    experiment = tmp_path / "confs" / "experiment"
    experiment.mkdir(parents=True)
    (experiment / "bomb.yaml").write_text(bomb(9))
    start = time.monotonic()
    out = cli("--config-dir", "confs", "+experiment=bomb", cwd=tmp_path, timeout=60)
    assert time.monotonic() - start < 10
    assert out.returncode == 2, out.stderr
    (line,) = out.stderr.splitlines()
    assert f"{experiment / 'bomb.yaml'}: its YAML aliases expand to 1,234,567,880 more" in line


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_stops_a_long_composition(tmp_path: Path, signum: int) -> None:
    """10^5 plain leaves take Hydra and OmegaConf many seconds to compose (no alias: allowed)."""
    experiment = tmp_path / "confs" / "experiment"
    experiment.mkdir(parents=True)
    rows = [f"  k{i}: [{', '.join(map(str, range(100)))}]" for i in range(1000)]
    (experiment / "big.yaml").write_text("\n".join(["# @package _global_", "big:", *rows, ""]))
    process = subprocess.Popen(
        [sys.executable, "-m", "confpipe", "--config-dir", "confs", "+experiment=big"],
        cwd=tmp_path, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        time.sleep(2.0)  # well into the composition (it takes 10-20 s)
        assert process.poll() is None, process.communicate()[1]
        process.send_signal(signum)
        start = time.monotonic()
        _, err = process.communicate(timeout=10)
    finally:
        process.kill()
    assert time.monotonic() - start < 3
    code, name = (143, "SIGTERM") if signum == signal.SIGTERM else (130, "Ctrl-C")
    assert process.returncode == code, err
    assert err.strip().splitlines()[-1] == f"confpipe: interrupted ({name})"
