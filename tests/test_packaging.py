"""What ``pip install .`` gives a user: the wheel carries conf/ and experiments/, the tokenize
experiment runs from an empty folder after a non-editable install, and a project's own
``./conf`` is found without ``--config-dir``."""

from __future__ import annotations

import os
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]

MINE = """\
# @package _global_
steps:
  hello:
    fn: mysteps.hello
    config: {who: world}
"""

STEPS = """\
def hello(output_path: str, who: str) -> dict:
    return {"who": who}
"""


def _env() -> dict[str, str]:
    """This process's environment without what would let a subprocess find the checkout."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.pop("CONFPIPE_FULL_ERROR", None)
    return env


def _run(*args: str | Path, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in args], cwd=cwd, env=_env(), capture_output=True, text=True,
        timeout=timeout,
    )  # fmt: skip


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """confpipe's wheel, built from this checkout as pip builds it."""
    dist = tmp_path_factory.mktemp("dist")
    built = _run(
        sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", dist, ROOT, cwd=dist
    )
    assert built.returncode == 0, built.stderr
    (found,) = dist.glob("confpipe-*.whl")
    return found


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The python of a fresh virtualenv with the wheel installed (not editable)."""
    where = tmp_path_factory.mktemp("venv")
    venv.create(where, with_pip=True)
    python = where / "bin" / "python"
    done = _run(python, "-m", "pip", "install", "-q", wheel, cwd=where, timeout=900)
    assert done.returncode == 0, done.stderr
    return python


def test_the_wheel_holds_the_configs_the_experiments_and_the_plugins(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    for name in (
        "confpipe/conf/config.yaml",
        "confpipe/conf/backend/local.yaml",
        "confpipe/conf/backend/gcp.yaml",
        "confpipe/conf/experiment/tokenize.yaml",
        "confpipe/conf/experiment/train.yaml",
        "experiments/tokenize.py",
        "experiments/train.py",
        "hydra_plugins/confpipe_launcher/__init__.py",
        "hydra_plugins/confpipe_searchpath/__init__.py",
        "confpipe/py.typed",
    ):
        assert name in names, name
    assert not [n for n in names if n.startswith(("tests/", "benchmarks/", "conf/"))]


@pytest.mark.timeout(900)
def test_the_installed_wheel_runs_the_tokenize_experiment_from_an_empty_folder(
    installed: Path, tmp_path: Path
) -> None:
    where = _run(installed, "-c", "import confpipe, experiments; print(confpipe.__file__, "
                 "experiments.__file__)", cwd=tmp_path)  # fmt: skip
    assert where.returncode == 0, where.stderr
    assert str(ROOT) not in where.stdout and "site-packages" in where.stdout

    first = _run(installed, "-m", "confpipe", "+experiment=tokenize", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert "summary: 3 ran, 0 cached, 0 failed" in first.stderr
    assert sorted(p.name.rsplit("-", 1)[0] for p in (tmp_path / "outputs").iterdir()) == [
        "download", "manifests", "tokenize", "train_tokenizer",
    ]  # fmt: skip
    again = _run(installed.parent / "confpipe", "+experiment=tokenize", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert "plan: 3 steps, 3 cached, 0 to run" in again.stderr


def _project(folder: Path) -> Path:
    (folder / "conf" / "experiment").mkdir(parents=True)
    (folder / "conf" / "experiment" / "mine.yaml").write_text(MINE)
    (folder / "mysteps.py").write_text(STEPS)
    return folder


@pytest.mark.timeout(900)
def test_an_installed_confpipe_finds_the_projects_own_conf_folder(
    installed: Path, tmp_path: Path
) -> None:
    project = _project(tmp_path)
    done = _run(installed, "-m", "confpipe", "+experiment=mine", cwd=project)
    assert done.returncode == 0, done.stderr
    assert "summary: 1 ran, 0 cached, 0 failed" in done.stderr


def test_a_projects_conf_folder_is_searched_after_confpipes_own(tmp_path: Path) -> None:
    project = _project(tmp_path)
    (project / "conf" / "backend").mkdir()
    (project / "conf" / "backend" / "small.yaml").write_text("kind: local\ncpu: 1\n")
    listed = _run(sys.executable, "-m", "confpipe", "+experiment=nope", cwd=project)
    assert listed.returncode == 2
    assert "available: mine, tokenize, train" in listed.stderr  # the project's, and confpipe's
    done = _run(sys.executable, "-m", "confpipe", "+experiment=mine", "backend=small", cwd=project)
    assert done.returncode == 0, done.stderr
    imposter = MINE.replace("hello:", "imposter:")  # a project config named as confpipe's
    (project / "conf" / "experiment" / "tokenize.yaml").write_text(imposter)
    shipped = _run(sys.executable, "-m", "confpipe", "+experiment=tokenize", "dry_run=true",
                   cwd=project)  # fmt: skip
    assert shipped.returncode == 0, shipped.stderr
    assert "train_tokenizer" in shipped.stdout and "imposter" not in shipped.stdout
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    other = _run(sys.executable, "-m", "confpipe", "+experiment=mine", cwd=elsewhere)
    assert other.returncode == 2 and "no config 'mine'" in other.stderr  # only the cwd's ./conf


def test_config_dir_and_hydra_searchpath_still_add_folders(tmp_path: Path) -> None:
    project = _project(tmp_path / "project")
    run_from = tmp_path / "elsewhere"
    run_from.mkdir()
    for how in (
        ["--config-dir", str(project / "conf")],
        [f"hydra.searchpath=[file://{project / 'conf'}]"],
    ):
        done = subprocess.run(
            [sys.executable, "-m", "confpipe", *how, "+experiment=mine", "dry_run=true"],
            cwd=run_from, capture_output=True, text=True, timeout=120,
            env={**_env(), "PYTHONPATH": str(project)},
        )  # fmt: skip
        assert done.returncode == 0, (how, done.stderr)
        assert "hello" in done.stdout and "1 will run" in done.stdout  # the plan
