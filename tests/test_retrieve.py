"""Retrievers, fusion math, filters before fusion, reranking (trained heads only), factory."""

from __future__ import annotations

import json

import pytest
from _retrieval_data import by_text, make_chunks, make_settings, write_workspace

from rag_app import index
from rag_app.filters import Filter, FilterError, parse_filter
from rag_app.fusion import rrf_scores, weighted_scores
from rag_app.retrieve import (
    HybridRetriever,
    RerankedRetriever,
    RerankerUnavailableError,
    Retriever,
    build_retriever,
    load_corpus,
)
from rag_app.store import chroma
from rag_app.store.chroma import NotIndexedError
from rag_app.types import Chunk, Hit


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    chroma.forget_clients()
    settings = make_settings(tmp_path_factory.mktemp("retrieve") / "ws")
    chunks = make_chunks()
    write_workspace(settings, chunks)
    index.run(settings, progress=False)
    yield settings, chunks
    chroma.forget_clients()


# --- fusion math ----------------------------------------------------------------------------


class _Fixed:
    """A stand-in retriever returning a fixed ranking (for hand-checked fusion math)."""

    def __init__(self, stage: str, ranking: list[tuple[str, float]]):
        self.stage = stage
        self.ranking = ranking

    def retrieve(self, query, k=5, filters=None):
        return [
            Hit(Chunk(cid, "d", cid), scores={self.stage: s}, ranks={self.stage: r})
            for r, (cid, s) in enumerate(self.ranking[:k], start=1)
        ]


def test_rrf_matches_hand_computed_example():
    # bm25: a, b, c   dense: b, d, a   (rrf_k = 60)
    # a: 1/61 + 1/63 = 0.032266   b: 1/62 + 1/61 = 0.032522
    # c: 1/63 = 0.015873          d: 1/62 = 0.016129      -> b, a, d, c
    bm25 = _Fixed("bm25", [("a", 9.0), ("b", 5.0), ("c", 1.0)])
    dense = _Fixed("dense", [("b", 0.9), ("d", 0.8), ("a", 0.7)])
    hits = HybridRetriever(bm25, dense, fusion="rrf", rrf_k=60, candidates=3).retrieve("q", k=4)
    assert [h.chunk.id for h in hits] == ["b", "a", "d", "c"]
    assert hits[0].scores["fused"] == pytest.approx(1 / 62 + 1 / 61)
    assert hits[1].scores["fused"] == pytest.approx(1 / 61 + 1 / 63)
    assert hits[2].scores["fused"] == pytest.approx(1 / 62)
    assert hits[3].scores["fused"] == pytest.approx(1 / 63)
    # Every stage's score and rank survive fusion.
    a = hits[1]
    assert a.scores == pytest.approx({"bm25": 9.0, "dense": 0.7, "fused": 1 / 61 + 1 / 63})
    assert a.ranks == {"bm25": 1, "dense": 3, "fused": 2}
    assert hits[2].ranks == {"dense": 2, "fused": 3}
    assert rrf_scores([["x", "y"], ["y"]], rrf_k=1) == {"x": 0.5, "y": 1 / 3 + 1 / 2}


def test_weighted_fusion_min_max_normalises_each_list():
    # bm25 a=9 b=5 c=1 -> 1, .5, 0 ; dense b=.9 d=.8 a=.7 -> 1, .5, 0 ; w = 0.25 dense
    fused = weighted_scores({"a": 9, "b": 5, "c": 1}, {"b": 0.9, "d": 0.8, "a": 0.7}, 0.25)
    assert fused == pytest.approx({"a": 0.75, "b": 0.25 + 0.375, "c": 0.0, "d": 0.125})
    bm25 = _Fixed("bm25", [("a", 9.0), ("b", 5.0), ("c", 1.0)])
    dense = _Fixed("dense", [("b", 0.9), ("d", 0.8), ("a", 0.7)])
    hybrid = HybridRetriever(bm25, dense, fusion="weighted", dense_weight=0.25, candidates=3)
    assert [h.chunk.id for h in hybrid.retrieve("q", k=4)] == ["a", "b", "d", "c"]
    assert weighted_scores({"a": 2.0}, {}, 0.5) == {"a": 0.5}


# --- filters --------------------------------------------------------------------------------


