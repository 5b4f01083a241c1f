"""The Hydra schema: defaults, units, and explain() on real Hydra and OmegaConf errors."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf

from confpipe.backends.resources import parse_duration, parse_size
from confpipe.backends.settings import BackendConf
from confpipe.config.explain import explain
from confpipe.config.schema import RunConf, register

CONFS = Path(__file__).parent / "confs"


def one_line(message: str | None) -> str:
    assert message is not None
    assert "\n" not in message
    return message


@pytest.fixture
def composed() -> Callable[..., Any]:
    """compose("config", overrides) against tests/confs, with the schema registered."""
    register()

    def run(*overrides: str) -> Any:
        with initialize_config_dir(config_dir=str(CONFS), version_base=None):
            return compose("config", overrides=list(overrides))

    return run


@pytest.fixture
def compose_error(composed: Callable[..., Any]) -> Callable[..., str]:
    """The one-line explanation of the error that composing with ``overrides`` raises."""

    def run(*overrides: str) -> str:
        with pytest.raises(Exception) as info:
            composed(*overrides)
        return one_line(explain(info.value))

    return run


def merge_error(user: dict[str, Any]) -> str:
    with pytest.raises(Exception) as info:
        OmegaConf.merge(OmegaConf.structured(RunConf), user)
    return one_line(explain(info.value))


# ---- the schema ----------------------------------------------------------------------------


def test_schema_defaults_follow_the_user_contract() -> None:
    assert OmegaConf.to_container(OmegaConf.structured(RunConf)) == {
        "prefix": "outputs",
        "dry_run": False,
        "run_only": None,
        "force_run_failed": True,
        "max_concurrent": 32,
        "detach": False,
        "plan_format": "table",
        "log_level": "INFO",
        "rerun_on_code_change": False,
        "report_html": None,
        "lock": {"heartbeat_interval": 30.0, "lease_timeout": 90.0},
        "backend": {"kind": "local", "cpu": None, "memory": None, "gpus": None},
        "sweep": {"metrics": [], "objective": None},
        "steps": {},
    }


def test_register_is_idempotent_and_composes_with_the_backend_group(
    composed: Callable[..., Any],
) -> None:
    register()
    register()
    assert "confpipe_schema.yaml" in ConfigStore.instance().repo
    cfg = composed("+experiment=tokenize")
    assert OmegaConf.get_type(cfg) is RunConf
    assert cfg.backend.kind == "local"
    assert cfg.lock.lease_timeout == 90.0  # run options are typed: defaults filled in
    step = cfg.steps.tokenize
    assert OmegaConf.to_container(step.config) == {"corpus": "${step:download}/shards"}
    # steps stay plain data, as written (the compiler checks them against StepConf)
    assert OmegaConf.to_container(step.resources) == {
        "cpu": 1,
        "memory": "512MiB",
        "timeout": "1h30m",
    }
    assert OmegaConf.to_container(cfg.steps.download) == {"fn": "tests.compilefns.download"}


@dataclass
class FakeBackendConf(BackendConf):
    kind: str = "fake"
    project: str | None = None


def test_a_backend_extends_backend_conf_through_the_backend_group(tmp_path: Path) -> None:
    """The documented extension path: subclass, register as confpipe_{kind}_schema (outside
    the backend group, which --help lists), list it first."""
    register()
    ConfigStore.instance().store(name="confpipe_fake_schema", node=FakeBackendConf)
    (tmp_path / "backend").mkdir()
    (tmp_path / "config.yaml").write_text((CONFS / "config.yaml").read_text())
    (tmp_path / "backend" / "local.yaml").write_text("kind: local\n")
    (tmp_path / "backend" / "fake.yaml").write_text(
        "defaults: [/confpipe_fake_schema@_here_, _self_]\nproject: p\n"
    )
    with initialize_config_dir(config_dir=str(tmp_path), version_base=None):
        cfg = compose("config", overrides=["backend=fake"])
        assert (cfg.backend.kind, cfg.backend.project) == ("fake", "p")
        with pytest.raises(Exception) as info:
            compose("config", overrides=["backend=fake", "backend.projet=q"])
    assert one_line(explain(info.value)) == (
        "backend.projet: unknown key (did you mean 'project'?); valid keys: kind, cpu, memory, "
        "gpus, project"
    )


# ---- units ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("16GiB", 16 * 2**30),
        ("512MiB", 512 * 2**20),
        ("512mib", 512 * 2**20),
        ("1.5KiB", 1536),
        ("2TiB", 2 * 2**40),
        ("50GB", 50 * 10**9),
        ("3kb", 3000),
        ("10MB", 10**7),
        ("1TB", 10**12),
        ("100B", 100),
        (" 8 GiB ", 8 * 2**30),
        ("4096", 4096),
        (4096, 4096),
        (1e9, 10**9),
        ("-1GiB", -(2**30)),
    ],
)
def test_parse_size(text: object, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize(
    "text",
    ["16 gigs", "GiB", "", "1.5", "12XB", "1/2GiB", True, None, "1e400GiB", math.inf, math.nan],
)
def test_parse_size_refuses(text: object) -> None:
    with pytest.raises(ValueError, match=r"use e\.g\. 512MiB, 16GiB$"):
        parse_size(text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (16, "16 has no unit; write e.g. 16GiB, 16MiB or 16B (bytes)"),
        ("16", "'16' has no unit; write e.g. 16GiB, 16MiB or 16B (bytes)"),
        (" 1.5 ", "' 1.5 ' has no unit; write e.g. 1.5GiB, 1.5MiB or 1.5B (bytes)"),
    ],
)
def test_parse_size_without_plain_bytes_wants_a_unit(text: object, expected: str) -> None:
    """``memory: 16`` in a step's resources is 16GiB meant, not 16 bytes: refused."""
    with pytest.raises(ValueError) as info:
        parse_size(text, plain_bytes=False)
    assert str(info.value) == expected
    for sized in ("16GiB", "512MiB", "16GB", "100B"):
        assert parse_size(sized, plain_bytes=False) == parse_size(sized)
    assert parse_size(0, plain_bytes=False) == 0  # not positive: the caller says so


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("2h", 7200),
        ("1h30m", 5400),
        ("1h 30m 15s", 5415),
        ("90s", 90),
        ("45m", 2700),
        ("1d", 86400),
        ("1.5h", 5400),
        ("2H", 7200),
        ("600", 600),
        ("2.5", 2.5),
        (30, 30),
        (0.5, 0.5),
    ],
)
def test_parse_duration(text: object, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    "text", ["2 hours", "h", "", "1w", "1h-30m", False, None, [1], "nan", "inf", math.inf, 10**400]
)
def test_parse_duration_refuses(text: object) -> None:
    with pytest.raises(ValueError, match=r"is not a duration; use e\.g\. 90s, 30m, 2h, 1h30m$"):
        parse_duration(text)


