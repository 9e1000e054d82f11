"""Adapter-only fine-tuning: a query-side transform on the frozen MiniLM embedder.

The same beir_tiny workspace as test_train (structural queries, beir_tiny's own test queries
as the labelled guardrail). The adapter must learn (memorise codes the base model cannot
know), serve from the base model's collection without a re-index, round-trip through
safetensors, and refuse to run on other base weights.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from test_train import tiny_chunks, tiny_settings  # noqa: F401  (fixture)

from finetune import adapter
from finetune import data as data_mod
from finetune.publish import existing_run
from finetune.split import Pair, Passages
from rag_app import query_adapter
from rag_app.config import updated_finetune
from rag_app.query_adapter import AdapterError, QueryAdapter
from rag_app.runs import RunKind


def test_identity_adapter_changes_nothing_and_bad_files_are_refused(tmp_path):
    rng = np.random.default_rng(0)
    q = rng.normal(size=(5, 8)).astype(np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    eye = {"weight": np.eye(8, dtype=np.float32), "bias": np.zeros(8, dtype=np.float32)}
    query_adapter.save(tmp_path / "a", "linear", eye, base_model="m", base_fingerprint="m-1")
    loaded = QueryAdapter.load(tmp_path / "a")
    assert loaded.kind == "linear" and loaded.dim == 8
    np.testing.assert_allclose(loaded.apply(q), q, atol=1e-6)
    with pytest.raises(AdapterError, match="expects 8-dimensional"):
        loaded.apply(np.ones((1, 4), dtype=np.float32))

    mlp = {
        "w1": rng.normal(size=(4, 8)).astype(np.float32),
        "b1": np.zeros(4, dtype=np.float32),
        "w2": np.zeros((8, 4), dtype=np.float32),
        "b2": np.zeros(8, dtype=np.float32),
    }
    query_adapter.save(tmp_path / "m", "mlp", mlp, base_model="m", base_fingerprint="m-1")
    np.testing.assert_allclose(QueryAdapter.load(tmp_path / "m").apply(q), q, atol=1e-6)

    (tmp_path / "a" / query_adapter.WEIGHTS_FILE).write_bytes(b"not safetensors")
    with pytest.raises(AdapterError, match="unreadable weights"):
        QueryAdapter.load(tmp_path / "a")
    config = json.loads((tmp_path / "m" / query_adapter.CONFIG_FILE).read_text())
    config["dim"] = 16
    (tmp_path / "m" / query_adapter.CONFIG_FILE).write_text(json.dumps(config))
    with pytest.raises(AdapterError, match="do not fit dim 16"):
        QueryAdapter.load(tmp_path / "m")


def test_ranking_metrics_match_hand_computed_values():
    docs = np.eye(3, dtype=np.float32)
    q = np.array([[0.1, 0.9, 0.0], [1.0, 0.0, 0.0]], dtype=np.float32)
    m = adapter.ranking_metrics(q, docs, [{0}, {0}], k=2)
    # query 1: doc 0 second (RR 1/2, nDCG 1/log2(3)); query 2: first
    assert m["mrr@2"] == pytest.approx((0.5 + 1.0) / 2)
    assert m["ndcg@2"] == pytest.approx((1 / np.log2(3) + 1.0) / 2)
    assert m["accuracy@1"] == pytest.approx(0.5)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["linear", "mlp"])
def test_adapter_learns_what_the_base_model_cannot(settings_factory, kind):
    """Codes like "form 003" mean nothing to MiniLM; the adapter maps them to their passage."""
    settings = settings_factory(finetune={"batch_size": 8, "adapter": {"kind": kind, "epochs": 60}})
    chunks = tiny_chunks()
    passages = Passages.from_chunks(chunks)
    pairs = [Pair(f"form {7 * i + 3:03d}", c.id, c.doc_id) for i, c in enumerate(chunks)]
    data = data_mod.TrainData(chunks, passages, pairs, pairs)
    report = adapter.train_adapter(settings, data, name=f"memorise-{kind}", progress=False)
    m = report.metrics
    assert m["val_mrr@10"] > m["val_mrr@10_base"] + 0.2
    assert report.recommended and not report.verified
    record = json.loads((report.path / "run.json").read_text())
    assert record["kind"] == "embedder" and record["method"] == "adapter"
    assert record["best_epoch"] >= 1 and record["history"][0]["epoch"] == 0
    # the report names the run as run.json does, fresh or reused (issue 29)
    fingerprint = data_mod.data_fingerprint(settings, data, "adapter")
    again = existing_run(settings, fingerprint, RunKind.EMBEDDER)
    assert again is not None and again.reused
    assert report.summary().startswith(f"embedder ({kind} query adapter) memorise-{kind}:")
    assert again.summary().startswith(f"embedder ({kind} query adapter) memorise-{kind}:")


@pytest.mark.slow
def test_adapter_run_serves_from_the_base_index_without_reindexing(tiny_settings):  # noqa: F811
    from rag_app.embedder import Embedder
    from rag_app.index import run as build_index
    from rag_app.retrieve import build_retriever
    from rag_app.runs import list_runs

    settings = tiny_settings.model_copy(
        update={
            "finetune": updated_finetune(
                tiny_settings.finetune, adapter={"epochs": 20, "learning_rate": 5e-3}
            )
        }
    )
    build_index(settings, progress=False)
    data = data_mod.prepare(settings)
    report = adapter.train_adapter(settings, data, name="tiny-adapter", progress=False)
    run_dir = settings.models_dir / "tiny-adapter"
    assert report.path == run_dir
    assert {p.name for p in run_dir.iterdir()} >= {
        "adapter.json",
        "adapter.safetensors",
        "run.json",
        "README.md",
        "train.jsonl",
        "val.jsonl",
    }
    assert not any(p.suffix in (".bin", ".pt", ".pkl") for p in run_dir.iterdir())
    record = json.loads((run_dir / "run.json").read_text())
    assert record["verified"] is True  # beir_tiny's labelled queries were the guardrail
    for key in ("val_mrr@10", "val_mrr@10_base", "labelled_mrr@10", "labelled_mrr@10_base"):
        assert 0.0 <= record["metrics"][key] <= 1.0
    assert [r.name for r in list_runs(settings, kind="embedder")] == ["tiny-adapter"]

    base = Embedder.load("all-MiniLM-L6-v2", device="cpu")
    tuned = Embedder.load(str(run_dir), device="cpu")
    assert tuned.fingerprint == base.fingerprint and tuned.model is base.model
    assert tuned.name == "tiny-adapter" and tuned.query_adapter is not None
    text = ["asthma inhaler"]
    expected = QueryAdapter.load(run_dir).apply(base.encode_queries(text))
    np.testing.assert_allclose(tuned.encode_queries(text), expected, atol=1e-6)
    np.testing.assert_allclose(  # documents are the base model's, untouched
        tuned.encode_documents(text), base.encode_documents(text), atol=1e-6
    )

    # serves from the base collection: no index for the run was built, and none is needed
    retriever = build_retriever(settings, model=str(run_dir), mode="dense", rerank=False)
    hits = retriever.retrieve("what inhaler stops an asthma attack", k=3)
    assert hits and all(h.chunk.id for h in hits)
    again = build_index(settings, model=str(run_dir), progress=False)
    assert again.embedded == 0

    # an adapter for other weights is refused, with what to do
    config = json.loads((run_dir / "adapter.json").read_text())
    config["base_fingerprint"] = "all-MiniLM-L6-v2-000000000000"
    (run_dir / "adapter.json").write_text(json.dumps(config))
    with pytest.raises(AdapterError, match="retrain the adapter"):
        Embedder.load(str(run_dir), device="cpu")


def test_ui_label_says_what_is_known_of_a_runs_quality(tmp_path):
    from rag_app.chat import run_label
    from rag_app.runs import Run, RunRecord

    verified = Run(
        tmp_path,
        RunRecord(
            kind="embedder",
            name="a1",
            method="adapter",
            metrics={"labelled_mrr@10": 0.70, "labelled_mrr@10_base": 0.75},
            verified=True,
            recommended=False,
        ),
    )
    assert run_label(verified) == (
        "Fine-tuned (a1) · query adapter — labelled MRR@10 0.750 → 0.700, not recommended"
    )
    synthetic_only = Run(tmp_path, RunRecord(kind="embedder", name="f1", recommended=True))
    assert run_label(synthetic_only) == "Fine-tuned (f1) — unverified (synthetic validation only)"
    lost = Run(tmp_path, RunRecord(kind="embedder", name="f2", recommended=False))
    assert run_label(lost) == "Fine-tuned (f2) — not recommended (no gain on validation)"


@pytest.mark.slow
def test_recipe_selection_keeps_the_recipe_that_wins_on_the_guard(settings_factory):
    """LLM questions that point at the wrong passage lose on the guard: the structural-only
    recipe is served, and run.json, the card and `rag-app models` list both candidates."""
    from typer.testing import CliRunner

    from rag_app.cli import app

    settings = settings_factory(
        finetune={
            "batch_size": 8,
            "adapter": {"epochs": 40},
            "labelled_guard_min_queries": 5,
        }
    )
    chunks = tiny_chunks()
    passages = Passages.from_chunks(chunks)
    n = len(chunks)
    good = [
        Pair(f"form {7 * i + 3:03d}", c.id, c.doc_id, "structure:terms")
        for i, c in enumerate(chunks)
    ]
    wrong = [
        Pair(f"form {7 * i + 3:03d} please?", chunks[(i + 1) % n].id, c.doc_id, "llm:question")
        for i, c in enumerate(chunks)
    ]
    guard = [
        Pair(f"form {7 * i + 3:03d} please", c.id, c.doc_id, "labelled")
        for i, c in enumerate(chunks)
    ]
    data = data_mod.TrainData(chunks, passages, good + wrong, good, guard=guard)
    report = adapter.train_adapter(settings, data, name="selected", progress=False)
    record = json.loads((report.path / "run.json").read_text())
    assert [c["recipe"] for c in record["candidates"]] == ["llm+structural", "structural"]
    assert record["recipe"] == "structural"
    by = {c["recipe"]: c for c in record["candidates"]}
    assert by["structural"]["gain"] > by["llm+structural"]["gain"]
    assert record["guard"]["queries"] == n and record["verified"] and record["recommended"]
    assert "structural had the best guard ndcg@10 of 2 recipes" in record["selection"]
    assert "Recipe chosen on the guard" in (report.path / "README.md").read_text()
    served = [json.loads(line)["query"] for line in (report.path / "train.jsonl").open()]
    assert not any(q.endswith("?") for q in served)  # the winner's pairs, not the LLM's

    shown = CliRunner().invoke(app, ["models", "-w", str(settings.workspace)])
    assert "recipe structural: guard nDCG@10 +" in shown.output and "<- served" in shown.output

    off = settings.model_copy(
        update={"finetune": settings.finetune.model_copy(update={"select_recipe": False})}
    )
    plain = adapter.train_adapter(off, data, name="all-pairs", progress=False)
    plain_record = json.loads((plain.path / "run.json").read_text())
    assert plain_record["recipe"] == "all pairs" and plain_record["candidates"] == []


def test_labelled_share_repeats_real_pairs_to_that_share_of_the_examples():
    from rag_app.config_finetune import FinetuneSettings

    fixed = FinetuneSettings(labelled_weight=4)
    shared = FinetuneSettings(labelled_weight=4, labelled_share=0.5)
    assert data_mod.real_weight(10, 1000, fixed) == 4
    # half of 1,000 synthetic + 10 real examples: each real pair 100 times
    assert data_mod.real_weight(10, 1000, shared) == 100
    assert data_mod.real_weight(1000, 10, shared) == 1  # never below once
    assert data_mod.real_weight(0, 1000, shared) == 4  # nothing to weigh
    assert data_mod.real_weight(10, 0, shared) == 4  # real pairs only: the weight is moot
    pairs = [Pair(f"s{i}", "p", "d", "structure:terms") for i in range(30)]
    pairs += [Pair(f"r{i}", "p", "d", "labelled") for i in range(5)]
    third = FinetuneSettings(labelled_share=0.25)
    repeated = data_mod.weighted(pairs, third)
    real = sum(p.kind == "real" for p in repeated)
    assert real == 5 * 2  # round(0.25 / 0.75 * 30 / 5) = 2
    assert len(repeated) - real == 30
