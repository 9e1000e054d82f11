"""Split, labelled-pair import, and short real training runs (MiniLM embedder and reranker).

The training fixture is the beir_tiny passages as workspace chunks (topic = document):
`rag-app synth` makes structural pseudo-queries from them (no LLM), training runs a few
steps, and beir_tiny's hand-written test queries are the labelled guardrail.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import FIXTURES

from finetune import data as data_mod
from finetune import job, model_card, synth, train
from finetune.publish import staged_run
from finetune.split import Pair, Passages, check_no_leak, load_labelled, split_pairs
from rag_app import chunkstore
from rag_app.runs import RunRecord
from rag_app.types import Chunk

TINY = FIXTURES / "beir_tiny"


def _pairs(n_docs=12, chunks_per_doc=3, queries_per_chunk=2):
    return [
        Pair(f"q {d} {c} {q}", f"d{d}c{c}", f"doc{d}")
        for d in range(n_docs)
        for c in range(chunks_per_doc)
        for q in range(queries_per_chunk)
    ]


@pytest.mark.parametrize("by", ["document", "chunk"])
def test_split_has_no_chunk_or_document_in_both_sets(by):
    pairs = _pairs()
    train_pairs, val = split_pairs(pairs, val_fraction=0.25, by=by, seed=7)
    assert len(train_pairs) + len(val) == len(pairs)
    assert not {p.passage_id for p in train_pairs} & {p.passage_id for p in val}
    if by == "document":
        assert not {p.doc_id for p in train_pairs} & {p.doc_id for p in val}
    check_no_leak(train_pairs, val, by)
    assert 0.15 <= len(val) / len(pairs) <= 0.35
    again = split_pairs(pairs, val_fraction=0.25, by=by, seed=7)
    assert again == (train_pairs, val)  # seeded: reproducible
    other = split_pairs(pairs, val_fraction=0.25, by=by, seed=8)
    assert other != (train_pairs, val)


def test_split_keeps_both_sides_non_empty_and_detects_leaks():
    pairs = _pairs(n_docs=2, chunks_per_doc=1)
    train_pairs, val = split_pairs(pairs, val_fraction=0.9, by="document", seed=1)
    assert train_pairs and val
    with pytest.raises(ValueError, match="both train and validation"):
        check_no_leak(pairs[:2], pairs[1:3], "document")
    with pytest.raises(ValueError, match="split_by"):
        split_pairs(pairs, val_fraction=0.2, by="sentence")


def tiny_chunks() -> list[Chunk]:
    chunks = []
    for line in (TINY / "corpus.jsonl").read_text().splitlines():
        row = json.loads(line)
        chunks.append(
            Chunk(id=row["_id"], doc_id=row["title"].lower(), text=row["text"], title=row["title"])
        )
    return chunks


def test_load_labelled_beir_and_csv(tmp_path):
    chunks = tiny_chunks()
    passages = Passages.from_chunks(chunks)
    pairs = load_labelled(TINY, passages, chunks, split="test")
    assert pairs and all(p.source == "labelled" and p.passage_id in passages for p in pairs)
    assert {p.doc_id for p in pairs} <= {c.doc_id for c in chunks}

    csv_path = tmp_path / "pairs.csv"
    csv_path.write_text(
        "query,passage_id\nwhat inhaler stops an asthma attack,p02\nanemia treatment,anemia\n",
        encoding="utf-8",
    )
    by_csv = load_labelled(csv_path, passages, chunks)
    assert by_csv[0].passage_id == "p02"
    # A document id maps to that document's best BM25 chunk.
    assert by_csv[1].doc_id == "anemia" and by_csv[1].passage_id in {"p03", "p04"}
    csv_path.write_text("query,passage_id\nx,nope\n", encoding="utf-8")
    with pytest.raises(ValueError, match="unknown passage id"):
        load_labelled(csv_path, passages, chunks)


@pytest.fixture
def tiny_settings(settings_factory):
    settings = settings_factory(
        corpus=str(FIXTURES / "beir_tiny"),
        synth={"llm_queries_per_chunk": 0, "structural_queries_per_chunk": 2, "min_chunk_words": 3},
        finetune={
            "method": "full",
            "batch_size": 8,
            "max_steps": 6,
            "eval_steps": 3,
            "learning_rate": 5e-5,
            "warmup_ratio": 0.0,
            "negatives": {"range_min": 1},
            "labelled_eval": str(TINY),
            "labelled_guard_min_queries": 5,  # beir_tiny's test split is small
            "reranker": {"batch_size": 8, "negatives": 1, "max_length": 128},
            "max_seq_length": 128,
        },
    )
    ws = settings.workspace
    ws.mkdir(parents=True, exist_ok=True)
    chunkstore.save(settings.chunks_path, settings.manifest_path, tiny_chunks(), {})
    report = synth.run(settings, progress=False)
    assert report.filter.kept >= 20
    return settings


@pytest.mark.slow
def test_train_embedder_publishes_a_complete_run(tiny_settings):
    from rag_app.embedder import Embedder
    from rag_app.runs import latest, list_runs

    settings = tiny_settings
    data = data_mod.prepare(settings)
    assert data.train and data.val
    check_no_leak(data.train, data.val, "document")
    report = train.train_embedder(settings, data, name="tiny-ft", progress=False)

    run_dir = settings.models_dir / "tiny-ft"
    assert report.path == run_dir and run_dir.is_dir()
    record = json.loads((run_dir / "run.json").read_text())
    assert record["name"] == record["run_id"] == "tiny-ft"
    assert record["kind"] == "embedder"
    assert record["base_model"] == "all-MiniLM-L6-v2"
    assert record["train_pairs"] == len(data.train) and record["val_pairs"] == len(data.val)
    assert record["verified"] is True  # beir_tiny's labelled queries were scored
    assert isinstance(record["recommended"], bool)
    for key in ("val_mrr@10", "val_mrr@10_base", "labelled_mrr@10", "labelled_mrr@10_base"):
        assert 0.0 <= record["metrics"][key] <= 1.0
    assert record["settings"]["max_steps"] == 6
    # Throughput counts training steps only: the in-loop validation is timed separately.
    assert 0.0 < record["eval_seconds"] < record["train_seconds"]
    steps_seconds = record["train_seconds"] - record["eval_seconds"]
    assert record["pairs_per_s"] == pytest.approx(
        record["steps"] * settings.finetune.batch_size / steps_seconds, rel=0.05
    )
    assert "s of it validation" in report.summary()
    card = (run_dir / "README.md").read_text()
    assert "tiny-ft" in card and "labelled_mrr@10" in card and "$" not in card.split("```")[0]
    assert (run_dir / "train.jsonl").is_file() and (run_dir / "val.jsonl").is_file()
    assert (settings.synth_dir / "val.jsonl").is_file()
    assert not list((settings.workspace / "tmp").glob("*"))  # staging and checkpoints gone

    tuned = Embedder.load(str(run_dir), device="cpu")
    base = Embedder.load("all-MiniLM-L6-v2", device="cpu")
    assert tuned.name == "tiny-ft" and tuned.fingerprint != base.fingerprint
    assert tuned.encode_queries(["asthma inhaler"]).shape == (1, 384)
    assert [r.name for r in list_runs(settings)] == ["tiny-ft"]
    assert latest(settings, "embedder").path == run_dir
    with pytest.raises(FileExistsError):
        train.train_embedder(settings, data, name="tiny-ft", progress=False)
    again = job.run(settings, progress=False)  # same data and settings: nothing retrained
    assert again.reused and again.path == run_dir and "already trained" in again.summary()

    from typer.testing import CliRunner

    from rag_app.cli import app

    listed = CliRunner().invoke(app, ["models", "-w", str(settings.workspace)])
    assert listed.exit_code == 0, listed.output
    assert "tiny-ft  [embedder" in listed.output and "val_mrr@10" in listed.output
    as_json = CliRunner().invoke(app, ["models", "-w", str(settings.workspace), "--json"])
    assert json.loads(as_json.output)[0]["kind"] == "embedder"


@pytest.mark.slow
def test_training_raises_mrr_on_its_own_pairs(settings_factory):
    """The loop learns: a few steps teach form codes the base model cannot know."""
    from rag_app.embedder import Embedder

    settings = settings_factory(
        finetune={"batch_size": 10, "max_steps": 12, "learning_rate": 2e-4, "max_seq_length": 96}
    )
    chunks = tiny_chunks()
    passages = Passages.from_chunks(chunks)
    pairs = [Pair(f"form {7 * i + 3:03d}", c.id, c.doc_id) for i, c in enumerate(chunks)]
    data = data_mod.TrainData(chunks, passages, pairs, pairs)
    report = train.train_embedder(settings, data, name="memorise", progress=False)
    m = report.metrics
    assert m["val_mrr@10"] > m["val_mrr@10_base"] + 0.05
    assert report.recommended and not report.verified  # no labelled guardrail here
    Embedder.load(str(report.path), device="cpu")


def test_a_failed_run_leaves_nothing_behind(tiny_settings, monkeypatch):
    from rag_app.runs import list_runs

    settings = tiny_settings
    with (
        pytest.raises(RuntimeError, match="disk full"),
        staged_run(settings, "broken") as folder,
    ):
        (folder / "model.safetensors").write_bytes(b"half a model")
        raise RuntimeError("disk full")
    with (
        pytest.raises(RuntimeError, match=r"no run\.json"),
        staged_run(settings, "no-record") as folder,
    ):
        (folder / "model.safetensors").write_bytes(b"weights, no record")
    assert not settings.models_dir.exists() or not any(settings.models_dir.iterdir())
    assert not any((settings.workspace / "tmp").iterdir())
    assert list_runs(settings) == []
    with pytest.raises(ValueError, match="run name"), staged_run(settings, "../escape"):
        pass


def test_model_card_says_unverified_without_labelled_set():
    record = RunRecord(
        name="x",
        kind="embedder",
        metrics={"val_mrr@10": 0.8, "val_mrr@10_base": 0.7},
        recommended=True,
        verified=False,
        settings={"split_by": "document"},
    )
    text = model_card.render(record)
    assert "Unverified" in text and "| val_mrr@10 | 0.7000 | 0.8000 | +0.1000 |" in text
    record.recommended = False
    assert "Not recommended" in model_card.render(record)


def test_prepare_without_data_says_what_to_run(settings_factory):
    settings = settings_factory()
    chunkstore.save(settings.chunks_path, settings.manifest_path, tiny_chunks(), {})
    with pytest.raises(data_mod.NoTrainingDataError, match="rag-app synth"):
        data_mod.prepare(settings)


@pytest.mark.slow
def test_train_reranker_is_a_trained_cross_encoder(tiny_settings):
    from finetune.reranker import train_reranker
    from rag_app.rerank import Reranker, check_trained, find_trained_reranker

    settings = tiny_settings
    data = data_mod.prepare(settings)
    report = train_reranker(settings, data, name="tiny-rr", progress=False)
    run_dir = Path(report.path)
    record = json.loads((run_dir / "run.json").read_text())
    assert record["kind"] == "reranker" and record["name"] == "tiny-rr"
    assert {"val_rerank_ndcg@10", "val_rerank_ndcg@10_base"} <= set(record["metrics"])
    assert record["beats_no_rerank"] == report.recommended
    check_trained(run_dir)  # a real, trained head (the serving side refuses untrained ones)
    # 'auto' serves it only if it beat the unreranked order on validation
    assert find_trained_reranker(settings) == (run_dir if record["beats_no_rerank"] else None)
    reranker = Reranker.load(str(run_dir), device="cpu", max_length=128)
    scores = reranker.score("asthma inhaler", ["Asthma is treated with inhalers.", "Gout pain."])
    assert scores.shape == (2,)


def test_merge_weights_interpolates_floating_tensors():
    import torch

    tuned, base = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    with torch.no_grad():
        tuned.weight.fill_(1.0)
        base.weight.fill_(3.0)
        tuned.bias.fill_(0.0)
        base.bias.fill_(-2.0)
    train.merge_weights(tuned, base, 0.25)
    assert torch.allclose(tuned.weight, torch.full((2, 2), 2.5))
    assert torch.allclose(tuned.bias, torch.full((2,), -1.5))
    assert torch.allclose(base.weight, torch.full((2, 2), 3.0))  # the base is untouched


def test_guard_training_data_and_eval_read_reused_query_ids_the_same_way(
    tmp_path, settings_factory
):
    """Issue 20: a query id written twice (medquad-small reuses 564) is two questions for
    the eval; the guard used to keep only the last and the training data merged their qrels."""
    from rag_app.ir.beir import load_beir

    folder = tmp_path / "reused"
    (folder / "qrels").mkdir(parents=True)
    corpus = [
        {"_id": "p1", "title": "Asthma", "text": "Inhaled bronchodilators relieve an attack."},
        {"_id": "p2", "title": "Anemia", "text": "Iron supplements treat iron deficiency."},
    ]
    queries = [
        {"_id": "q1", "text": "What treats asthma attacks?", "metadata": {"focus": "Asthma"}},
        {"_id": "q1", "text": "What treats anemia?", "metadata": {"focus": "Anemia"}},
    ]
    (folder / "corpus.jsonl").write_text("".join(json.dumps(r) + "\n" for r in corpus))
    (folder / "queries.jsonl").write_text("".join(json.dumps(r) + "\n" for r in queries))
    (folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\tp1\t1\nq1\tp2\t1\n")
    chunks = [Chunk(r["_id"], r["_id"], r["text"], title=r["title"]) for r in corpus]
    passages = Passages.from_chunks(chunks)

    evaluated = load_beir(folder, split="test", on_duplicate_query="disambiguate")
    expected = {(evaluated.queries[q], p) for q, judged in evaluated.qrels.items() for p in judged}
    assert expected == {("What treats asthma attacks?", "p1"), ("What treats anemia?", "p2")}

    settings = settings_factory(finetune={"labelled_eval": str(folder)})
    guard, _ = data_mod.labelled_pairs_for_guard(settings, chunks, passages)
    assert {(p.query, p.passage_id) for p in guard} == expected
    trained = load_labelled(folder, passages, chunks, split="test")
    assert {(p.query, p.passage_id) for p in trained} == expected
