"""Step identity: prefix-free, sensitive to config, version and deps, blind to resources."""

from __future__ import annotations

import math

import pytest

from confpipe import GPU, ConfigError, Ref, Resources, StepSpec
from confpipe.engine.spec import Template
from tests import stepfns


def step(name: str = "tok", **kw: object) -> StepSpec:
    kw.setdefault("fn", stepfns.noop)
    kw.setdefault("config", {"vocab": 1024})
    return StepSpec(name, **kw)  # type: ignore[arg-type]


def test_identity_is_prefix_free() -> None:
    s = step()
    assert s.output_under("/a/b") == f"/a/b/tok-{s.hash}"
    assert s.output_under("gs://bucket/x/") == f"gs://bucket/x/tok-{s.hash}"
    assert step().hash == s.hash


def test_identity_changes_with_config_version_and_dependency() -> None:
    base = step()
    assert step(config={"vocab": 2048}).hash != base.hash
    assert step(version="v2").hash != base.hash
    dl1 = StepSpec("download", stepfns.noop, {"url": "a"})
    dl2 = StepSpec("download", stepfns.noop, {"url": "b"})
    assert step(config={"corpus": dl1}).hash != step(config={"corpus": dl2}).hash
    assert step(config={"corpus": Ref(dl1, "/x")}).hash != step(config={"corpus": Ref(dl1)}).hash
    assert step(deps=(dl1,)).hash != base.hash
    assert step(fn=stepfns.add).hash != base.hash


def test_identity_ignores_resources_and_env() -> None:
    base = step()
    big = step(resources=Resources(cpu=64, memory=2**40, gpu=GPU("nvidia-l4"), env={"K": "v"}))
    assert big.hash == base.hash
    assert big == base


def test_config_key_order_does_not_matter() -> None:
    assert step(config={"a": 1, "b": 2}).hash == step(config={"b": 2, "a": 1}).hash


def test_refs_resolve_to_dependency_output_and_record_edges() -> None:
    dl = StepSpec("download", stepfns.noop)
    tok = step(config={"corpus": Ref(dl, "/shards"), "all": [dl, {"x": dl}]})
    assert tok.dependencies == (dl,)
    resolved = tok.resolved_config("/p")
    assert resolved["corpus"] == f"/p/download-{dl.hash}/shards"
    assert resolved["all"] == [f"/p/download-{dl.hash}", {"x": f"/p/download-{dl.hash}"}]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({1, 2}, "set"),
        (object(), "object"),
        (math.nan, "nan"),
        ({1: "int key"}, "non-string key"),
    ],
)
def test_values_without_canonical_json_fail_loudly(value: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        _ = step(config={"bad": value}).hash


@pytest.mark.parametrize(
    "name", ["", " ", "a b", "a/b", "..", ".", "../x", "a\tb", "-x", "x" * 200]
)
def test_step_names_that_could_escape_the_prefix_are_refused(name: str) -> None:
    with pytest.raises(ConfigError, match="invalid step name"):
        step(name)


def test_functions_without_import_path_are_refused() -> None:
    with pytest.raises(ConfigError, match="top level"):
        _ = StepSpec("x", lambda output_path: None).hash


def test_resources_validation() -> None:
    """The Python API's checks are the config's, word for word (one place checks both)."""
    with pytest.raises(ConfigError, match="either gpu or tpu"):
        Resources(gpu=GPU("nvidia-l4"), tpu="v5litepod-8")
    with pytest.raises(ConfigError, match=r"resources\.cpu: must be a positive number of CPUs"):
        Resources(cpu=0)
    with pytest.raises(ConfigError, match=r"resources\.memory: must be positive"):
        Resources(memory=-1)


def test_resources_take_unit_strings_as_the_yaml_does() -> None:
    """``Resources(memory="4GiB")`` is 4GiB in bytes, not a TypeError from ``"4GiB" <= 0``."""
    parsed = Resources(memory="4GiB", disk="50GB", timeout="1h30m")  # type: ignore[arg-type]
    assert parsed == Resources(memory=4 * 2**30, disk=50 * 10**9, timeout=5400)
    assert Resources(memory=2**30) == Resources(memory="1GiB")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("resources", "expected"),
    [
        ({"memory": "4"}, "resources.memory: '4' has no unit; write e.g. 4GiB, 4MiB or 4B (bytes)"),
        ({"memory": "lots"}, "resources.memory: 'lots' is not a size; use e.g. 512MiB, 16GiB"),
        ({"memory": "-1GiB"}, "resources.memory: must be positive, got '-1GiB'; use e.g. 512MiB, "
         "16GiB"),
        ({"memory": [4]}, "resources.memory: must be bytes or a size such as '16GiB', got [4]"),
        ({"memory": True}, "resources.memory: must be bytes or a size such as '16GiB', got True"),
        ({"timeout": "soon"}, "resources.timeout: 'soon' is not a duration; use e.g. 90s, 30m, "
         "2h, 1h30m"),
        ({"timeout": object}, "resources.timeout: must be seconds or a duration such as '2h', "
         "got <class 'object'>"),
    ],
)  # fmt: skip
def test_resources_refuse_what_is_not_an_amount(
    resources: dict[str, object], expected: str
) -> None:
    with pytest.raises(ConfigError) as info:
        Resources(**resources)  # type: ignore[arg-type]
    assert str(info.value) == expected


@pytest.mark.parametrize(
    ("memory", "shown"),
    [
        (2**30, "1GiB"),
        (512 * 2**20, "512MiB"),
        (int(1.5 * 2**30), "1.5GiB"),
        (16 * 10**9, "14.9GiB"),
        (16, "16B"),
        (1536, "1.5KiB"),
        (3 * 2**50, "3PiB"),
        (2**70, "1048576PiB"),
    ],
)
def test_resources_describe_sizes_in_a_readable_unit(memory: int, shown: str) -> None:
    assert Resources(cpu=4, memory=memory).describe() == f"cpu=4 memory={shown}"


def test_templates_mix_text_and_several_steps() -> None:
    a, b = StepSpec("a", stepfns.noop), StepSpec("b", stepfns.noop)
    joined = step(config={"both": Template((a, "/x,", b, "/y"))})
    assert set(joined.dependencies) == {a, b}
    assert joined.resolved_config("/p")["both"] == f"/p/{a.identity}/x,/p/{b.identity}/y"
    assert step(config={"both": Template((a, "/x,", b, "/z"))}).hash != joined.hash


def test_a_gpu_checks_its_type_and_count() -> None:
    with pytest.raises(ConfigError, match=r"gpu\.count: must be an integer >= 1, got 0"):
        GPU("nvidia-l4", 0)
    with pytest.raises(ConfigError, match=r"gpu\.type: must be an accelerator type"):
        GPU(" ")


def test_a_config_block_names_its_units_where_the_python_api_may_give_bytes() -> None:
    assert Resources(memory=16).memory == 16
    with pytest.raises(ConfigError, match=r"resources\.memory: 16 has no unit"):
        Resources.from_config({"memory": 16})
    parsed = Resources.from_config({"memory": "2GiB", "gpu": {"type": "nvidia-l4", "count": 2}})
    assert parsed == Resources(memory=2 * 2**30, gpu=GPU("nvidia-l4", 2))
    with pytest.raises(ConfigError, match=r"resources\.gpu\.count: must be an integer >= 1"):
        Resources.from_config({"gpu": {"type": "nvidia-l4", "count": 0}})
