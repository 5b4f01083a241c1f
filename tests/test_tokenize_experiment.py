"""The tokenize experiment's step functions, called directly on small local and memory:// data."""

from __future__ import annotations

import inspect
import itertools
import json
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fsspec
import numpy as np
import pytest
from tokenizers import Tokenizer

from experiments import tokenize as exp
from experiments.tokenize import download, tokenize, train_tokenizer

CONF = Path(__file__).parents[1] / "conf/experiment/tokenize.yaml"

TEXTS = {
    "a.txt": "The quick brown fox jumps over the lazy dog.\n" * 20,
    "sub/b.txt": "def f(x):\n    return x * 2  # doubles\n\n" * 15,
    "sub/deeper/c.txt": "héllo wörld ✓ 日本語 🙂\ttabs\r\nCRLF line\u2028sep\x00nul\n" * 5,
    "d.txt": "This text spells <|endoftext|> on purpose, and ends without newline",
}


def write_tree(root: str, files: dict[str, str | bytes]) -> None:
    """Write ``files`` (relative path -> content) under the fsspec URL ``root``."""
    fs, path = fsspec.core.url_to_fs(root)
    for name, content in files.items():
        data = content.encode() if isinstance(content, str) else content
        fs.makedirs(f"{path}/{name}".rsplit("/", 1)[0], exist_ok=True)
        fs.pipe_file(f"{path}/{name}", data)


def read_docs(output: str) -> list[dict[str, str]]:
    fs, path = fsspec.core.url_to_fs(output)
    docs = []
    for shard in sorted(fs.glob(f"{path}/shard-*.jsonl")):
        docs += [json.loads(line) for line in fs.cat_file(shard).decode().splitlines() if line]
    return docs


def read_docs_exact(output: str) -> list[dict[str, str]]:
    """Like read_docs but splits on b"\\n" only (U+2028 in a text must not split a line)."""
    fs, path = fsspec.core.url_to_fs(output)
    docs = []
    for shard in sorted(fs.glob(f"{path}/shard-*.jsonl")):
        docs += [json.loads(line) for line in fs.cat_file(shard).split(b"\n") if line]
    return docs


@pytest.fixture
def mem() -> Iterator[str]:
    """A fresh memory:// root, removed afterwards (the memory filesystem is process-global)."""
    root = f"memory://tok-{uuid.uuid4().hex[:8]}"
    yield root
    fs, path = fsspec.core.url_to_fs(root)
    if fs.exists(path):
        fs.rm(path, recursive=True)


@pytest.fixture
def corpus(tmp_path: Path) -> str:
    """A download output made from TEXTS."""
    write_tree(str(tmp_path / "src"), dict(TEXTS))
    out = str(tmp_path / "download")
    download(out, source=str(tmp_path / "src"), shard_docs=3)
    return out


@pytest.fixture
def tokenizer_dir(tmp_path: Path, corpus: str) -> str:
    out = str(tmp_path / "train")
    train_tokenizer(out, corpus=corpus, vocab_size=300, min_frequency=2)
    return out


# --------------------------------------------------------------------------------------------
# download


def test_download_local_dir_with_pattern(tmp_path: Path) -> None:
    files: dict[str, str | bytes] = {
        "a.txt": "alpha",
        "sub/b.txt": "beta",
        "sub/c.md": "not matched by the pattern",
        "empty.txt": "",
        ".hidden/x.txt": "hidden directory",
        "sub/.y.txt": "hidden file",
        "bad.txt": b"\xff\xfe not utf-8 \x80",
    }
    write_tree(str(tmp_path / "src"), files)
    out = tmp_path / "out"
    stats = download(str(out), source=str(tmp_path / "src"), pattern="**/*.txt", shard_docs=1)

    docs = read_docs(str(out))
    assert [d["id"] for d in docs] == ["a.txt", "sub/b.txt"]  # sorted, relative ids
    assert [d["text"] for d in docs] == ["alpha", "beta"]
    assert sorted(p.name for p in out.glob("shard-*.jsonl")) == [
        "shard-00000.jsonl",
        "shard-00001.jsonl",
    ]
    assert stats["documents"] == 2
    assert stats["shards"] == 2
    assert stats["bytes"] == len("alphabeta")
    assert stats["candidates"] == 4  # a, bad, empty, sub/b (hidden ones never match)
    assert stats["skipped_short"] == 1
    assert stats["skipped_undecodable"] == 1
    assert json.loads((out / "stats.json").read_text())["documents"] == 2

    # The default pattern (**/*) also takes the .md file; min_chars=0 keeps the empty file.
    stats = download(str(tmp_path / "all"), source=str(tmp_path / "src"), min_chars=0)
    ids = [d["id"] for d in read_docs(str(tmp_path / "all"))]
    assert ids == ["a.txt", "empty.txt", "sub/b.txt", "sub/c.md"]


