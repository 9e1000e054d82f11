"""BEIR-layout datasets: load, write, round trip, fingerprints and clear errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from rag_app.ir.beir import (
    BeirDataset,
    DatasetError,
    available_splits,
    fingerprint,
    load_beir,
)
from rag_app.ir.beir_write import write_beir

TINY = Path(__file__).parent / "fixtures" / "beir_tiny"


def test_load_tiny_fixture():
    ds = load_beir(TINY)
    assert ds.name == "beir_tiny"
    assert ds.split == "test"
    assert len(ds.corpus) == 30
    assert len(ds.queries) == 16  # only the test split's queries
    assert ds.qrels["t01"] == {"p01": 2, "p02": 1}
    assert ds.corpus["p01"]["title"] == "Asthma"
    assert available_splits(TINY) == ["test", "train"]
    train = load_beir(TINY, split="train")
    assert set(train.queries) == {"r01", "r02", "r03", "r04"}


def test_round_trip(tmp_path):
    ds = load_beir(TINY)
    ds.query_metadata["t01"] = {"qtype": "symptoms"}
    ds.corpus["p02"]["metadata"] = {"source": "hand-written"}
    out = write_beir(ds, tmp_path / "copy")
    again = load_beir(out, name="beir_tiny")
    assert again.corpus == ds.corpus
    assert again.queries == ds.queries
    assert again.qrels == ds.qrels
    assert again.query_metadata["t01"] == {"qtype": "symptoms"}
    # the written files load identically, so the fingerprint of a second copy matches
    write_beir(again, tmp_path / "copy2")
    assert fingerprint(tmp_path / "copy") == fingerprint(tmp_path / "copy2")


def test_write_without_corpus_and_plain_text_docs(tmp_path):
    ds = {"queries": {"q1": "hello?"}, "qrels": {"q1": {"docs/a.md": 1}}}
    write_beir(ds, tmp_path / "nocorpus", split="dev")
    loaded = load_beir(tmp_path / "nocorpus", split="dev")
    assert loaded.corpus == {} and loaded.qrels == {"q1": {"docs/a.md": 1}}
    ds2 = {"queries": {"q1": "x"}, "qrels": {"q1": {"d": 1}}, "corpus": {"d": "text"}}
    loaded2 = load_beir(write_beir(ds2, tmp_path / "plain"))
    assert loaded2.corpus["d"] == {"title": "", "text": "text", "metadata": {}}


def test_write_rejects_inconsistent_data(tmp_path):
    with pytest.raises(ValueError, match="not in queries"):
        write_beir({"queries": {}, "qrels": {"q": {"d": 1}}}, tmp_path / "a")
    with pytest.raises(ValueError, match="not in corpus"):
        write_beir(
            {"queries": {"q": "x"}, "qrels": {"q": {"d": 1}}, "corpus": {"e": "t"}}, tmp_path / "b"
        )
    with pytest.raises(ValueError, match="tabs or newlines"):
        write_beir({"queries": {"q\t1": "x"}, "qrels": {"q\t1": {"d": 1}}}, tmp_path / "c")


def test_fingerprint_changes_with_data(tmp_path):
    copy = tmp_path / "ds"
    shutil.copytree(TINY, copy)
    before = fingerprint(copy)
    (copy / "README.md").write_text("changed")  # READMEs are not data
    assert fingerprint(copy) == before
    with (copy / "qrels" / "test.tsv").open("a") as f:
        f.write("t02\tp01\t1\n")
    assert fingerprint(copy) != before


def _broken(tmp_path: Path, file: str, content: str) -> Path:
    root = tmp_path / "broken"
    shutil.copytree(TINY, root)
    (root / file).write_text(content)
    return root


@pytest.mark.parametrize(
    ("file", "content", "message"),
    [
        (
            "queries.jsonl",
            '{"_id": "t01", "text": "ok"}\n{not json\n',
            r"queries.jsonl:2: malformed JSON",
        ),
        ("queries.jsonl", '["a list"]\n', r"queries.jsonl:1: expected a JSON object"),
        ("queries.jsonl", '{"text": "no id"}\n', r"queries.jsonl:1: missing field '_id'"),
        ("queries.jsonl", '{"_id": "t01"}\n', r"queries.jsonl:1: missing field 'text'"),
        ("queries.jsonl", '{"_id": "t01", "text": 3}\n', r"field 'text' must be a string"),
        (
            "queries.jsonl",
            '{"_id": "t01", "text": "a"}\n{"_id": "t01", "text": "b"}\n',
            r"queries.jsonl:2: duplicate query id 't01' \(first at line 1\)",
        ),
        ("qrels/test.tsv", "t01\tp01\n", r"test.tsv:1: expected 3 tab-separated columns"),
        (
            "qrels/test.tsv",
            "query-id\tcorpus-id\tscore\nt01\tp01\thigh\n",
            r"test.tsv:2: score must be an integer",
        ),
        (
            "qrels/test.tsv",
            "t01\tp01\t1\nt01\tp01\t2\n",
            r"test.tsv:2: .* judged 2 here and 1 at line 1",
        ),
        ("qrels/test.tsv", "zz\tp01\t1\n", r"test.tsv:1: query-id 'zz' is not in queries.jsonl"),
        ("qrels/test.tsv", "t01\tp99\t1\n", r"test.tsv:1: corpus-id 'p99' is not in corpus.jsonl"),
        (
            "corpus.jsonl",
            '{"_id": "p01", "text": "a", "metadata": 3}\n',
            r"corpus.jsonl:1: field 'metadata' must be an object",
        ),
    ],
)
def test_malformed_files_name_file_and_line(tmp_path, file, content, message):
    root = _broken(tmp_path, file, content)
    with pytest.raises(DatasetError, match=message):
        load_beir(root)


def test_missing_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="dataset folder not found"):
        load_beir(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match=r"available splits: \['test', 'train'\]"):
        load_beir(TINY, split="dev")


def test_tolerated_variants(tmp_path):
    root = tmp_path / "variants"
    shutil.copytree(TINY, root)
    # numeric ids, float-integer scores, blank lines, a BOM, an exact duplicate row, no header
    (root / "queries.jsonl").write_text('\ufeff{"_id": 1, "text": "one"}\n\n', encoding="utf-8")
    (root / "qrels" / "test.tsv").write_text("1\tp01\t1.0\n1\tp01\t1\n")
    ds = load_beir(root)
    assert ds.queries == {"1": "one"} and ds.qrels == {"1": {"p01": 1}}
    assert isinstance(ds, BeirDataset) and ds.summary()["n_qrels"] == 1
    json.loads((root / "corpus.jsonl").read_text().splitlines()[0])


def test_reused_query_ids(tmp_path):
    """An id reused for different questions (as in medquad-small) is resolved or refused."""
    root = tmp_path / "dups"
    shutil.copytree(TINY, root)
    with (root / "queries.jsonl").open("a") as f:
        f.write(
            json.dumps(
                {"_id": "t06", "text": "What is psoriasis?", "metadata": {"focus": "Psoriasis"}}
            )
            + "\n"
        )
        f.write(json.dumps({"_id": "t01", "text": "What are the symptoms of asthma?"}) + "\n")
    lines = (root / "queries.jsonl").read_text().splitlines()
    lines[5] = json.dumps(
        {
            "_id": "t06",
            "text": "Which joint does gout usually affect?",
            "metadata": {"focus": "Gout"},
        }
    )
    (root / "queries.jsonl").write_text("\n".join(lines) + "\n")
    with (root / "qrels" / "test.tsv").open("a") as f:
        f.write("t06\tp29\t1\n")
    with pytest.raises(DatasetError, match="duplicate query id 't06'"):
        load_beir(root)
    dropped = load_beir(root, on_duplicate_query="drop")
    assert "t06" not in dropped.queries and "t06" not in dropped.qrels
    assert "t01" in dropped.queries  # an identical repeat is harmless
    fixed = load_beir(root, on_duplicate_query="disambiguate")
    assert fixed.qrels["t06#1"] == {"p09": 2} and fixed.queries["t06#2"] == "What is psoriasis?"
    assert fixed.qrels["t06#2"] == {"p29": 1}
    assert fixed.repaired["t06"].startswith("split")
