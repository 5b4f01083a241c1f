"""``run_only``: exact step names or shell globs, one bare name or a list; an override Hydra's
grammar can't read is one line saying how to quote it."""

from __future__ import annotations

from pathlib import Path

import pytest

from confpipe import ConfigError, StepSpec, run
from confpipe.config.compiler import run_options
from confpipe.config.explain import explain
from tests import stepfns


def steps() -> list[StepSpec]:
    download = StepSpec("download", stepfns.noop, {"n": 1})
    tokenizer = StepSpec("train_tokenizer", stepfns.noop, {"up": download})
    tokenize = StepSpec("tokenize", stepfns.noop, {"up": download, "tok": tokenizer})
    return [download, tokenizer, tokenize, StepSpec("train_lm", stepfns.noop, {"up": tokenize})]


def targets(tmp_path: Path, run_only: str | list[str]) -> list[str]:
    plan = run(steps(), prefix=str(tmp_path), dry_run=True, run_only=run_only).plan
    return [p.spec.name for p in plan]


def test_a_name_selects_that_step_only_not_every_name_containing_it(tmp_path: Path) -> None:
    assert targets(tmp_path, ["tokenize"]) == ["download", "train_tokenizer", "tokenize"]
    assert targets(tmp_path, ["download"]) == ["download"]


def test_a_shell_glob_selects_the_names_it_matches(tmp_path: Path) -> None:
    assert targets(tmp_path, ["train_*"]) == [
        "download", "train_tokenizer", "tokenize", "train_lm"
    ]  # fmt: skip
    assert targets(tmp_path, ["train_tok?nizer"]) == ["download", "train_tokenizer"]


def test_one_bare_name_is_taken_as_a_list_of_one(tmp_path: Path) -> None:
    assert targets(tmp_path, "train_tokenizer") == ["download", "train_tokenizer"]


def test_a_letter_no_longer_selects_every_step(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=(
        r"^run_only: \['e'\] matches no step; steps: download, tokenize, train_lm, "
        r"train_tokenizer \(run_only takes exact step names or shell globs, e.g. train_\*\)$"
    )):  # fmt: skip
        targets(tmp_path, ["e"])


def test_the_config_takes_a_bare_name_or_a_list() -> None:
    assert run_options({"run_only": "train_*"}).run_only == ("train_*",)
    assert run_options({"run_only": ["a", "b*"]}).run_only == ("a", "b*")
    assert run_options({"run_only": None}).run_only is None


@pytest.mark.parametrize(
    ("override", "quoted"),
    [("run_only=[^b$]", """'run_only=["^b$"]'"""), ("run_only=^b$", """'run_only="^b$"'""")],
)
def test_an_override_hydra_cannot_read_is_one_line_saying_how_to_quote_it(
    override: str, quoted: str
) -> None:
    from hydra.core.override_parser.overrides_parser import OverridesParser

    with pytest.raises(Exception) as info:
        OverridesParser.create().parse_overrides([override])
    message = explain(info.value)
    assert message is not None and "\n" not in message
    assert message.startswith(f"override {override!r}: Hydra's override grammar can't read it")
    assert f"quote the value, e.g. {quoted} (in the shell)" in message


@pytest.mark.slow
def test_the_cli_takes_a_bare_name(tmp_path: Path) -> None:
    from tests.test_cli import cli

    out = cli("+experiment=tokenize", "run_only=train_tokenizer", "dry_run=true", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert [line.split()[0] for line in out.stdout.splitlines()[1:-1]] == [
        "download", "train_tokenizer"
    ]  # fmt: skip