def test_download_memory_glob_source_and_output(mem: str) -> None:
    write_tree(f"{mem}/src", {f"d{i}/f{i}.txt": f"text {i}" for i in range(5)})
    write_tree(f"{mem}/src", {"d9/skip.md": "not a txt"})
    stats = download(f"{mem}/out", source=f"{mem}/src/**/*.txt", max_docs=3, shard_docs=2)
    docs = read_docs(f"{mem}/out")
    assert [d["id"] for d in docs] == ["d0/f0.txt", "d1/f1.txt", "d2/f2.txt"]
    assert (stats["documents"], stats["shards"], stats["candidates"]) == (3, 2, 5)
    assert stats["pattern"] == "**/*.txt"
    assert stats["root"].startswith("memory://")
    assert fsspec.core.url_to_fs(stats["root"])[1] == fsspec.core.url_to_fs(f"{mem}/src")[1]

    # A single file is a source too.
    download(f"{mem}/one", source=f"{mem}/src/d3/f3.txt")
    assert read_docs(f"{mem}/one") == [{"id": "f3.txt", "text": "text 3"}]


def test_download_spread_sample_takes_a_cross_section(tmp_path: Path) -> None:
    files: dict[str, str | bytes] = {f"f{i:02d}.txt": f"doc {i}" for i in range(10)}
    files["f03.txt"] = ""  # unusable: its run's next file replaces it
    write_tree(str(tmp_path / "src"), files)
    src = str(tmp_path / "src")

    download(str(tmp_path / "first"), source=src, max_docs=3, sample="first")
    assert [d["id"] for d in read_docs(str(tmp_path / "first"))] == [
        "f00.txt",
        "f01.txt",
        "f02.txt",
    ]
    download(str(tmp_path / "spread"), source=src, max_docs=3, sample="spread")
    # Runs [0, 3), [3, 6), [6, 10): first usable file of each.
    assert [d["id"] for d in read_docs(str(tmp_path / "spread"))] == [
        "f00.txt",
        "f04.txt",
        "f06.txt",
    ]


def test_download_rerun_removes_stale_shards(tmp_path: Path) -> None:
    write_tree(str(tmp_path / "src"), {f"f{i}.txt": "x" for i in range(4)})
    out = tmp_path / "out"
    download(str(out), source=str(tmp_path / "src"), shard_docs=1)
    assert len(list(out.glob("shard-*.jsonl"))) == 4
    download(str(out), source=str(tmp_path / "src"), shard_docs=2)
    assert len(list(out.glob("shard-*.jsonl"))) == 2
    assert len(read_docs(str(out))) == 4


def test_download_rejects_bad_config(tmp_path: Path) -> None:
    write_tree(str(tmp_path / "src"), {"a.txt": "a"})
    out = str(tmp_path / "out")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        download(out, source=str(tmp_path / "missing"))
    with pytest.raises(FileNotFoundError, match="no files match"):
        download(out, source=str(tmp_path / "src"), pattern="*.rst")
    with pytest.raises(ValueError, match="glob source"):
        download(out, source=f"{tmp_path}/src/*.txt", pattern="*.txt")
    with pytest.raises(ValueError, match="sample"):
        download(out, source=str(tmp_path / "src"), sample="random")
    with pytest.raises(ValueError, match="max_docs"):
        download(out, source=str(tmp_path / "src"), max_docs=0)
    with pytest.raises(ValueError, match="none of the 1 files"):
        download(out, source=str(tmp_path / "src"), min_chars=2)


