"""compile_steps, backend_for and run_options: config in, StepSpecs and run() options out."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf

from confpipe.backends.local import LocalBackend
from confpipe.backends.resources import GPU, Resources
from confpipe.config.compiler import backend_for, compile_steps, run_options
from confpipe.config.refs import steps_data
from confpipe.config.schema import RunConf, register
from confpipe.engine.lock import LockOptions
from confpipe.engine.options import RunOptions
from confpipe.engine.remote import step_resources
from confpipe.engine.spec import Ref, StepSpec, Template
from confpipe.errors import ConfigError
from tests import compilefns

FN = "tests.compilefns"
CONFS = Path(__file__).parent / "confs"


def conf(steps: dict[str, Any], **options: Any) -> DictConfig:
    """What Hydra composes: the user's config merged into the schema."""
    cfg = OmegaConf.merge(OmegaConf.structured(RunConf), {"steps": steps, **options})
    assert isinstance(cfg, DictConfig)
    return cfg


def composed(*overrides: str) -> DictConfig:
    """What Hydra composes from tests/confs with ``overrides``."""
    register()
    with initialize_config_dir(config_dir=str(CONFS), version_base=None):
        return compose("config", overrides=list(overrides))


def compiled(steps: dict[str, Any], **options: Any) -> dict[str, StepSpec]:
    return {spec.name: spec for spec in compile_steps(conf(steps, **options))}


def error(steps: dict[str, Any], **options: Any) -> str:
    """The message compile_steps raises for ``steps``: always one line."""
    with pytest.raises(ConfigError) as info:
        compile_steps(conf(steps, **options))
    message = str(info.value)
    assert "\n" not in message
    return message


def download(**more: Any) -> dict[str, Any]:
    return {"fn": f"{FN}.download", **more}


def tokenize(corpus: str, **more: Any) -> dict[str, Any]:
    return {"fn": f"{FN}.tokenize", "config": {"corpus": corpus}, **more}


def with_resources(**resources: Any) -> dict[str, Any]:
    return {"a": download(resources=resources)}


# ---- ${step:NAME} ------------------------------------------------------------------------


def test_refs_become_specs_refs_and_templates_with_their_edges() -> None:
    steps = {
        "merge": {
            "fn": f"{FN}.merge",
            "config": {
                "inputs": ["${step:download}", "${step:shards}/x"],
                "both": "${step:download}:${step:tokenize}",
                "extra": {"k": "${step:tokenize}", "plain": "text"},
            },
        },
        "shards": tokenize("${step:tokenize}/shards"),
        "tokenize": tokenize("${step:download}"),
        "download": download(),
    }
    specs = compile_steps(conf(steps))
    assert [s.name for s in specs] == ["download", "tokenize", "shards", "merge"]
    by = {s.name: s for s in specs}
    dl, tok, shards, merge = by["download"], by["tokenize"], by["shards"], by["merge"]
    assert tok.config == {"corpus": dl}
    assert shards.config == {"corpus": Ref(tok, "/shards")}
    assert merge.config == {
        "inputs": [dl, Ref(shards, "/x")],
        "both": Template((dl, ":", tok)),
        "extra": {"k": tok, "plain": "text"},
    }
    assert set(merge.dependencies) == {dl, shards, tok}
    assert merge.resolved_config("/p") == {
        "inputs": [f"/p/{dl.identity}", f"/p/{shards.identity}/x"],
        "both": f"/p/{dl.identity}:/p/{tok.identity}",
        "extra": {"k": f"/p/{tok.identity}", "plain": "text"},
    }


def test_refs_to_names_with_dots_and_dashes_and_around_other_interpolations() -> None:
    by = compiled(
        {
            "tok.v2-x": download(),
            "b": {
                "fn": f"{FN}.merge",
                "config": {
                    "inputs": ["${prefix}/${step:tok.v2-x}", "${step: tok.v2-x}"],
                    "both": "${steps.b.version}-${step:tok.v2-x}",
                    "extra": {"literal": "\\${step:tok.v2-x}"},  # escaped: text, not a ref
                },
                "version": "v1",
            },
        },
        prefix="/data",
    )
    a, b = by["tok.v2-x"], by["b"]
    assert b.config == {
        "inputs": [Template(("/data/", a)), a],
        "both": Template(("v1-", a)),
        "extra": {"literal": "${step:tok.v2-x}"},
    }
    assert b.dependencies == (a,)