# ---- explain(): errors from Hydra's compose ------------------------------------------------


def test_unknown_key_in_an_experiment_file(compose_error: Callable[..., str]) -> None:
    assert compose_error("+experiment=option_typo") == (
        "experiment/option_typo: lock.lease_timout: unknown key (did you mean 'lease_timeout'?); "
        "valid keys: heartbeat_interval, lease_timeout"
    )


def test_an_experiment_without_its_package_line(compose_error: Callable[..., str]) -> None:
    """Hydra puts a file without ``# @package _global_`` under ``experiment:``: say so."""
    assert compose_error("+experiment=no_package") == (
        "experiment/no_package: its keys landed under 'experiment:', not at the top level; "
        "add '# @package _global_' as its first line"
    )


def test_unknown_key_in_an_override(compose_error: Callable[..., str]) -> None:
    assert compose_error("max_concurent=3").startswith(
        "max_concurent: unknown key (did you mean 'max_concurrent'?); valid keys: prefix, "
    )
    assert compose_error("lock.heartbeat=3") == (
        "lock.heartbeat: unknown key (did you mean 'heartbeat_interval'?); "
        "valid keys: heartbeat_interval, lease_timeout"
    )


def test_adding_a_key_that_is_set_already(compose_error: Callable[..., str]) -> None:
    assert compose_error("+prefix=/data") == (
        "prefix: already set; override it with prefix=/data (or ++prefix=/data: add or override)"
    )
    assert compose_error("+experiment=tokenize", "+steps.tokenize.resources.cpu=2") == (
        "steps.tokenize.resources.cpu: already set; override it with "
        "steps.tokenize.resources.cpu=2 (or ++steps.tokenize.resources.cpu=2: add or override)"
    )


def test_any_key_under_steps_can_be_overridden(composed: Callable[..., Any]) -> None:
    """Steps are plain data and open: the compiler checks their keys (see test_compiler)."""
    cfg = composed(
        "+experiment=tokenize",
        "steps.download.resources.cpu=4",  # a block the step doesn't have
        "steps.tokenize.resources.spot=true",  # a key its block doesn't have
        "steps.new.fn=m.f",  # a new step
        "+steps.other.fn=m.g",
    )
    assert OmegaConf.to_container(cfg.steps.download.resources) == {"cpu": 4}
    assert cfg.steps.tokenize.resources.spot is True
    assert list(cfg.steps) == ["download", "tokenize", "new", "other"]


def test_unknown_experiment_lists_the_available_ones(compose_error: Callable[..., str]) -> None:
    assert compose_error("+experiment=tokenze") == (
        "experiment=tokenze: no config 'tokenze' in group 'experiment' (did you mean "
        "'tokenize'?); available: broken_yaml, no_package, option_typo, tokenize, typo, "
        "wrong_type"
    )
    assert compose_error("backend=gpc") == (
        "backend=gpc: no config 'gpc' in group 'backend'; available: local"
    )
    assert compose_error("experiment=tokenize") == (
        "experiment: not in the defaults list; use +experiment=tokenize"
    )