def test_download_stdlib_default_source(tmp_path: Path) -> None:
    stats = download(str(tmp_path / "out"), max_docs=5, sample="spread")
    docs = read_docs(str(tmp_path / "out"))
    assert stats["source"] == "stdlib"
    assert stats["candidates"] > 100  # every CPython ships hundreds of .py files
    assert len(docs) == stats["documents"] == 5
    assert all(d["id"].endswith(".py") and d["text"] for d in docs)
    assert not any("site-packages" in d["id"] or "__pycache__" in d["id"] for d in docs)
    assert [d["id"] for d in docs] == sorted(d["id"] for d in docs)


# --------------------------------------------------------------------------------------------
# train_tokenizer


def test_train_tokenizer_round_trips(tmp_path: Path, corpus: str) -> None:
    out = tmp_path / "train"
    stats = train_tokenizer(str(out), corpus=corpus, vocab_size=300, min_frequency=2)
    assert stats["documents"] == len(TEXTS)
    assert stats["requested_vocab_size"] == 300
    assert 257 < stats["vocab_size"] <= 300
    assert stats["merges"] == stats["vocab_size"] - 257  # 256 bytes + eos + merges
    assert stats["tokenizer"] == f"{out}/tokenizer.json"

    tok = Tokenizer.from_file(str(out / "tokenizer.json"))
    assert tok.token_to_id("<|endoftext|>") == stats["eos_id"]
    samples = [*TEXTS.values(), "", " leading space", "never seen: Ωμέγα ∮ 🦀\n\t\r\n  x"]
    for text in samples:
        ids = tok.encode(text, add_special_tokens=False).ids
        assert tok.decode(ids, skip_special_tokens=False) == text
    # Merges were learned: common text takes fewer tokens than bytes.
    text = TEXTS["a.txt"]
    assert len(tok.encode(text).ids) < len(text.encode()) / 2


def test_train_tokenizer_max_docs_and_validation(tmp_path: Path, corpus: str) -> None:
    stats = train_tokenizer(str(tmp_path / "t"), corpus=corpus, vocab_size=280, max_docs=2)
    assert stats["documents"] == 2
    with pytest.raises(ValueError, match="vocab_size"):
        train_tokenizer(str(tmp_path / "t"), corpus=corpus, vocab_size=256)
    with pytest.raises(FileNotFoundError, match="download step"):
        train_tokenizer(str(tmp_path / "t"), corpus=str(tmp_path / "nothing"))


# --------------------------------------------------------------------------------------------
# tokenize


def load_tokens(out: Path) -> tuple[list[np.ndarray[Any, Any]], list[np.ndarray[Any, Any]]]:
    tokens = [np.load(p) for p in sorted(out.glob("tokens-*.npy"))]
    offsets = [np.load(p) for p in sorted(out.glob("offsets-*.npy"))]
    return tokens, offsets


def test_tokenize_writes_consistent_shards(tmp_path: Path, corpus: str, tokenizer_dir: str) -> None:
    out = tmp_path / "tok"
    stats = tokenize(str(out), corpus=corpus, tokenizer=f"{tokenizer_dir}/tokenizer.json")
    tokens, offsets = load_tokens(out)
    docs = read_docs_exact(corpus)
    tok = Tokenizer.from_file(f"{tokenizer_dir}/tokenizer.json")
    eos = tok.token_to_id("<|endoftext|>")

    assert len(tokens) == len(offsets) == stats["shards"] == 2  # 4 docs, 3 per corpus shard
    assert all(t.dtype == np.uint16 for t in tokens)
    assert all(o.dtype == np.int64 for o in offsets)
    assert stats["dtype"] == "uint16"
    assert stats["documents"] == len(docs) == sum(len(o) - 1 for o in offsets)
    assert stats["tokens"] == sum(t.size for t in tokens)
    assert stats["text_tokens"] == stats["tokens"] - stats["documents"]
    assert stats["bytes"] == sum(len(d["text"].encode()) for d in docs)
    assert stats["bytes_per_token"] == pytest.approx(stats["bytes"] / stats["text_tokens"], 1e-3)
    assert stats["tokens_per_second"] > 0
    assert json.loads((out / "stats.json").read_text())["tokens"] == stats["tokens"]

    index = json.loads((out / "index.json").read_text())
    assert [s["tokens"] for s in index["shards"]] == [t.size for t in tokens]
    assert index["eos_id"] == eos

    decoded = []
    for t, o in zip(tokens, offsets, strict=True):
        assert o[0] == 0 and o[-1] == t.size
        assert (t[o[1:] - 1] == eos).all()  # every document ends with the separator
        assert int((t == eos).sum()) == len(o) - 1  # ... and only there
        for start, end in itertools.pairwise(o.tolist()):
            decoded.append(tok.decode(t[start : end - 1].tolist(), skip_special_tokens=False))
    # Byte-level BPE: decoding gives the documents back exactly, even the one that spells
    # <|endoftext|> (encoded as text, not as the separator).
    assert decoded == [d["text"] for d in docs]


