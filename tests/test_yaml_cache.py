"""yamlcache: a config file parsed once per content gives what OmegaConf's load gives, and
any change to its text, a damaged entry or an unsafe cache folder loads it anew."""

from __future__ import annotations

import io
import os
import pickle
from pathlib import Path
from typing import Any

import pytest
from omegaconf import DictConfig, OmegaConf

from confpipe.config import diskcache, yamlcache, yamlload
from confpipe.errors import ConfigError

TEXT = (
    "# @package _global_\n"
    "a: 1\nf: 1e-3\ng: .5\nh: 1_000\nwhen: 2001-12-14\nyes_: yes\nnull_: ~\n"
    "list: [1, two, {three: 3}]\nref: ${a}\nstep: ${step:up}\n"
    "anchor: &x {k: v}\nalias: *x\nmulti: |\n  line one\n  line two\n"
)


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "cache"
    monkeypatch.setenv(diskcache.ENV, str(folder))
    monkeypatch.setattr(yamlcache, "_memory", {})
    yamlload.install()  # as the CLI loads: aliases bounded
    return folder


def original(file_: Any) -> Any:
    """OmegaConf's own load, counted."""
    original.calls += 1  # type: ignore[attr-defined]
    return ORIGINAL(file_)


ORIGINAL = OmegaConf.load
original.calls = 0  # type: ignore[attr-defined]


def load(path: Path) -> Any:
    return yamlcache.load(path, original)


def entries(cache: Path) -> list[Path]:
    folder = cache / yamlcache.KIND
    return sorted(p for p in folder.iterdir() if not p.name.startswith(".tmp-"))


def same(a: Any, b: Any) -> bool:
    """Equal as OmegaConf compares them, as YAML (unresolved), with the same node types."""
    return bool(a == b) and OmegaConf.to_yaml(a) == OmegaConf.to_yaml(b) and type(a) is type(b)


def test_a_config_file_loads_as_omegaconf_loads_it_and_again_from_the_cache(
    cache: Path, tmp_path: Path
) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(TEXT)
    expected = ORIGINAL(path)
    calls = original.calls  # type: ignore[attr-defined]
    first = load(path)
    yamlcache._memory.clear()  # the next load comes from the folder, as a new launch's does
    second = load(path)
    assert original.calls == calls + 1  # type: ignore[attr-defined]
    assert same(first, expected) and same(second, expected)
    assert isinstance(second.f, float) and second.when == "2001-12-14" and second.yes_ is True
    assert second.alias == {"k": "v"}
    second.a = 99  # each load is a config of its own
    assert load(path).a == 1
    with open(path, encoding="utf-8") as f:  # Hydra's way: an open file
        assert same(yamlcache.load(f, original), expected)
    assert len(entries(cache)) == 1


def test_an_edited_config_file_is_loaded_anew(cache: Path, tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("a: 1\n")
    assert load(path).a == 1
    path.write_text("a: 2\n")
    os.utime(path, ns=(0, 0))  # even with the old file's time: the text is what counts
    assert load(path).a == 2
    assert len(entries(cache)) == 2


def test_a_damaged_cache_entry_is_a_miss_and_is_written_anew(cache: Path, tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(TEXT)
    load(path)
    (entry,) = entries(cache)
    for damage in (b"", b"not a pickle", pickle.dumps({"a dict": "not a config"})):
        entry.write_bytes(damage)
        yamlcache._memory.clear()
        assert same(load(path), ORIGINAL(path))
        assert isinstance(pickle.loads(entry.read_bytes()), DictConfig)  # written anew


def test_a_yaml_error_is_raised_with_the_file_name_every_time_and_never_cached(
    cache: Path, tmp_path: Path
) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("a: [1, 2\n")
    for _ in range(2):
        with pytest.raises(Exception, match=r"broken\.yaml"):
            load(path)
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(
        "a: &a [1,1,1,1,1,1,1,1,1,1]\n"
        + "".join(
            f"{c}: &{c} [*{p},*{p},*{p},*{p},*{p},*{p},*{p},*{p},*{p},*{p}]\n"
            for p, c in zip("abcd", "bcde", strict=True)
        )
    )
    with pytest.raises(ConfigError, match=r"bomb\.yaml: its YAML aliases expand"):
        load(bomb)
    assert not (cache / yamlcache.KIND).exists() or entries(cache) == []


def test_a_stream_without_a_name_loads_and_an_equal_text_shares_the_entry(cache: Path) -> None:
    assert yamlcache.load(io.StringIO("a: 1\n"), original).a == 1
    assert yamlcache.load(io.StringIO("a: 1\n"), original).a == 1
    assert len(entries(cache)) == 1


def test_an_empty_cache_dir_setting_turns_the_cache_off(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(diskcache.ENV, "")
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "c.yaml"
    path.write_text("a: 1\n")
    assert diskcache.folder(yamlcache.KIND) is None
    assert load(path).a == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.yaml"]


@pytest.mark.skipif(not hasattr(os, "getuid"), reason="POSIX permissions")
def test_a_cache_folder_others_may_write_to_is_not_used(cache: Path, tmp_path: Path) -> None:
    folder = cache / yamlcache.KIND
    folder.mkdir(parents=True)
    folder.chmod(0o777)
    path = tmp_path / "c.yaml"
    path.write_text("a: 1\n")
    (folder / yamlcache._key(path.read_text())).write_bytes(
        pickle.dumps(OmegaConf.create({"a": 666}))
    )
    assert diskcache.folder(yamlcache.KIND) is None
    assert load(path).a == 1


def test_the_default_cache_folder_is_the_users_cache_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(diskcache.ENV)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert diskcache.root() == tmp_path / "xdg" / "confpipe"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert diskcache.root() == tmp_path / "home" / ".cache" / "confpipe"


def test_the_cache_keeps_the_most_recently_used_entries(
    cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(diskcache, "MAX_ENTRIES", 3)
    paths = []
    for i in range(5):
        path = tmp_path / f"c{i}.yaml"
        path.write_text(f"a: {i}\n")
        paths.append(path)
        load(path)
        os.utime(entries(cache)[0].parent / yamlcache._key(path.read_text()), ns=(i, i))
    kept = {p.name for p in entries(cache)}
    assert kept == {yamlcache._key(p.read_text()) for p in paths[2:]}


def test_the_cache_keeps_no_more_bytes_than_its_bound(
    cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("a: 1\n")
    load(path)
    (entry,) = entries(cache)
    monkeypatch.setattr(diskcache, "MAX_BYTES", entry.stat().st_size)
    path.write_text("a: 2\n")
    load(path)
    assert [p.name for p in entries(cache)] == [yamlcache._key("a: 2\n")]