def test_run_only_takes_one_bare_name_or_glob_or_a_list(composed: Callable[..., Any]) -> None:
    assert composed("run_only=train_tokenizer").run_only == "train_tokenizer"
    assert composed("run_only=train_*").run_only == "train_*"
    assert list(composed("run_only=[train_*,eval]").run_only) == ["train_*", "eval"]


def test_wrong_types(compose_error: Callable[..., str]) -> None:
    assert compose_error("+experiment=wrong_type") == (
        "experiment/wrong_type: max_concurrent: 'lots' is not an integer"
    )
    assert compose_error("dry_run=maybe") == "dry_run: 'maybe' is not true or false"
    assert compose_error("max_concurrent=1.5") == "max_concurrent: 1.5 is not an integer"
    assert compose_error("backend.cpu=four") == "backend.cpu: 'four' is not a number or null"


def test_bad_override_syntax_and_bad_yaml(compose_error: Callable[..., str]) -> None:
    assert compose_error("prefix") == (
        "override 'prefix': Hydra's override grammar can't read it (missing EQUAL at '<EOF>') "
        "(see https://hydra.cc/docs/advanced/override_grammar/basic)"
    )
    assert compose_error("steps.a.config.x=[1,2").startswith("override 'steps.a.config.x=[1,2': ")
    assert compose_error("+experiment=broken_yaml") == (
        f"{CONFS}/experiment/broken_yaml.yaml:3:1: invalid YAML: "
        "expected ',' or ']', but got '<stream end>'"
    )


@dataclass
class NetConf:
    name: str = "default"


@dataclass
class NetBackendConf(BackendConf):
    kind: str = "net"
    net: NetConf | None = None
    labels: dict[str, str] = field(default_factory=dict)


def test_a_backends_own_blocks_are_explained(tmp_path: Path) -> None:
    """OmegaConf can't set a key under a null structured node; a dict needs ``+`` for a key."""
    register()
    ConfigStore.instance().store(name="confpipe_net_schema", node=NetBackendConf)
    (tmp_path / "backend").mkdir()
    (tmp_path / "config.yaml").write_text((CONFS / "config.yaml").read_text())
    (tmp_path / "backend" / "local.yaml").write_text("kind: local\n")
    (tmp_path / "backend" / "net.yaml").write_text(
        "defaults: [/confpipe_net_schema@_here_, _self_]\n"
    )
    for override in ("backend.net.name=x", "backend.net={name: x}"):
        with (
            initialize_config_dir(config_dir=str(tmp_path), version_base=None),
            pytest.raises(Exception) as info,
        ):
            compose("config", overrides=["backend=net", override])
        assert one_line(explain(info.value)).startswith(
            f"{override.split('=')[0]}: can't be set from the command line while its block is "
            "null (an OmegaConf limitation); give the block a value in YAML first"
        )
    with (
        initialize_config_dir(config_dir=str(tmp_path), version_base=None),
        pytest.raises(Exception) as info,
    ):
        compose("config", overrides=["backend=net", "backend.labels.team=x"])
    assert one_line(explain(info.value)) == (
        "backend.labels.team: no such key; to add it use +backend.labels.team=x"
    )


# ---- explain(): errors from OmegaConf.merge and resolution ---------------------------------


def test_merge_errors_name_the_full_key() -> None:
    """(Steps are plain data: the compiler checks them, see test_compiler.)"""
    assert merge_error({"backend": {"kynd": "local"}}) == (
        "backend.kynd: unknown key (did you mean 'kind'?); valid keys: kind, cpu, memory, gpus"
    )
    assert merge_error({"max_concurrent": "x"}) == "max_concurrent: 'x' is not an integer"
    assert merge_error({"lock": {"lease_timeout": "soon"}}) == (
        "lock.lease_timeout: 'soon' is not a number"
    )
    assert merge_error({"bakend": {}}).startswith(
        "bakend: unknown key (did you mean 'backend'?); valid keys: prefix, dry_run, "
    )


def test_resolution_errors_name_the_key() -> None:
    cfg = OmegaConf.merge(
        OmegaConf.structured(RunConf),
        {"steps": {"a": {"fn": "???", "config": {"x": "${nope.y}", "z": "${stp:a}"}}}},
    )
    for path, expected in [
        (
            "steps.a.fn",
            "steps.a.fn: missing mandatory value (???); e.g. steps.a.fn=module.function",
        ),
        (
            "steps.a.config.x",
            "steps.a.config.x: Interpolation key 'nope.y' not found; fix the interpolation or "
            "add that key",
        ),
        (
            "steps.a.config.z",
            "steps.a.config.z: unknown resolver 'stp' (did you mean 'step'?); "
            "write ${step:NAME} for a step",
        ),
    ]:
        with pytest.raises(Exception) as info:
            OmegaConf.select(cfg, path, throw_on_missing=True)
        assert one_line(explain(info.value)) == expected


def test_explain_leaves_other_errors_alone() -> None:
    assert explain(ValueError("not a config error")) is None
    assert explain(KeyError("x")) is None