def test_tokenize_accepts_the_train_step_dir_and_memory_urls(
    mem: str, corpus: str, tokenizer_dir: str
) -> None:
    write_tree(f"{mem}/tok", {"tokenizer.json": Path(tokenizer_dir, "tokenizer.json").read_text()})
    stats = tokenize(f"{mem}/out", corpus=corpus, tokenizer=f"{mem}/tok")
    fs, path = fsspec.core.url_to_fs(f"{mem}/out")
    with fs.open(f"{path}/tokens-00000.npy", "rb") as f:
        first = np.load(f)
    assert stats["documents"] == len(TEXTS)
    assert first.size == json.loads(fs.cat_file(f"{path}/index.json"))["shards"][0]["tokens"]
    with pytest.raises(ValueError, match="eos_token"):
        tokenize(f"{mem}/bad", corpus=corpus, tokenizer=tokenizer_dir, eos_token="<eos>")


def test_pipeline_is_deterministic(tmp_path: Path) -> None:
    write_tree(str(tmp_path / "src"), dict(TEXTS))

    def run(root: Path) -> dict[str, bytes]:
        download(str(root / "d"), source=str(tmp_path / "src"), shard_docs=2)
        train_tokenizer(str(root / "t"), corpus=str(root / "d"), vocab_size=300)
        tokenize(str(root / "k"), corpus=str(root / "d"), tokenizer=str(root / "t"))
        files = sorted(p for p in root.rglob("*") if p.is_file() and p.name != "stats.json")
        return {str(p.relative_to(root)): p.read_bytes() for p in files}

    first, second = run(tmp_path / "one"), run(tmp_path / "two")
    assert first == second
    assert {"d/shard-00001.jsonl", "t/tokenizer.json", "k/tokens-00001.npy"} <= set(first)


# --------------------------------------------------------------------------------------------
# the experiment's config


def test_experiment_yaml_matches_the_functions(tmp_path: Path) -> None:
    """Every YAML key is a parameter; the pipeline runs from the YAML (with small overrides)."""
    omegaconf = pytest.importorskip("omegaconf")
    assert CONF.read_text().startswith("# @package _global_\n")
    cfg = omegaconf.OmegaConf.load(CONF)
    steps = cfg.steps
    assert list(steps) == ["download", "train_tokenizer", "tokenize"]
    assert steps.tokenize.resources.cpu == 1
    for name, step in steps.items():
        module, _, fn_name = step.fn.rpartition(".")
        assert module == "experiments.tokenize"
        params = inspect.signature(getattr(exp, fn_name)).parameters
        assert set(step.config) <= set(params) - {"output_path"}, name

    # Replace ${step:X} by X's output path as the compiler does (textually here, so that no
    # global resolver is registered), shrink the run, and call the functions in order.
    outputs = {name: str(tmp_path / name) for name in steps}
    text = re.sub(r"\$\{step:(\w+)\}", lambda m: outputs[m[1]], CONF.read_text())
    cfg = omegaconf.OmegaConf.create(text)
    cfg.merge_with_dotlist(
        ["steps.download.config.max_docs=6", "steps.train_tokenizer.config.vocab_size=300"]
    )
    config = omegaconf.OmegaConf.to_container(cfg, resolve=True)
    results = {}
    for name, step in config["steps"].items():
        fn = getattr(exp, step["fn"].rpartition(".")[2])
        results[name] = fn(output_path=outputs[name], **step["config"])
    assert results["download"]["documents"] == 6
    assert results["train_tokenizer"]["vocab_size"] <= 300
    assert results["tokenize"]["documents"] == 6
    assert config["steps"]["tokenize"]["config"]["eos_token"] == "<|endoftext|>"
