"""compose_once: a launch composes its config once, and gets the config Hydra's path gives."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # every test launches Hydra apps as subprocesses

APP = textwrap.dedent(
    """
    import os, sys
    import hydra
    from hydra._internal.config_loader_impl import ConfigLoaderImpl
    from omegaconf import OmegaConf

    from confpipe.config import compose as compose_once

    composes = []
    load = ConfigLoaderImpl.load_configuration

    def counted(self, *args, **kwargs):
        composes.append(kwargs.get("run_mode"))
        return load(self, *args, **kwargs)

    ConfigLoaderImpl.load_configuration = counted
    if os.environ.get("ONCE") == "1":
        compose_once.install(multirun="-m" in sys.argv)

    @hydra.main(config_path="conf", config_name="config", version_base=None)
    def app(cfg):
        from hydra.core.hydra_config import HydraConfig

        hydra_cfg = HydraConfig.get()
        print("MODE", hydra_cfg.mode, "OVERRIDES", list(hydra_cfg.overrides.hydra))
        print("CONFIG", OmegaConf.to_yaml(cfg, resolve=True).replace(chr(10), "|"))

    app()
    print("COMPOSES", len(composes))
    """
)


@pytest.fixture
def app(tmp_path: Path) -> Path:
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "config.yaml").write_text(
        "a: 1\nb: {c: hello, d: '${a}'}\nhydra:\n  run: {dir: .}\n  output_subdir: null\n"
        "  sweep: {dir: sweep}\n"
    )
    (tmp_path / "conf" / "multi.yaml").write_text(
        "defaults: [config, _self_]\nhydra:\n  mode: MULTIRUN\n  sweeper:\n    params: {a: '1,2'}\n"
    )
    (tmp_path / "app.py").write_text(APP)
    return tmp_path


def launch(app: Path, *args: str, once: bool) -> tuple[int, list[str]]:
    env = {"ONCE": "1" if once else "0", "HYDRA_FULL_ERROR": "1", "PATH": "/usr/bin:/bin"}
    done = subprocess.run(
        [sys.executable, "app.py", *args], cwd=app, env=env, capture_output=True, text=True
    )
    lines = [*done.stdout.splitlines(), done.stderr]
    return done.returncode, [line for line in lines if line and not line.startswith("[20")]


@pytest.mark.parametrize(
    "args",
    [
        pytest.param([], id="plain"),
        pytest.param(["a=5", "+e=new", "b.c=bye"], id="overrides"),
        pytest.param(["-m", "a=1,2"], id="multirun"),
        pytest.param(["--config-name", "multi"], id="config-asks-for-multirun"),
    ],
)
def test_same_config_as_hydra_path_composed_once_fewer(app: Path, args: list[str]) -> None:
    code, hydra_way = launch(app, *args, once=False)
    assert code == 0, hydra_way
    code, once = launch(app, *args, once=True)
    assert code == 0, once
    assert once[:-1] == hydra_way[:-1]  # same jobs, same configs, same hydra.mode and overrides
    composes = int(hydra_way[-1].split()[-1]), int(once[-1].split()[-1])
    if "multi" in args:  # the config, not the command line, asks for a sweep: Hydra's path
        assert composes[1] == composes[0]
    elif "-m" in args:  # each job's compose is the launcher's, not saved here
        assert composes[1] == composes[0] - 1
    else:
        assert composes == (2, 1)


@pytest.mark.parametrize(
    "args",
    [
        pytest.param(["nope=1"], id="unknown-key"),
        pytest.param(["a=1,2"], id="sweep-without-m"),
        pytest.param(["+x=[1"], id="bad-override"),
    ],
)
def test_errors_are_hydras(app: Path, args: list[str]) -> None:
    code, hydra_way = launch(app, *args, once=False)
    assert code != 0
    code_once, once = launch(app, *args, once=True)
    assert code_once == code
    error = [line for line in hydra_way[-1].splitlines() if "Error" in line or "Exception" in line]
    assert error and error[-1] in once[-1]