def test_parse_filter_forms():
    flt = parse_filter(["department=Stores", "doc_type=manual,policy", "effective_date>=2024"])
    assert [c.op for c in flt.conditions] == ["eq", "in", "gte"]
    assert flt.matches({"department": "Stores", "doc_type": "policy", "effective_date": "2024-02"})
    assert not flt.matches(
        {"department": "Stores", "doc_type": "policy", "effective_date": "2023-12-31"}
    )
    assert parse_filter([]) is None and parse_filter(None) is None
    assert parse_filter("effective_date<=2025").matches({"effective_date": "2025-12-31"})
    assert not parse_filter("effective_date<2025").matches({"effective_date": "2025-01-01"})
    assert parse_filter("revision>2").matches({"revision": 3})
    assert parse_filter("urgent=true").matches({"urgent": True})
    assert parse_filter("access!=restricted").matches({})  # no access field: readable
    assert Filter.from_dict({"doc_type": ["a", "b"]}) == parse_filter("doc_type=b,a")
    for bad in ("department", "x>=soon", "=x", "$where=1", "a="):
        with pytest.raises(FilterError):
            parse_filter(bad)


def test_filters_apply_before_fusion(workspace):
    settings, _ = workspace
    hybrid = build_retriever(settings, mode="hybrid", rerank=False)
    hybrid.candidates = 3  # tiny candidate lists: post-filtering would leave nothing
    flt = parse_filter(["department=Stores"])
    hits = hybrid.retrieve("hydraulic pump torque bolts", k=3, filters=flt)
    assert len(hits) == 3
    assert all(h.chunk.metadata["department"] == "Stores" for h in hits)
    for mode in ("bm25", "dense"):
        r = build_retriever(settings, mode=mode, rerank=False)
        got = r.retrieve(
            "hydraulic fluid cracks", k=10, filters=parse_filter("effective_date<2025")
        )
        assert got and all(h.chunk.metadata["effective_date"] < "2025" for h in got)
    nothing = hybrid.retrieve("pump", k=5, filters=parse_filter("department=Nobody"))
    assert nothing == []


# --- real retrieval -------------------------------------------------------------------------


def test_modes_return_hits_with_stage_scores(workspace):
    settings, chunks = workspace
    torque = by_text(chunks, "Torque the pump")
    dense = build_retriever(settings, mode="dense", rerank=False)
    assert isinstance(dense, Retriever)
    hits = dense.retrieve("how tight should the pump bolts be", k=3)
    assert hits[0].chunk.id == torque.id
    assert set(hits[0].scores) == {"dense"} and hits[0].ranks == {"dense": 1}

    bm25 = build_retriever(settings, mode="bm25", rerank=False)
    assert "NW-F-160" in bm25.retrieve("NW-F-160", k=1)[0].chunk.text

    hybrid = build_retriever(settings, mode="hybrid", rerank=False)
    hits = hybrid.retrieve("torque for the pump mounting bolts", k=5)
    assert hits[0].chunk.id == torque.id
    assert {"bm25", "dense", "fused"} <= set(hits[0].scores)
    assert [h.ranks["fused"] for h in hits] == [1, 2, 3, 4, 5]
    assert hits[0].score == hits[0].scores["fused"]


def test_retrievers_share_loaded_chunks_and_models(workspace):
    settings, _ = workspace
    a = build_retriever(settings, mode="hybrid", rerank=False)
    b = build_retriever(settings, mode="dense", rerank=False)
    assert a.dense.corpus is b.corpus is load_corpus(settings)
    assert a.dense.embedder is b.embedder


def test_unindexed_model_names_the_index_command(workspace, tmp_path):
    settings, _ = workspace
    from rag_app.embedder import Embedder

    run = tmp_path / "models" / "ft-run"
    Embedder.load("all-MiniLM-L6-v2", device="cpu").model.save(str(run))
    with pytest.raises(NotIndexedError, match=f"rag-app index --model {run}"):
        build_retriever(settings, model=str(run), mode="dense")


# --- reranking ------------------------------------------------------------------------------