@pytest.mark.parametrize(
    "text",
    [
        "${step:a.b-c_1}",
        "x${step:a}y${step:b}z",
        "${step:a}}",
        "$${step:a}",
        "\\${step:a}",
        "${step: a }",
        "${step:true}",
        "${step:NaN}",
        "${step:'quoted name'}",
        "${step:${prefix}}",
        "${oc.select:prefix}/${step:a}",
    ],
)
def test_step_refs_read_as_omegaconf_resolves_them(text: str) -> None:
    """The fast path for plain ``${step:NAME}`` agrees with OmegaConf's own resolution."""
    cfg = conf({"a": download(config={"url": text})})
    expected: Any = OmegaConf.to_container(cfg.steps, resolve=True)
    assert steps_data(cfg) == expected
    assert steps_data({"prefix": "outputs", "steps": {"a": download(config={"url": text})}}) == {
        "a": {"fn": f"{FN}.download", "config": {"url": expected["a"]["config"]["url"]}}
    }


def test_the_same_steps_compile_alike_from_hydra_from_the_schema_and_from_a_dict() -> None:
    hydra_cfg = composed("+experiment=tokenize")
    steps = {
        "download": download(),
        "tokenize": tokenize(
            "${step:download}/shards",
            resources={"cpu": 1, "memory": "512MiB", "timeout": "1h30m"},
        ),
    }
    plain = compile_steps({"steps": steps})
    assert compile_steps(hydra_cfg) == compile_steps(conf(steps)) == plain
    tok = plain[1]
    assert tok.config == {"corpus": Ref(plain[0], "/shards")}
    assert tok.resources == Resources(cpu=1, memory=512 * 2**20, timeout=5400)


def test_a_ref_to_an_unknown_step_names_the_key_and_suggests() -> None:
    steps = {"download": download(), "tokenize": tokenize("${step:downlod}")}
    assert error(steps) == (
        "steps.tokenize.config.corpus: refers to unknown step 'downlod' (did you mean "
        "'download'?); steps: download, tokenize"
    )
    steps["tokenize"] = {"fn": f"{FN}.merge", "config": {"inputs": ["x", "${step:nope}/y"]}}
    assert error(steps) == (
        "steps.tokenize.config.inputs[1]: refers to unknown step 'nope'; steps: download, tokenize"
    )


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("output_path", "${step:download}/mine"),
        ("version", "${step:download}"),
        ("resources", {"tpu": "${step:download}"}),
    ],
)
def test_a_ref_outside_config_is_refused(key: str, value: Any) -> None:
    where = f"steps.b.{key}" + (".tpu" if key == "resources" else "")
    assert error({"download": download(), "b": download(**{key: value})}) == (
        f"{where}: ${{step:download}} is only allowed in a step's config (where it passes "
        f"download's output path and adds an edge), not in {key}"
    )


def test_cycles_are_reported_with_their_path() -> None:
    assert error({"a": tokenize("${step:b}"), "b": tokenize("${step:a}/x")}) == (
        "steps form a cycle: a -> b -> a; remove one of these ${step:...} references"
    )
    steps = {"root": download(), "a": tokenize("${step:root}"), "b": tokenize("${step:c}"),
             "c": tokenize("${step:d}"), "d": tokenize("${step:b}")}  # fmt: skip
    assert error(steps) == (
        "steps form a cycle: b -> c -> d -> b; remove one of these ${step:...} references"
    )
    assert error({"a": tokenize("${step:a}")}).startswith("steps form a cycle: a -> a;")


@pytest.mark.parametrize("name", ["../x", "a b", "..", "a/b", ".hidden"])
def test_names_that_could_escape_the_prefix_are_refused(name: str) -> None:
    assert error({name: download()}).startswith(f"steps: invalid step name {name!r}: use 1-128 ")


# ---- fn ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fn", "expected"),
    [
        (
            "nope.download",
            "steps.a.fn: cannot import 'nope' (No module named 'nope'); check the dotted path "
            "and that its package is importable (on sys.path)",
        ),
        (
            "tests.compilefnz.download",
            "steps.a.fn: cannot import 'tests.compilefnz' (No module named 'tests.compilefnz') "
            "(did you mean 'compilefns'?); check the dotted path",
        ),
        (
            "tests.compilefns.downlaod",
            "steps.a.fn: module 'tests.compilefns' has no function 'downlaod' (did you mean "
            "'download'?); it offers: Trainer, add, anything, download, huge, merge, no_output, "
            "positional, tokenize, typed, unresolvable",
        ),
        (
            "tests.compilefns.NOT_A_FUNCTION",
            "steps.a.fn: 'tests.compilefns.NOT_A_FUNCTION' is an int, not a function; "
            "point fn at a function",
        ),
        (
            "tests.compilefns",
            "steps.a.fn: 'tests.compilefns' is a module, not a function; name a function in it, "
            "e.g. tests.compilefns.add (it offers: add, anything, download, huge, merge, "
            "no_output, positional, tokenize, ...)",
        ),
        (
            "download",
            "steps.a.fn: 'download' is not a dotted path to a function; use module.function, "
            "e.g. experiments.tokenize.tokenize",
        ),
    ],
)
def test_fn_resolution_errors(fn: str, expected: str) -> None:
    assert error({"a": {"fn": fn}}) == expected


