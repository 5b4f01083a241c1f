"""composecache: a re-run takes its composed config from the cache, the very config Hydra
composes; any change to what the compose reads composes anew."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # every test launches Hydra apps as subprocesses

ROOT = Path(__file__).resolve().parents[1]

APP = textwrap.dedent(
    """
    import os, sys
    from dataclasses import dataclass
    import hydra
    from hydra.core.config_store import ConfigStore
    from hydra._internal.config_loader_impl import ConfigLoaderImpl
    from omegaconf import OmegaConf

    from confpipe.config import compose as compose_once, composecache

    faked = os.environ.get("FAKE_VERSION_OF")
    if faked == "python":
        sys.version = "3.99.0 (faked)"
    elif faked:
        __import__(faked).__version__ = "99.0"
    if os.environ.get("CODE_DIR"):
        from pathlib import Path
        composecache._CONFIG_CODE = Path(os.environ["CODE_DIR"])

    @dataclass
    class Stored:
        value: str = os.environ.get("STORED", "one")

    ConfigStore.instance().store(group="stored", name="base", node=Stored)

    composes = []  # Hydra's composes: none when the cache served the launch
    _load = ConfigLoaderImpl.load_configuration
    ConfigLoaderImpl.load_configuration = lambda s, *a, **k: composes.append(1) or _load(s, *a, **k)
    compose_once.install(multirun="-m" in sys.argv)

    @hydra.main(config_path=os.environ.get("CONF", "conf"), config_name="config",
                version_base=None)
    def app(cfg):
        from hydra.core.hydra_config import HydraConfig

        hydra_cfg = HydraConfig.get()
        print("CONFIG", OmegaConf.to_yaml(cfg, resolve=True).replace(chr(10), "|"))
        print("ENV_SET", dict(hydra_cfg.job.env_set))
        print("SWEEP_DIR", hydra_cfg.sweep.dir)
        print("CWD", hydra_cfg.runtime.cwd)
        print("CHOICES", dict(hydra_cfg.runtime.choices))

    app()
    print("COMPOSES", len(composes))
    """
)


@pytest.fixture
def app(tmp_path: Path) -> Path:
    conf = tmp_path / "conf"
    (conf / "db").mkdir(parents=True)
    (conf / "config.yaml").write_text(
        "defaults: [{db: small}, {stored: base}, _self_]\n"
        "a: 1\nb: {c: hello, d: '${a}'}\n"
        "hydra:\n  run: {dir: .}\n  output_subdir: null\n"
        "  sweep: {dir: 'sweep-${now:%H%M%S%f}'}\n  job: {env_copy: [COPIED]}\n"
    )
    (conf / "db" / "small.yaml").write_text("size: 1\n")
    (conf / "db" / "big.yaml").write_text("size: 1000\n")
    (tmp_path / "app.py").write_text(APP)
    return tmp_path


def launch(app: Path, *args: str, cwd: Path | None = None, **env: str) -> dict[str, str]:
    """The app's printed lines by their first word; COMPOSES 0 when the cache served it."""
    environ = {
        "PATH": "/usr/bin:/bin",
        "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{ROOT}",
        "HYDRA_FULL_ERROR": "1",
        "COPIED": "copied-1",
        "CONFPIPE_CACHE_DIR": str(app / "cache"),
        "CONF": str(app / "conf"),
        **env,
    }
    done = subprocess.run(
        [sys.executable, str(app / "app.py"), *args],
        cwd=cwd or app,
        env=environ,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    lines = dict(line.split(" ", 1) for line in done.stdout.splitlines() if " " in line)
    lines["stderr"] = done.stderr
    return lines


def test_a_rerun_takes_the_config_hydra_composed_from_the_cache(app: Path) -> None:
    uncached = launch(app, "a=5", CONFPIPE_CACHE_DIR="")
    first = launch(app, "a=5")
    second = launch(app, "a=5")
    assert (uncached["COMPOSES"], first["COMPOSES"], second["COMPOSES"]) == ("1", "1", "0")
    for key in ("CONFIG", "ENV_SET", "CWD", "CHOICES"):
        assert uncached[key] == first[key] == second[key]
    assert "size: 1|" in second["CONFIG"] and "a: 5" in second["CONFIG"]
    assert not list(app.glob("sweep-*"))  # a run writes nothing of Hydra's


def test_the_time_a_compose_resolved_is_not_kept(app: Path) -> None:
    first, second = launch(app), launch(app)
    assert second["COMPOSES"] == "0"
    assert first["SWEEP_DIR"] != second["SWEEP_DIR"]  # ${now:} resolved anew, as composed


@pytest.mark.parametrize(
    "change",
    [
        "edit a config file",
        "edit a config file of a group option chosen",
        "add a file to the config folder",
        "change an override",
        "change an env var the compose copied",
        "change a structured config in the ConfigStore",
        "another working directory",
        "another omegaconf version",
        "another hydra version",
        "another yaml version",
        "another python version",
        "edit confpipe's config code",
        "another config folder on the search path",
    ],
)
def test_any_change_to_what_the_compose_reads_composes_anew(
    app: Path, tmp_path: Path, change: str
) -> None:
    code = tmp_path / "code"
    code.mkdir()
    (code / "schema.py").write_text("# v1\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    base_env = {"CODE_DIR": str(code)}
    before = launch(app, **base_env)
    assert launch(app, **base_env)["COMPOSES"] == "0"
    args: list[str] = []
    env = dict(base_env)
    cwd = None
    conf = app / "conf"
    if change == "edit a config file":
        (conf / "config.yaml").write_text(
            (conf / "config.yaml").read_text().replace("a: 1", "a: 2")
        )
    elif change == "edit a config file of a group option chosen":
        (conf / "db" / "small.yaml").write_text("size: 2\n")
    elif change == "add a file to the config folder":
        (conf / "db" / "medium.yaml").write_text("size: 10\n")
    elif change == "change an override":
        args = ["db=big"]
    elif change == "change an env var the compose copied":
        env["COPIED"] = "copied-2"
    elif change == "change a structured config in the ConfigStore":
        env["STORED"] = "two"
    elif change == "another working directory":
        cwd = elsewhere
    elif change.startswith("another") and change.endswith("version"):
        env["FAKE_VERSION_OF"] = change.split()[1]
    elif change == "edit confpipe's config code":
        (code / "schema.py").write_text("# v2, longer\n")
    elif change == "another config folder on the search path":
        other = tmp_path / "conf2"
        other.mkdir()
        for path in conf.rglob("*.yaml"):
            target = other / path.relative_to(conf)
            target.parent.mkdir(exist_ok=True)
            target.write_text(path.read_text())
        env["CONF"] = str(other)
    after = launch(app, *args, cwd=cwd, **env)
    assert after["COMPOSES"] == "1", change
    fresh = launch(app, *args, cwd=cwd, **{**env, "CONFPIPE_CACHE_DIR": ""})
    for key in ("CONFIG", "ENV_SET", "CWD", "CHOICES"):
        assert after[key] == fresh[key]  # what Hydra composes for the changed inputs
    assert launch(app, *args, cwd=cwd, **env)["COMPOSES"] == "0"  # and kept for them
    if change in ("edit a config file", "change an env var the compose copied"):
        assert after["CONFIG"] != before["CONFIG"] or after["ENV_SET"] != before["ENV_SET"]


def test_a_damaged_entry_is_composed_anew_and_written_over(app: Path) -> None:
    first = launch(app)
    entries = list((app / "cache" / "compose").iterdir())
    assert len(entries) == 1
    entries[0].write_bytes(b"\x80\x05garbage")
    again = launch(app)
    assert again["COMPOSES"] == "1" and again["CONFIG"] == first["CONFIG"]
    assert launch(app)["COMPOSES"] == "0"


def test_launches_at_once_each_get_the_composed_config(app: Path) -> None:
    environ = {
        "PATH": "/usr/bin:/bin",
        "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{ROOT}",
        "COPIED": "copied-1",
        "CONFPIPE_CACHE_DIR": str(app / "cache"),
        "CONF": str(app / "conf"),
    }
    procs = [
        subprocess.Popen(
            [sys.executable, str(app / "app.py")],
            cwd=app,
            env=environ,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    configs = {
        next(line for line in p.communicate()[0].splitlines() if line.startswith("CONFIG"))
        for p in procs
    }
    assert len(configs) == 1 and all(p.returncode == 0 for p in procs)
    assert [p.name for p in (app / "cache" / "compose").iterdir()] != []
    assert not [p for p in (app / "cache" / "compose").iterdir() if p.name.startswith(".tmp")]
    assert launch(app)["COMPOSES"] == "0"


def test_a_compose_that_warns_is_not_kept_and_warns_every_time(app: Path) -> None:
    conf = app / "conf" / "config.yaml"
    conf.write_text(conf.read_text() + "  searchpath: [file:///no/such/folder]\n")
    for _ in range(2):
        done = launch(app)
        assert done["COMPOSES"] == "1"
        assert "is not available" in done["stderr"]


def test_a_multirun_sweep_composes_from_the_cache_too(app: Path) -> None:
    first = launch(app, "-m", "a=1,2")
    second = launch(app, "-m", "a=1,2")
    assert first["CONFIG"] == second["CONFIG"]
    assert int(second["COMPOSES"]) == int(first["COMPOSES"]) - 1  # the sweep's own compose
