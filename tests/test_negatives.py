"""Hard-negative mining with the real bundled MiniLM on the beir_tiny passages."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import FIXTURES

from finetune import negatives
from finetune.split import Pair, Passages

TINY = FIXTURES / "beir_tiny"


@pytest.fixture(scope="module")
def base_model():
    from rag_app.embedder import Embedder

    return Embedder.load("all-MiniLM-L6-v2", device="cpu").model


@pytest.fixture(scope="module")
def tiny():
    """Passages grouped by topic (title) as documents, and the grade-2 test pairs."""
    passages = Passages()
    for line in (TINY / "corpus.jsonl").read_text().splitlines():
        row = json.loads(line)
        passages.add(row["_id"], f"{row['title']}\n{row['text']}", row["title"])
    queries = {
        r["_id"]: r["text"]
        for r in map(json.loads, (TINY / "queries.jsonl").read_text().splitlines())
    }
    pairs = []
    for line in (TINY / "qrels" / "test.tsv").read_text().splitlines()[1:]:
        qid, pid, grade = line.split("\t")
        if grade == "2":
            pairs.append(Pair(queries[qid], pid, passages.doc[pid]))
    return passages, pairs


def _settings(settings_factory, **finetune):
    return settings_factory(finetune=finetune)


def test_negatives_skip_top_ranks_own_document_and_margin(settings_factory, base_model, tiny):
    passages, pairs = tiny
    margin = 0.05
    settings = _settings(
        settings_factory,
        negatives={"range_min": 2, "range_max": 20, "relative_margin": margin},
    )
    rows, report = negatives.mine(pairs, passages, base_model, settings, num_negatives=2)
    assert len(rows) == len(pairs) == report.queries
    assert report.mined + report.random_fill > 0

    ids = passages.ids()
    texts = [passages.text[i] for i in ids]
    pvecs = base_model.encode(texts, normalize_embeddings=True)
    for pair, row in zip(pairs, rows, strict=True):
        assert row["anchor"] == pair.query
        assert row["positive"] == passages.text[pair.passage_id]
        negs = [row["negative_1"], row["negative_2"]]
        assert len(set(negs)) == 2
        qvec = base_model.encode([pair.query], normalize_embeddings=True)[0]
        scores = pvecs @ qvec
        order = [texts[i] for i in np.argsort(-scores, kind="stable")]
        pos_score = scores[texts.index(row["positive"])]
        for neg in negs:
            assert neg != row["positive"]
            assert passages.doc[ids[texts.index(neg)]] != pair.doc_id  # never a sibling
        if report.random_fill == 0:
            for neg in negs:
                assert order.index(neg) >= 2  # the top ranks are skipped
                assert scores[texts.index(neg)] < (1 - margin) * pos_score + 1e-5


def test_no_negatives_means_plain_pairs(settings_factory, base_model, tiny):
    passages, pairs = tiny
    rows, report = negatives.mine(
        pairs, passages, base_model, _settings(settings_factory), num_negatives=0
    )
    assert [set(r) for r in rows] == [{"anchor", "positive"}] * len(pairs)
    assert report.mined == report.random_fill == 0


def test_random_fill_keeps_every_pair_when_guards_reject_all(settings_factory, base_model, tiny):
    passages, pairs = tiny
    # Skip every rank of the 30 passages: nothing is mined, each negative is a random
    # passage of another topic.
    settings = _settings(settings_factory, negatives={"range_min": 30, "range_max": 31})
    rows, report = negatives.mine(pairs[:4], passages, base_model, settings, num_negatives=1)
    assert len(rows) == 4
    assert report.random_fill == 4
    for pair, row in zip(pairs[:4], rows, strict=True):
        pid = next(i for i in passages.ids() if passages.text[i] == row["negative_1"])
        assert passages.doc[pid] != pair.doc_id


def test_one_document_cannot_give_negatives(settings_factory, base_model):
    passages = Passages()
    passages.add("a", "Pump overhaul every 600 hours.", "doc")
    passages.add("b", "Pump removal needs four nuts.", "doc")
    pairs = [Pair("pump overhaul interval", "a", "doc")]
    with pytest.raises(ValueError, match="outside document"):
        negatives.mine(pairs, passages, base_model, _settings(settings_factory), num_negatives=1)