def test_a_missing_fn_is_reported() -> None:
    expected = (
        "steps.a.fn: missing; set it to the step function's dotted path, "
        "e.g. experiments.tokenize.tokenize"
    )
    assert error({"a": {"config": {}}}) == expected
    assert error({"a": {"fn": None}}) == expected
    with pytest.raises(ConfigError) as info:
        compile_steps({"steps": {"a": {"config": {}}}})
    assert str(info.value) == expected
    assert error({"a": {"fn": "???"}}) == (  # left for the command line to set
        "steps.a.fn: missing mandatory value (???); e.g. steps.a.fn=module.function"
    )


def test_a_module_not_yet_imported_is_named_as_a_module(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``fn=pkg.train`` where pkg's __init__ doesn't import train: a module, not a function."""
    (tmp_path / "stepspkg").mkdir()
    (tmp_path / "stepspkg" / "__init__.py").write_text("")
    (tmp_path / "stepspkg" / "train.py").write_text(
        "__all__ = ['train', 'evaluate']\nclass Adam: ...\n"
        "def evaluate(output_path): ...\ndef train(output_path): ...\ndef _helper(): ...\n"
    )
    (tmp_path / "stepspkg" / "empty.py").write_text("X = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in ("stepspkg", "stepspkg.train", "stepspkg.empty"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    assert error({"a": {"fn": "stepspkg.train"}}) == (
        "steps.a.fn: 'stepspkg.train' is a module, not a function; name a function in it, "
        "e.g. stepspkg.train.train (it offers: train, evaluate)"
    )
    assert error({"a": {"fn": "stepspkg.empty"}}) == (
        "steps.a.fn: 'stepspkg.empty' is a module with no public functions; point fn at a function"
    )
    assert error({"a": {"fn": "stepspkg.nope"}}) == (
        "steps.a.fn: module 'stepspkg' has no function 'nope'; it offers: no public functions"
    )


def test_a_module_that_fails_to_import_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "broken_steps.py").write_text("import not_installed_anywhere\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "broken_steps", raising=False)
    assert error({"a": {"fn": "broken_steps.run"}}) == (
        "steps.a.fn: importing 'broken_steps' failed: ModuleNotFoundError: No module named "
        f"'not_installed_anywhere' ({tmp_path}/broken_steps.py:1: import not_installed_anywhere); "
        "install it or fix the module"
    )


def test_fn_may_be_an_attribute_of_a_class() -> None:
    spec = compiled({"a": {"fn": f"{FN}.Trainer.train", "config": {"lr": 0.1}}})["a"]
    assert spec.fn is compilefns.Trainer.train
    assert spec.fn_path == f"{FN}.Trainer.train"


# ---- the signature -------------------------------------------------------------------------


def test_a_missing_keyword_argument_is_a_config_error() -> None:
    assert error({"a": {"fn": f"{FN}.add", "config": {"a": 1}}}) == (
        f"steps.a.config: {FN}.add() needs 'b'; set steps.a.config.b"
    )
    assert error({"a": {"fn": f"{FN}.add"}}) == (
        f"steps.a.config: {FN}.add() needs 'a', 'b'; set steps.a.config.a"
    )


def test_an_unexpected_keyword_argument_is_a_config_error() -> None:
    assert error({"a": {"fn": f"{FN}.add", "config": {"a": 1, "bb": 2}}}) == (
        f"steps.a.config.bb: {FN}.add() has no parameter 'bb' (did you mean 'b'?); it takes: "
        "a, b (remove the key, or give the function **kwargs)"
    )


def test_kwargs_accept_any_config_key() -> None:
    spec = compiled({"a": {"fn": f"{FN}.anything", "config": {"x": 1, "y": [2]}}})["a"]
    assert spec.config == {"x": 1, "y": [2]}


def test_the_function_must_take_output_path_by_keyword() -> None:
    assert error({"a": {"fn": f"{FN}.no_output", "config": {"a": 1}}}) == (
        f"steps.a.fn: {FN}.no_output() takes no output_path; add an 'output_path: str' "
        "parameter (confpipe calls fn(output_path=..., **config))"
    )
    assert error({"a": {"fn": f"{FN}.positional"}}) == (
        f"steps.a.fn: {FN}.positional() has positional-only parameters (data); "
        "confpipe passes keywords only"
    )
    assert error({"a": {"fn": f"{FN}.anything", "config": {"output_path": "/x"}}}) == (
        "steps.a.config.output_path: confpipe passes output_path itself; remove it from config "
        "(set steps.a.output_path to choose where the step writes)"
    )


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        ({"lr": "abc"}, "lr: 'abc' is not a number ({T} declares lr: float)"),
        ({"lr": True}, "lr: True is not a number ({T} declares lr: float)"),
        ({"lr": None}, "lr: null is not a number ({T} declares lr: float)"),
        ({"steps": "1.5k"}, "steps: '1.5k' is not an integer ({T} declares steps: int)"),
        ({"steps": 1.5}, "steps: 1.5 is not an integer ({T} declares steps: int)"),
        ({"steps": False}, "steps: False is not an integer ({T} declares steps: int)"),
        ({"flag": 1}, "flag: 1 is not true or false ({T} declares flag: bool)"),
        ({"flag": "yes"}, "flag: 'yes' is not true or false ({T} declares flag: bool)"),
        ({"name": 3}, "name: 3 is not a string ({T} declares name: str); quote it to pass a "
         "string"),
        ({"name": ["a"]}, "name: ['a'] is not a string ({T} declares name: str)"),
        ({"limit": "x"}, "limit: 'x' is not an integer or null ({T} declares limit: int | None)"),
        ({"ratio": "x"}, "ratio: 'x' is not a number or null ({T} declares ratio: float | None)"),
        ({"legacy": "x"}, "legacy: 'x' is not an integer or null ({T} declares legacy: int)"),
        ({"steps": "${step:up}"}, "steps: '${step:up}' is not an integer ({T} declares steps: "
         "int)"),
    ],
)  # fmt: skip
def test_config_values_must_have_the_simple_type_the_function_declares(
    config: dict[str, Any], expected: str
) -> None:
    steps = {"up": download(), "a": {"fn": f"{FN}.typed", "config": config}}
    assert error(steps) == f"steps.a.config.{expected.replace('{T}', f'{FN}.typed')}"


def test_values_of_the_declared_types_and_unchecked_annotations_compile() -> None:
    config = {
        "lr": 1, "steps": 2, "name": "${step:up}/x", "flag": False, "limit": None, "ratio": 0.5,
        "legacy": None, "items": ["not", "checked"], "anything": {"a": 1}, "where": 3,
        "either": "x", "untyped": [1],
    }  # fmt: skip
    paths = {"a": {"fn": f"{FN}.typed", "config": {"name": Path("/data")}}}
    assert compile_steps({"steps": paths})  # a Path from Python passes for a str
    spec = compiled({"up": download(), "a": {"fn": f"{FN}.typed", "config": config}})["a"]
    assert spec.config["lr"] == 1
    # an annotation get_type_hints can't resolve (a TYPE_CHECKING import): nothing is checked
    compiled({"a": {"fn": f"{FN}.unresolvable", "config": {"n": "x", "d": "y"}}})
    # a class attribute: its annotations are checked like a function's
    assert error({"a": {"fn": f"{FN}.Trainer.train", "config": {"lr": "fast"}}}) == (
        f"steps.a.config.lr: 'fast' is not a number ({FN}.Trainer.train declares lr: float)"
    )


def test_the_shipped_experiments_compile_with_their_declared_types() -> None:
    """conf/experiment/*.yaml against experiments/*.py: every value fits its annotation."""
    from confpipe.config.schema import register

    register()
    conf_dir = Path(__file__).resolve().parents[1] / "conf"
    with initialize_config_dir(config_dir=str(conf_dir), version_base=None):
        for experiment in ("tokenize", "train"):
            cfg = compose("config", overrides=[f"+experiment={experiment}"])
            assert compile_steps(cfg)
            bad = compose(
                "config",
                overrides=[f"+experiment={experiment}", "steps.tokenize.config.batch_size=lots"],
            )
            with pytest.raises(ConfigError, match=r"^steps.tokenize.config.batch_size: 'lots' is"):
                compile_steps(bad)


# ---- resources -----------------------------------------------------------------------------


def test_resources_are_parsed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOKEN", "secret")  # the local backend reads secret_env from here
    spec = compiled(
        with_resources(
            cpu=2, memory="16GiB", disk="50GB", timeout="1h30m", spot=True, max_retries=2,
            env={"KEY": "value"}, secret_env={"TOKEN": "projects/p/secrets/t"},
            pip_extras=["tokenize"], machine_type="n2-standard-8",
        )
    )["a"]  # fmt: skip
    assert spec.resources == Resources(
        cpu=2, memory=16 * 2**30, disk=50 * 10**9, timeout=5400, spot=True, max_retries=2,
        env={"KEY": "value"}, secret_env={"TOKEN": "projects/p/secrets/t"},
        pip_extras=("tokenize",), machine_type="n2-standard-8",
    )  # fmt: skip
    assert compiled({"a": download()})["a"].resources is None
    assert compiled(with_resources())["a"].resources == Resources()


@pytest.mark.parametrize(
    ("resources", "expected"),
    [
        ({"memory": "16 gigs"}, ".memory: '16 gigs' is not a size; use e.g. 512MiB, 16GiB"),
        ({"disk": "lots"}, ".disk: 'lots' is not a size; use e.g. 512MiB, 16GiB"),
        ({"timeout": "2 hours"}, ".timeout: '2 hours' is not a duration; use e.g. 90s, 30m, 2h"),
        ({"cpu": 0}, ".cpu: must be a positive number of CPUs, got 0.0"),
        ({"cpu": -2}, ".cpu: must be a positive number of CPUs, got -2.0"),
        ({"memory": "-1GiB"}, ".memory: must be positive, got '-1GiB'; use e.g. 512MiB, 16GiB"),
        ({"memory": 0}, ".memory: must be positive, got 0; use e.g. 512MiB, 16GiB"),
        ({"memory": 16}, ".memory: 16 has no unit; write e.g. 16GiB, 16MiB or 16B (bytes)"),
        ({"memory": "16"}, ".memory: '16' has no unit; write e.g. 16GiB, 16MiB or 16B (bytes)"),
        ({"disk": 1.5}, ".disk: 1.5 has no unit; write e.g. 1.5GiB, 1.5MiB or 1.5B (bytes)"),
        ({"timeout": -5}, ".timeout: must be positive, got -5; use e.g. 30m, 2h"),
        ({"max_retries": -1}, ".max_retries: must be an integer >= 0, got -1"),
        ({"gpu": {"type": "nvidia-l4", "count": 0}}, ".gpu.count: must be an integer >= 1, got 0"),
        (
            {"gpu": {"type": "nvidia-l4"}, "tpu": "v5litepod-8"},
            ": set either gpu or tpu, not both (remove steps.a.resources.gpu or .tpu)",
        ),
        ({"gpu": {"count": 1}}, ".gpu.type: missing; set it to an accelerator type, e.g. "
         "nvidia-l4"),
        ({"gpu": {"type": " "}}, ".gpu.type: must be an accelerator type such as nvidia-l4"),
        ({"tpu": ""}, ".tpu: must be a TPU type such as v5litepod-8, got ''"),
        ({"machine_type": ""}, ".machine_type: must be a machine type such as n2-standard-8"),
        ({"memory": "1e400GiB"}, ".memory: '1e400GiB' is not a whole number of bytes; use e.g."),
        ({"timeout": "nan"}, ".timeout: 'nan' is not a duration; use e.g. 90s, 30m, 2h"),
        ({"cpu": "nan"}, ".cpu: must be a positive number of CPUs, got nan"),
        ({"cpu": "inf"}, ".cpu: must be a positive number of CPUs, got inf"),
    ],
)  # fmt: skip
def test_bad_resources_name_the_key(resources: dict[str, Any], expected: str) -> None:
    assert error(with_resources(**resources)).startswith(f"steps.a.resources{expected}")


@pytest.mark.parametrize(
    ("step", "expected"),
    [
        ({"fnn": "m.f"}, "steps.a.fnn: unknown key (did you mean 'fn'?); valid keys: fn, "
         "config, resources, version, output_path"),
        ({"resources": {"cpus": 2}}, "steps.a.resources.cpus: unknown key (did you mean 'cpu'?); "
         "valid keys: cpu, memory, disk, gpu, tpu, spot, max_retries, timeout, env, secret_env, "
         "pip_extras, machine_type"),
        ({"resources": {"gpu": {"typ": "l4"}}}, "steps.a.resources.gpu.typ: unknown key (did you "
         "mean 'type'?); valid keys: type, count"),
        ({"resources": {"cpu": "abc"}}, "steps.a.resources.cpu: 'abc' is not a number"),
        ({"resources": {"cpu": True}}, "steps.a.resources.cpu: True is not a number"),
        ({"resources": {"cpu": None}}, "steps.a.resources.cpu: null is not a number"),
        ({"resources": {"max_retries": 1.5}}, "steps.a.resources.max_retries: 1.5 is not an "
         "integer"),
        ({"resources": {"max_retries": "x"}}, "steps.a.resources.max_retries: 'x' is not an "
         "integer"),
        ({"resources": {"spot": "maybe"}}, "steps.a.resources.spot: 'maybe' is not true or false"),
        ({"resources": {"spot": 0.5}}, "steps.a.resources.spot: 0.5 is not true or false"),
        ({"resources": {"gpu": "l4"}}, "steps.a.resources.gpu: 'l4' is not a mapping with keys "
         "type, count or null"),
        ({"resources": {"gpu": {"type": "l4", "count": "two"}}}, "steps.a.resources.gpu.count: "
         "'two' is not an integer"),
        ({"resources": {"tpu": ["v5"]}}, "steps.a.resources.tpu: ['v5'] is not a string or null"),
        ({"resources": {"env": ["A=1"]}}, "steps.a.resources.env: ['A=1'] is not a mapping; e.g. "
         "steps.a.resources.env={KEY:value}"),
        ({"resources": {"env": {"A": None}}}, "steps.a.resources.env.A: null is not a string"),
        ({"resources": {"secret_env": {"A": {"b": 1}}}}, "steps.a.resources.secret_env.A: "
         "{'b': 1} is not a string"),
        ({"resources": {"pip_extras": "tokenize"}}, "steps.a.resources.pip_extras: 'tokenize' is "
         "not a list; e.g. steps.a.resources.pip_extras=[a,b]"),
        ({"resources": 4}, "steps.a.resources: 4 is not a mapping with keys cpu, memory, disk, "
         "gpu, tpu, spot, max_retries, timeout, env, secret_env, pip_extras, machine_type or null"),
        ({"config": 3}, "steps.a.config: 3 is not a mapping; e.g. steps.a.config={KEY:value}"),
        ({"config": {1: "x"}}, "steps.a.config.1: keys must be strings, got 1; quote it in YAML"),
        ({"version": ["v1"]}, "steps.a.version: ['v1'] is not a string or null"),
        ({"output_path": {"p": 1}}, "steps.a.output_path: {'p': 1} is not a string or null"),
        ({"output_path": " "}, "steps.a.output_path: must not be empty; remove it to write under "
         "{prefix}/a-HASH"),
    ],
)  # fmt: skip
def test_steps_are_checked_against_the_schema(step: dict[str, Any], expected: str) -> None:
    """Steps are plain data in RunConf: the compiler gives each key and type one line."""
    steps = {"a": {"fn": f"{FN}.anything", **step}}
    assert error(steps) == expected
    with pytest.raises(ConfigError) as info:  # the same from plain data
        compile_steps({"steps": steps})
    assert str(info.value) == expected


def test_a_step_that_is_not_a_mapping_is_refused() -> None:
    assert error({"a": None}) == (
        "steps.a: null is not a mapping with keys fn, config, resources, version, output_path"
    )
    assert error({"a": "m.f"}).startswith("steps.a: 'm.f' is not a mapping with keys fn, ")


def test_values_are_converted_as_omegaconf_converts_typed_ones() -> None:
    """What composed against typed steps compiles alike (and hashes alike: version is a str)."""
    resources = {"cpu": "2", "max_retries": "3", "spot": "yes", "env": {"N": 1, "B": True},
                 "secret_env": None, "pip_extras": None}  # fmt: skip
    steps = {"a": download(version=1, resources=resources)}
    (spec,) = compile_steps(conf(steps), backend=LocalBackend(cpu=4, memory=2**30))
    assert spec.version == "1"
    assert spec == compiled({"a": download(version="1")})["a"]
    assert spec.resources == Resources(
        cpu=2.0, max_retries=3, spot=True, env={"N": "1", "B": "True"}
    )
    for spot, expected in [("off", False), ("n", False), (1, True), ("0", False), (True, True)]:
        (spec,) = compile_steps(conf({"a": download(resources={"spot": spot})}))
        assert spec.resources is not None and spec.resources.spot is expected


def test_resources_the_local_backend_cannot_serve_fail_at_compile_time() -> None:
    """The wording is LocalBackend.check's; the compiler must call it for every step."""
    assert error(with_resources(tpu="v5litepod-8")).startswith(
        "step 'a': resources.tpu needs backend=gcp"
    )
    assert error(with_resources(gpu={"type": "nvidia-l4"}), backend={"gpus": 0}) == (
        "step 'a': resources.gpu.count=1 is more than the 0 GPU(s) of the local backend "
        "(backend.gpus=[]); lower it, set backend.gpus or use backend=gcp"
    )
    assert error(with_resources(cpu=4), backend={"cpu": 2}).startswith(
        "step 'a': resources.cpu=4 is more than the local backend's budget of 2 CPUs"
    )


def test_yaml_resources_win_over_remote_and_remote_ones_are_checked_too() -> None:
    message = error({"a": {"fn": f"{FN}.huge"}})
    assert message.startswith("step 'a': resources.cpu=10000 is more than the local backend's")
    assert message.endswith(f" (resources from @remote on {FN}.huge)")
    spec = compiled({"a": {"fn": f"{FN}.huge", "resources": {"cpu": 1}}})["a"]
    assert spec.resources == Resources(cpu=1)
    assert step_resources(spec.resources, spec.fn) == Resources(cpu=1)


def test_gpu_resources_compile_for_a_backend_that_serves_them() -> None:
    class GpuBackend(LocalBackend):
        def check(self, step: str, resources: Resources) -> str:
            return "gpu box"

    steps = with_resources(gpu={"type": "nvidia-l4", "count": 2}, spot=True)
    (spec,) = compile_steps(conf(steps), backend=GpuBackend())
    assert spec.resources is not None and spec.resources.gpu == GPU("nvidia-l4", 2)


# ---- through Hydra's compose ---------------------------------------------------------------


def compose_and_compile_error(*overrides: str) -> str:
    with pytest.raises(ConfigError) as info:
        compile_steps(composed(*overrides))
    message = str(info.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize("plus", ["", "+"])
def test_command_line_overrides_can_add_steps_and_resources_blocks(plus: str) -> None:
    """Steps are plain data: an override adds a whole step, or a block to a step without one."""
    specs = compile_steps(
        composed(
            "+experiment=tokenize",
            f"{plus}steps.new.fn={FN}.tokenize",
            f"{plus}steps.new.config.corpus=${{step:download}}/more",
            f"{plus}steps.download.resources.cpu=1",
            f"{plus}steps.download.resources.spot=true",
            f"{plus}steps.tokenize.resources.max_retries=2",
        )
    )
    by = {s.name: s for s in specs}
    assert [s.name for s in specs] == ["download", "tokenize", "new"]
    assert by["new"].fn is compilefns.tokenize
    assert by["new"].config == {"corpus": Ref(by["download"], "/more")}
    assert by["download"].resources == Resources(cpu=1, spot=True)
    assert by["tokenize"].resources == Resources(
        cpu=1, memory=512 * 2**20, timeout=5400, max_retries=2
    )


def test_keys_added_past_the_schema_are_refused_with_a_suggestion() -> None:
    for plus in ("", "+"):
        assert compose_and_compile_error(
            "+experiment=tokenize", f"{plus}steps.tokenize.resources.cpus=2"
        ).startswith("steps.tokenize.resources.cpus: unknown key (did you mean 'cpu'?); valid ")
    assert compose_and_compile_error("+experiment=tokenize", "steps.tokenize.fnn=x") == (
        "steps.tokenize.fnn: unknown key (did you mean 'fn'?); "
        "valid keys: fn, config, resources, version, output_path"
    )
    assert compose_and_compile_error(
        "+experiment=tokenize", "steps.tokenize.resources.gpu.typ=l4"
    ) == (
        "steps.tokenize.resources.gpu.typ: unknown key (did you mean 'type'?); "
        "valid keys: type, count"
    )
    assert compose_and_compile_error("+experiment=tokenize", "steps.tokenize.config.vocabb=3") == (
        "steps.tokenize.config.vocabb: tests.compilefns.tokenize() has no parameter 'vocabb' "
        "(did you mean 'vocab'?); it takes: corpus, vocab (remove the key, or give the "
        "function **kwargs)"
    )
    assert compose_and_compile_error("+experiment=typo") == (
        "steps.train.resources.cpus: unknown key (did you mean 'cpu'?); valid keys: cpu, memory, "
        "disk, gpu, tpu, spot, max_retries, timeout, env, secret_env, pip_extras, machine_type"
    )
    with pytest.raises(ConfigError, match=r"^steps.a.fnn: unknown key \(did you mean 'fn'\?\)"):
        compile_steps({"steps": {"a": {"fnn": f"{FN}.download"}}})


def test_wrong_types_from_the_command_line_name_the_key() -> None:
    assert compose_and_compile_error(
        "+experiment=tokenize", "steps.tokenize.resources.cpu=four"
    ) == ("steps.tokenize.resources.cpu: 'four' is not a number")
    assert compose_and_compile_error("+experiment=tokenize", "steps.tokenize.resources.gpu=l4") == (
        "steps.tokenize.resources.gpu: 'l4' is not a mapping with keys type, count or null"
    )
    assert compose_and_compile_error("+experiment=tokenize", "steps.new.fn=[a]") == (
        "steps.new.fn: ['a'] is not a string"
    )
    assert compose_and_compile_error("+experiment=tokenize", "steps.new.config.corpus=x") == (
        "steps.new.fn: missing; set it to the step function's dotted path, "
        "e.g. experiments.tokenize.tokenize"
    )


def test_an_override_under_a_misspelled_step_name_is_caught() -> None:
    """``steps.tokenze.config.vocab=3`` adds a step "tokenze" that has no fn: say why."""
    assert compose_and_compile_error("+experiment=tokenize", "steps.tokenze.config.vocab=3") == (
        "steps.tokenze: a step without fn (did you mean step 'tokenize'? an override under a "
        "step name the config doesn't have adds that step); fix the name or set steps.tokenze.fn"
    )


# ---- backend_for and run_options -----------------------------------------------------------


def test_backend_for_builds_the_local_backend_with_its_budget() -> None:
    backend = backend_for(conf({}, backend={"cpu": 3, "memory": "2GiB"}))
    assert isinstance(backend, LocalBackend)
    assert (backend.cpu, backend.memory) == (3.0, 2 * 2**30)
    assert isinstance(backend_for(conf({})), LocalBackend)


@pytest.mark.parametrize(
    ("backend", "expected"),
    [
        ({"kind": "gpc"}, "backend.kind: unknown backend 'gpc' (did you mean 'gcp'?); "
         "backends: local, gcp"),
        ({"kind": "gcp"}, "backend.kind: 'gcp' needs GcpConf settings, not BackendConf; choose "
         "the backend with backend=gcp (the config group), not backend.kind=gcp"),
        ({"cpu": 0}, "backend.cpu: must be a positive number of CPUs, got 0.0"),
        ({"memory": "lots"}, "backend.memory: 'lots' is not a size; use e.g. 512MiB, 16GiB"),
    ],
)  # fmt: skip
def test_backend_errors(backend: dict[str, Any], expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        backend_for(conf({}, backend=backend))
    assert str(info.value) == expected


def test_run_options_are_built_from_the_config() -> None:
    cfg = conf(
        {},
        prefix="/data/out",
        dry_run=True,
        run_only=["tok*"],
        force_run_failed=False,
        max_concurrent=4,
        detach=True,
        lock={"heartbeat_interval": 5, "lease_timeout": 20},
    )
    backend = LocalBackend(cpu=1, memory=2**30)
    assert run_options(cfg, backend=backend) == RunOptions(
        prefix="/data/out",
        dry_run=True,
        run_only=("tok*",),
        force_run_failed=False,
        max_concurrent=4,
        detach=True,
        lock_options=LockOptions(5, 20),
        backend=backend,
    )
    assert isinstance(run_options(conf({})).backend, LocalBackend)


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({"max_concurrent": 0}, "max_concurrent: must be at least 1, got 0"),
        ({"run_only": [""]}, "run_only[0]: '' is not a step name or shell glob; "
         "e.g. run_only=[train_tokenizer] or run_only=[train_*]"),
        ({"run_only": {"a": 1}}, "run_only: {'a': 1} is not a step name, a shell glob or a list "
         "of them; e.g. run_only=[train_tokenizer,eval] or run_only=train_*"),
        ({"lock": {"lease_timeout": 10}}, "lock.heartbeat_interval: must be positive and smaller "
         "than lock.lease_timeout (got 30 and 10); e.g. heartbeat_interval=30, lease_timeout=90"),
        ({"prefix": ""}, "prefix: must not be empty; use a local folder or an fsspec URL"),
        ({"prefix": "${step:a}"}, "prefix: ${step:a} is only allowed in a step's config (where "
         "it passes a's output path and adds an edge), not in a run option"),
    ],
)  # fmt: skip
def test_run_option_errors(options: dict[str, Any], expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        run_options(conf({}, **options))
    assert str(info.value) == expected


def test_unknown_run_options_added_past_the_schema_are_refused() -> None:
    cfg = conf({})
    OmegaConf.set_struct(cfg, False)
    cfg.max_concurent = 3
    with pytest.raises(ConfigError, match=r"^max_concurent: unknown key \(did you mean 'max_conc"):
        run_options(cfg)


# ---- scale ---------------------------------------------------------------------------------


def test_ten_thousand_steps_compile() -> None:
    """10,000 steps, each referring to one of a few roots (timed in the report, not here)."""
    steps: dict[str, Any] = {f"root{i}": download(config={"url": f"u{i}"}) for i in range(3)}
    for i in range(10_000 - 3):
        steps[f"s{i}"] = tokenize(f"${{step:root{i % 3}}}/part", version=str(i % 2))
    specs = compile_steps({"steps": steps})
    assert len(specs) == 10_000
    assert [s.name for s in specs[:3]] == ["root0", "root1", "root2"]
    roots = specs[:3]
    assert all(s.config == {"corpus": Ref(roots[i % 3], "/part")} for i, s in enumerate(specs[3:]))
    assert len({s.identity for s in specs}) == 10_000


def test_a_long_chain_compiles_without_recursion() -> None:
    steps: dict[str, Any] = {"s0": download()}
    for i in range(1, 5_000):
        steps[f"s{i}"] = tokenize(f"${{step:s{i - 1}}}")
    specs = compile_steps({"steps": dict(reversed(steps.items()))})
    assert [s.name for s in specs] == [f"s{i}" for i in range(5_000)]
    assert specs[-1].dependencies == (specs[-2],)
