"""The real-question loop end to end on the shipped corpus: ask -> mark -> export ->
fine-tune -> the chat serves the new run.

Half of corpus/eval's documents play the users (their questions asked through the chat
service, the shown passages marked from the qrels into the feedback file); the export and
the fine-tune run through the CLI, as a user would type them.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from eval.feedback_play import play_feedback, split_by_document
from rag_app import index, ingest
from rag_app.chat import ChatService, RetrieverChoice
from rag_app.cli import app
from rag_app.ir.beir import load_beir

CORPUS = Path(__file__).resolve().parents[1] / "corpus"

pytestmark = pytest.mark.slow


def test_feedback_export_finetune_then_chat_serves_the_run(settings_factory, tmp_path):
    settings = settings_factory(corpus=CORPUS, llm={"backend": "none"})
    ingest.run(settings, progress=False)
    index.run(settings, progress=False)
    dataset = load_beir(CORPUS / "eval", split="test")
    split = split_by_document(dataset.qrels, 0.5, seed=7)
    assert split.feedback and split.test
    assert not {d for q in split.feedback for d in dataset.qrels[q]} & {
        d for q in split.test for d in dataset.qrels[q]
    }
    asked = {q: dataset.queries[q] for q in split.feedback}
    played = play_feedback(settings, asked, dataset.qrels)
    assert played.questions == len(asked) and played.relevant > 20 and played.not_relevant

    runner = CliRunner()
    ws = ["-w", str(settings.workspace)]
    out = tmp_path / "feedback-beir"
    result = runner.invoke(app, ["feedback", "export", str(out), *ws])
    assert result.exit_code == 0, result.output
    exported = json.loads((out / "export.json").read_text())
    assert exported["relevant"] == played.relevant  # one voter, every mark kept
    assert exported["queries"] == len(asked)

    result = runner.invoke(
        app,
        ["finetune", *ws, "--train-data", str(out), "--no-synthetic", "--no-reranker"],
    )
    assert result.exit_code == 0, result.output
    assert "guard: " in result.output and "real questions" in result.output
    runs = sorted((settings.workspace / "models").glob("*/run.json"))
    assert len(runs) == 1
    record = json.loads(runs[0].read_text())
    assert record["method"] == "adapter"
    guard = record["guard"]
    assert guard["held_out_pairs"] > 0 and guard["queries"] > 0
    assert (
        record["labelled_eval"] is None
    )  # the default corpus/eval (holding the test) is not the guard
    assert record["data"]["source labelled:feedback-beir"] > 0
    assert record["data"]["labelled_weight"] == settings.finetune.labelled_weight

    service = ChatService(settings, load_llm=False)
    run_name = runs[0].parent.name
    assert service.default_finetuned().key == run_name
    question = dataset.queries[split.test[0]]
    hits = service.search(question, RetrieverChoice.of(run_name, "dense", rerank=False))
    assert hits and all(h.ranks.get("dense") for h in hits)

    # the export is also an eval set: judged per chunk of this workspace
    from eval.retrieval import run_retrieval_eval

    evaluated = run_retrieval_eval(
        settings,
        out,
        ["dense-base"],
        10,
        split="train",
        out_dir=tmp_path / "eval",
        embedding_map=False,
        progress=False,
        echo=lambda *_: None,
    ).to_dict()
    assert evaluated["dataset"]["granularity"] == "chunk"
