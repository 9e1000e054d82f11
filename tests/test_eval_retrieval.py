"""Retrieval eval end to end on tests/fixtures/beir_tiny with the real MiniLM and Chroma.

The "fine-tuned" model is the bundled MiniLM with slightly perturbed token embeddings and a
run.json: different weights (so its own collection and different rankings) at no training cost.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from eval.retrieval import (
    TrainingOverlapError,
    _rank_ids,
    load_results,
    parse_config,
    run_retrieval_eval,
    summary_lines,
    training_queries,
)

TINY = Path(__file__).parent / "fixtures" / "beir_tiny"
LEAKED_QUERY = "How is asthma treated?"  # t02 in the test split


@pytest.fixture(scope="module")
def finetuned_model(tmp_path_factory) -> Path:
    import torch
    from safetensors.torch import load_file, save_file

    from rag_app.models import resolve_embedder

    src = resolve_embedder("all-MiniLM-L6-v2").path
    dst = tmp_path_factory.mktemp("models") / "tiny-ft"
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns(".cache"))
    weights = dst / "model.safetensors"
    tensors = load_file(str(weights))
    key = next(k for k in tensors if k.endswith("word_embeddings.weight"))
    generator = torch.Generator().manual_seed(0)
    tensors[key] = tensors[key] + 0.3 * torch.randn(tensors[key].shape, generator=generator)
    save_file(tensors, str(weights), metadata={"format": "pt"})
    train = dst / "train_queries.jsonl"
    train.write_text(json.dumps({"query": LEAKED_QUERY, "chunk_id": "p02"}) + "\n")
    (dst / "run.json").write_text(
        json.dumps(
            {"run_id": "tiny-ft", "kind": "embedder", "train_file": str(train), "base": "MiniLM"}
        )
    )
    return dst


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("evalws") / "workspace"


@pytest.fixture(scope="module")
def result(workspace, finetuned_model):
    from rag_app.config import load_settings

    settings = load_settings(workspace=workspace)
    lines: list[str] = []
    res = run_retrieval_eval(
        settings,
        TINY,
        configs=["bm25", "dense-base", "dense-finetuned", "hybrid-base", "hybrid-finetuned"],
        k=5,
        finetuned=finetuned_model,
        n_resamples=500,
        echo=lines.append,
    )
    res.echoed = lines
    return res


def test_parse_config():
    spec = parse_config("hybrid-finetuned+rerank")
    assert (spec.mode, spec.model, spec.rerank) == ("hybrid", "finetuned", True)
    assert parse_config("BM25").model is None
    for bad in ("dense", "bm25-base", "sparse-base"):
        with pytest.raises(ValueError, match="unknown retrieval configuration"):
            parse_config(bad)


class _Chunk:
    def __init__(self, cid, doc):
        self.id, self.doc_id = cid, doc


class _Hit:
    def __init__(self, cid, doc):
        self.chunk = _Chunk(cid, doc)


def test_rank_ids_maps_chunks_to_documents_keeping_first():
    hits = [_Hit("c1", "a.md"), _Hit("c2", "a.md"), _Hit("c3", "b.md"), _Hit("c4", "c.md")]
    assert _rank_ids(hits, "doc", 2) == ["a.md", "b.md"]
    assert _rank_ids(hits, "chunk", 3) == ["c1", "c2", "c3"]


def test_all_configurations_scored_on_held_out_queries(result):
    assert set(result.configs) == {
        "bm25",
        "dense-base",
        "dense-finetuned",
        "hybrid-base",
        "hybrid-finetuned",
    }
    # the leaked training query is dropped and counted, never scored
    assert result.dropped_training_overlap == 1
    assert "t02" not in result.queries
    assert any("dropped 1 of 16" in line for line in result.echoed)
    for cfg in result.configs.values():
        assert len(cfg.per_query) == 15
        assert set(cfg.mean) == set(result.metrics)
        assert all(len(r) <= 5 for r in cfg.rankings.values())
    # the fixture is easy: the base dense model finds nearly everything
    assert result.configs["dense-base"].mean["ndcg@10"] > 0.8
    assert result.configs["bm25"].mean["recall@5"] > 0.7
    assert result.dataset["source"] == "beir" and result.dataset["granularity"] == "chunk"
    assert "reranking off" in result.skipped_configs.get("hybrid-base+rerank", "reranking off")


def test_paired_comparisons_and_diff(result):
    pairs = {(c["base"], c["candidate"]) for c in result.comparisons}
    assert ("dense-base", "dense-finetuned") in pairs
    assert ("hybrid-base", "hybrid-finetuned") in pairs
    for cmp in result.comparisons:
        assert cmp["ci_low"] <= cmp["delta"] <= cmp["ci_high"]
        assert 0 < cmp["p_value"] <= 1
        assert cmp["wins"] + cmp["losses"] + cmp["ties"] == 15
    diffs = [
        d for d in result.diffs if (d["base"], d["candidate"]) == ("dense-base", "dense-finetuned")
    ]
    assert len(diffs) == 15
    assert any(d["entered"] for d in diffs)  # the perturbed model does rank differently
    for d in diffs:
        base_top, cand_top = set(d["base_top"]), set(d["candidate_top"])
        assert {x for x, _ in d["entered"]} == cand_top - base_top
        assert {x for x, _ in d["left"]} == base_top - cand_top


def test_saved_files_round_trip(result, workspace):
    data = load_results(result.out_dir)
    assert data["kind"] == "retrieval"
    assert len(data["per_query"]) == 5 * 15
    row = data["per_query"][0]
    assert {"config", "qid", "query", "scores", "top", "relevant"} <= row.keys()
    assert len(data["diff"]) == len(result.diffs)
    assert data["dataset"]["fingerprint"]
    assert data["models"]["finetuned"]["run"]["run_id"] == "tiny-ft"
    assert data["embedding_map"]["models"]["finetuned"]["points"]
    assert any("dense-finetuned vs dense-base" in line for line in summary_lines(data))
    # the user's workspace got no chunks: the dataset lives in its own namespace
    assert not (workspace / "chunks.jsonl").exists()
    assert Path(result.dataset["workspace"]).is_relative_to(workspace / "eval")


def test_refuses_training_overlap(workspace, finetuned_model):
    from rag_app.config import load_settings

    settings = load_settings(workspace=workspace)
    texts, sources = training_queries(settings, finetuned_model)
    assert "how is asthma treated" in texts and sources
    with pytest.raises(TrainingOverlapError, match="1 of 16"):
        run_retrieval_eval(
            settings, TINY, configs=["bm25"], finetuned=finetuned_model, on_overlap="refuse"
        )


def test_document_level_eval_on_workspace_chunks(tmp_path):
    """Shipped-corpus style qrels (document paths) against chunk hits, BM25 only."""
    from rag_app import chunkstore
    from rag_app.config import load_settings
    from rag_app.types import Chunk

    settings = load_settings(workspace=tmp_path / "ws", corpus=tmp_path / "corpus")
    texts = {
        "guides/pump.md": [
            "Hydraulic pump overhaul: drain the pump and remove the housing bolts.",
            "Pump overhaul torque: tighten the hydraulic pump housing bolts to 25 Nm.",
        ],
        "guides/valve.md": ["Relief valve inspection: check the valve seat for wear."],
        "policies/leave.md": ["Annual leave requests go to your manager two weeks ahead."],
    }
    chunks = [
        Chunk(id=f"{doc}#{i}", doc_id=doc, text=t)
        for doc, parts in texts.items()
        for i, t in enumerate(parts)
    ]
    settings.workspace.mkdir(parents=True)
    chunkstore.save(settings.chunks_path, settings.manifest_path, chunks, {"files": {}})
    eval_dir = tmp_path / "corpus" / "eval"
    (eval_dir / "qrels").mkdir(parents=True)
    (eval_dir / "queries.jsonl").write_text(
        json.dumps({"_id": "q1", "text": "hydraulic pump bolts torque"})
        + "\n"
        + json.dumps({"_id": "q2", "text": "how do I request annual leave"})
        + "\n"
    )
    (eval_dir / "qrels" / "test.tsv").write_text(
        "query-id\tcorpus-id\tscore\nq1\tguides/pump.md\t1\nq2\tpolicies/leave.md\t1\n"
    )
    res = run_retrieval_eval(settings, None, configs=["bm25"], k=3, save=False)
    assert res.dataset["source"] == "corpus-eval" and res.dataset["granularity"] == "doc"
    ranking = res.configs["bm25"].rankings["q1"]
    assert ranking[0] == "guides/pump.md"
    assert len(ranking) == len(set(ranking))  # each document once, at its best chunk
    assert res.configs["bm25"].mean["mrr@10"] == pytest.approx(1.0)


def test_the_leak_guard_key_keeps_non_latin_questions():
    """A training question in Cyrillic or Greek must still match its eval copy (the ASCII-only
    key turned every such question into "" and the guard caught none of them)."""
    from eval.sets import norm_query

    ru = "Какой момент затяжки гайки оси?"
    assert norm_query(ru) == norm_query("какой  момент затяжки гайки оси") != ""
    assert norm_query("Πίεση ελαστικών;") != norm_query(ru)
    assert norm_query("What torque, for the AXLE nut?") == norm_query(
        "what torque for the axle nut"
    )
