"""A step's output_path stays where it says: inside the prefix (symlinks resolved), out of
confpipe's own folders there, and ``~`` is the user's home."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from confpipe import ConfigError, StepSpec, load_result, run
from tests import stepfns


def add(output_path: str | None = None) -> StepSpec:
    return StepSpec("a", stepfns.add, {"a": 1, "b": 2}, output_path=output_path)


def test_a_symlink_in_the_prefix_cannot_take_a_relative_output_path_out(tmp_path: Path) -> None:
    prefix, outside = tmp_path / "runs", tmp_path / "elsewhere"
    prefix.mkdir()
    outside.mkdir()
    (prefix / "link").symlink_to(outside)
    for dry_run in (True, False):
        with pytest.raises(ConfigError, match=(
            rf"^step 'a': output_path='link/out' leaves the prefix through a symlink: it is "
            rf"{outside}/out; give a folder inside the prefix, or that absolute path$"
        )):  # fmt: skip
            run(add("link/out"), prefix=str(prefix), dry_run=dry_run)
    assert os.listdir(outside) == []


def test_a_symlink_that_stays_inside_the_prefix_is_fine(tmp_path: Path) -> None:
    prefix = tmp_path / "runs"
    (prefix / "real").mkdir(parents=True)
    (prefix / "alias").symlink_to(prefix / "real")
    run(add("alias/out"), prefix=str(prefix))
    assert load_result(str(prefix / "real" / "out")) == 3


def test_a_prefix_that_is_itself_a_symlink_is_fine(tmp_path: Path) -> None:
    (tmp_path / "disk").mkdir()
    (tmp_path / "runs").symlink_to(tmp_path / "disk")
    run(add("out"), prefix=str(tmp_path / "runs"))
    assert load_result(str(tmp_path / "disk" / "out")) == 3


@pytest.mark.parametrize("path", ["manifests", "sweeps/mine", ".confpipe", "./manifests/x/"])
def test_confpipes_own_folders_are_refused_as_output_paths(path: str) -> None:
    top = os.path.normpath(path).split("/")[0]
    with pytest.raises(ConfigError, match=(
        rf"^step 'a': output_path='{path}' is inside {top}/, where confpipe keeps its own records "
        r"\(manifests, sweeps, .confpipe are reserved under the prefix\); choose another folder$"
    )):  # fmt: skip
        add(path)


def test_names_that_only_start_like_a_reserved_folder_are_fine() -> None:
    assert add("manifests2").output_path == "manifests2"
    assert add("my/manifests").output_path == "my/manifests"


def test_a_tilde_output_path_is_the_users_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    step = add("~/out")
    assert step.output_path == f"{tmp_path}/home/out"
    run(step, prefix=str(tmp_path / "runs"))
    assert load_result(f"{tmp_path}/home/out") == 3
    assert not (tmp_path / "runs" / "~").exists()


def test_a_tilde_of_an_unknown_user_is_refused() -> None:
    with pytest.raises(ConfigError, match="no such user's home folder; write the absolute path"):
        add("~no-such-user-here/out")
