"""Fusion as evidence chooses it: the ways of fusing, the choice, fusion.json, and the chat.

`rag-app finetune` measures every way of fusing BM25 and dense results on held-out
questions and records the best per model; `retrieval.fusion = "auto"` serves it, says
why, and falls back to RRF (saying so) where nothing was measured or the chunks changed.
"""

from __future__ import annotations

import json

import pytest
from test_train import tiny_chunks, tiny_settings  # noqa: F401  (fixture)

from finetune import adapter
from finetune import data as data_mod
from finetune.fusion_select import CHOICES, choose
from rag_app.fusion import FusionChoice, Measured, fuse, load_choices, record_choice, resolve

LEXICAL = [("a", 9.0), ("b", 5.0), ("c", 1.0)]
DENSE = [("b", 0.9), ("d", 0.8), ("a", 0.7)]


def test_each_way_of_fusing_ranks_as_defined():
    # one list alone: its own order; the rest (score 0) by their best rank in either list
    assert fuse(LEXICAL, DENSE, FusionChoice("dense"), 4) == ["b", "d", "a", "c"]
    assert fuse(LEXICAL, DENSE, FusionChoice("bm25"), 4) == ["a", "b", "d", "c"]
    # rrf: b 1/62+1/61 > a 1/61+1/63 > d 1/62 > c 1/63
    assert fuse(LEXICAL, DENSE, FusionChoice("rrf"), 4) == ["b", "a", "d", "c"]
    # weighted 0.25 on min-max scores: a .75, b .25 + .75 * .5 = .625, d .125, c 0
    assert fuse(LEXICAL, DENSE, FusionChoice("weighted", 0.25), 4) == ["a", "b", "d", "c"]
    assert fuse(LEXICAL, DENSE, FusionChoice("weighted", 0.9), 2) == ["b", "d"]
    with pytest.raises(ValueError, match="unknown fusion"):
        FusionChoice("max")
    with pytest.raises(ValueError, match="dense_weight"):
        FusionChoice("weighted", 1.5)
    assert FusionChoice.parse("weighted:0.3") == FusionChoice("weighted", 0.3)


def test_choice_is_the_best_mean_and_ties_go_to_the_simpler_way():
    scores = {c.key: 0.5 for c in CHOICES}
    assert choose(scores) == FusionChoice("dense")  # all equal: one list, no fusion
    scores["weighted:0.7"] = 0.61
    scores["rrf"] = 0.61
    assert choose(scores) == FusionChoice("rrf")  # tie: the parameter-free fusion
    scores["weighted:0.3"] = 0.62
    assert choose(scores) == FusionChoice("weighted", 0.3)


def test_recorded_choice_is_served_until_the_chunks_change(tmp_path):
    fallback = FusionChoice("rrf")
    choice, why = resolve(tmp_path, "all-MiniLM-L6-v2", "sha-1", fallback)
    assert choice == fallback and "no fusion measured" in why
    measured = Measured(FusionChoice("weighted", 0.7), 812, "synthetic validation", {}, "sha-1")
    record_choice(tmp_path, "all-MiniLM-L6-v2", measured)
    record_choice(
        tmp_path, "run-1", Measured(FusionChoice("bm25"), 30, "labelled guard", {}, "sha-1")
    )
    assert set(load_choices(tmp_path)) == {"all-MiniLM-L6-v2", "run-1"}
    choice, why = resolve(tmp_path, "all-MiniLM-L6-v2", "sha-1", fallback)
    assert choice == FusionChoice("weighted", 0.7)
    assert why == "weighted, dense weight 0.7, chosen on 812 synthetic validation questions"
    choice, why = resolve(tmp_path, "all-MiniLM-L6-v2", "sha-2", fallback)  # re-ingested
    assert choice == fallback and "predates the last ingest" in why
    (tmp_path / "fusion.json").write_text("{not json")
    assert resolve(tmp_path, "run-1", "sha-1", fallback)[0] == fallback  # broken: default


@pytest.mark.slow
def test_finetune_measures_fusion_on_real_questions_and_the_chat_serves_it(tiny_settings):  # noqa: F811
    from conftest import FIXTURES

    from rag_app.chat import ChatService, RetrieverChoice
    from rag_app.index import run as build_index
    from rag_app.retrieve import HybridRetriever, build_retriever, fusion_for

    ft = tiny_settings.finetune
    settings = tiny_settings.model_copy(
        update={"finetune": ft.model_copy(update={"method": "adapter"})}
    )
    build_index(settings, progress=False)
    default = FusionChoice("weighted", settings.retrieval.dense_weight)

    # synthetic queries only: nothing is chosen (they favour BM25), the default serves
    adapter.train_adapter(settings, data_mod.prepare(settings), name="synthetic", progress=False)
    record = json.loads((settings.models_dir / "synthetic" / "run.json").read_text())
    assert (
        record["fusion"]["source"] is None and "synthetic queries never" in record["fusion"]["note"]
    )
    assert load_choices(settings.workspace) == {}
    choice, why = fusion_for(settings, str(settings.models_dir / "synthetic"))
    assert choice == default and "no fusion measured" in why

    # real questions: beir_tiny's, held out by document; they choose for both models
    real = settings.model_copy(
        update={
            "finetune": settings.finetune.model_copy(
                update={"train_data": [FIXTURES / "beir_tiny"], "train_data_split": "test"}
            )
        }
    )
    data = data_mod.prepare(real)
    adapter.train_adapter(real, data, name="fused", progress=False)
    record = json.loads((settings.models_dir / "fused" / "run.json").read_text())
    fusion = record["fusion"]
    assert fusion["source"] == "held-out real"
    held_out = {p.query for p in data.guard}
    chosen = {}
    for role, key in (("base", settings.models.embedder), ("finetuned", "fused")):
        row = fusion[role]
        assert row["model"] == key and row["queries"] == len(held_out) >= 5
        assert set(row["ndcg"]) == {c.key for c in CHOICES}
        assert row["choice"] == choose(row["ndcg"]).key
        chosen[key] = FusionChoice.parse(row["choice"])
    assert {k: m.choice for k, m in load_choices(settings.workspace).items()} == chosen

    hybrid = build_retriever(settings, model=str(settings.models_dir / "fused"), rerank=False)
    assert isinstance(hybrid, HybridRetriever) and hybrid.choice == chosen["fused"]
    assert f"chosen on {len(held_out)} held-out real questions" in hybrid.why
    fixed = settings.model_copy(
        update={"retrieval": settings.retrieval.model_copy(update={"fusion": "rrf"})}
    )
    explicit = build_retriever(fixed, rerank=False)
    assert explicit.choice == FusionChoice("rrf") and "retrieval.fusion" in explicit.why

    service = ChatService(settings, load_llm=False)
    note = service.search_note("q", RetrieverChoice.of("baseline", "hybrid", rerank=False))
    assert note == f"hybrid: {fusion_for(settings)[1]}" and "held-out real" in note
    dense = RetrieverChoice.of("baseline", "dense", rerank=False)
    assert service.search_note("q", dense) == "dense only"