def _train_tiny_cross_encoder(path, kind="reranker"):
    """A few optimisation steps on the bundled MiniLM: enough to move the head off its init."""
    import torch
    from sentence_transformers import CrossEncoder

    from rag_app.models import resolve_embedder

    ce = CrossEncoder(resolve_embedder("all-MiniLM-L6-v2").location, num_labels=1, max_length=64)
    model = ce.transformers_model if hasattr(ce, "transformers_model") else ce.model
    pairs = [
        ("pump bolt torque", "Torque the pump mounting bolts to 25 Nm.", 1.0),
        ("pump bolt torque", "Tyre pressure is checked cold.", 0.0),
        ("brake wear pin", "Replace the brake when the wear pin is flush.", 1.0),
        ("brake wear pin", "Sealant kits expire after eighteen months.", 0.0),
    ]
    # Only the head trains (the encoder is frozen): seconds, not minutes, on a CPU.
    head = [p for name, p in model.named_parameters() if name.startswith("classifier.")]
    for param in model.parameters():
        param.requires_grad_(False)
    for param in head:
        param.requires_grad_(True)
    optimizer = torch.optim.AdamW(head, lr=1e-2)
    batch = ce.tokenizer(
        [q for q, _, _ in pairs],
        [p for _, p, _ in pairs],
        padding=True,
        truncation=True,
        max_length=64,
        return_tensors="pt",
    )
    for _ in range(10):
        logits = model(**batch).logits.view(-1)
        labels = torch.tensor([y for _, _, y in pairs])
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, labels)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.eval()
    ce.save(str(path))
    (path / "run.json").write_text(
        json.dumps({"run_id": path.name, "kind": kind, "created": "2026-01-01T00:00:00"})
    )
    return path


@pytest.fixture(scope="module")
def trained_reranker(workspace):
    settings, _ = workspace
    return _train_tiny_cross_encoder(settings.models_dir / "reranker-tiny")


def test_untrained_or_missing_rerankers_are_refused(workspace, tmp_path):
    from sentence_transformers import CrossEncoder

    from rag_app.models import resolve_embedder
    from rag_app.rerank import load_reranker

    settings, _ = workspace
    off, reason = load_reranker(settings)
    assert off is None and "no reranker configured" in reason

    bi_encoder = resolve_embedder("all-MiniLM-L6-v2").location
    s = settings.model_copy(
        update={"models": settings.models.model_copy(update={"reranker": bi_encoder})}
    )
    off, reason = load_reranker(s)
    assert off is None and "not a cross-encoder" in reason

    untrained = tmp_path / "untrained"
    CrossEncoder(bi_encoder, num_labels=1).save(str(untrained))
    s = settings.model_copy(
        update={"models": settings.models.model_copy(update={"reranker": str(untrained)})}
    )
    off, reason = load_reranker(s)
    assert off is None and "untrained classification head" in reason

    with pytest.raises(RerankerUnavailableError, match="no reranker configured"):
        build_retriever(settings, mode="bm25", rerank=True)
    quiet = build_retriever(settings, mode="bm25", rerank=None)
    assert not isinstance(quiet, RerankedRetriever)
    assert any("reranking off" in n for n in quiet.notes)


def test_auto_reranker_reranks_with_trained_head(workspace, trained_reranker):
    from rag_app.rerank import load_reranker

    settings, _ = workspace
    s = settings.model_copy(
        update={"models": settings.models.model_copy(update={"reranker": "auto"})}
    )
    reranker, reason = load_reranker(s)
    assert reranker is not None and "reranker-tiny" in reason
    retriever = build_retriever(s, mode="hybrid", rerank=True)
    assert isinstance(retriever, RerankedRetriever)
    hits = retriever.retrieve("pump bolt torque", k=3)
    assert len(hits) == 3
    assert [h.ranks["rerank"] for h in hits] == [1, 2, 3]
    assert all({"fused", "rerank"} <= set(h.scores) for h in hits)
    rerank_scores = [h.scores["rerank"] for h in hits]
    assert rerank_scores == sorted(rerank_scores, reverse=True)
    assert hits[0].score == hits[0].scores["rerank"]


def test_auto_skips_a_reranker_that_did_not_beat_no_rerank(tmp_path):
    import json

    from rag_app.config import load_settings
    from rag_app.rerank import find_trained_reranker, load_reranker

    settings = load_settings(workspace=tmp_path / "ws", models={"reranker": "auto"})
    run = settings.models_dir / "rr-worse"
    run.mkdir(parents=True)
    (run / "run.json").write_text(json.dumps({"kind": "reranker", "beats_no_rerank": False}))
    assert find_trained_reranker(settings) is None
    reranker, reason = load_reranker(settings)
    assert reranker is None and "rr-worse" in reason and "did not beat" in reason
