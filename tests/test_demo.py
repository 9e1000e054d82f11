"""`rag-app demo` end to end on a small corpus: every stage for real, then again as a no-op.

The stages are the production ones (ingest, MiniLM index, SmolLM2 synth, fine-tuning,
reranker training, re-index, eval on held-out questions); only the sizes are small, so
this checks that the pipeline's pieces fit together, not the quality of the result.
"""

from __future__ import annotations

import json

import pytest

from eval import demo
from rag_app.runs import list_runs

COMPONENTS = [
    ("main wheel", "axle nut", 410, "NW-TC-3241"),
    ("nose wheel", "axle nut", 150, "NW-TC-3242"),
    ("brake unit", "mounting bolts", 85, "NW-TC-3243"),
    ("propeller blade", "retention bolts", 120, "NW-TC-6110"),
    ("engine mount", "bracket bolts", 95, "NW-TC-7121"),
    ("hydraulic pump", "flange bolts", 25, "NW-TC-2911"),
    ("starter generator", "clamp band", 12, "NW-TC-2431"),
    ("oil filter", "housing cap", 30, "NW-TC-7921"),
]


def _write_corpus(root):
    for name, part, torque, card in COMPONENTS:
        slug = name.replace(" ", "-")
        (root / "task_cards").mkdir(parents=True, exist_ok=True)
        (root / "task_cards" / f"{slug}.md").write_text(
            f"---\ntitle: {name.title()} replacement\ndoc_type: task_card\n---\n"
            f"# {name.title()} replacement ({card})\n\n"
            f"## Removal\n\nOpen the access panel and support the {name} before removing the "
            f"{part}. Keep removed parts in a labelled bag and record them on the work sheet.\n\n"
            f"## Installation\n\nFit the new {name}, then torque the {part} to {torque} Nm in "
            f"two steps. A second inspector checks the torque and signs task card {card}.\n"
        )
    (root / ".ragignore").write_text("eval/\n")
    qdir = root / "eval" / "qrels"
    qdir.mkdir(parents=True)
    queries = [
        ("q1", "torque for the main wheel axle nut?", "task_cards/main-wheel.md"),
        ("q2", "prop blade retention bolt torque", "task_cards/propeller-blade.md"),
        ("q3", "who signs the oil filter cap card", "task_cards/oil-filter.md"),
        ("q4", "hydraulic pump flange torque value", "task_cards/hydraulic-pump.md"),
    ]
    answers = {
        "q1": "410 Nm in two steps.",
        "q2": "120 Nm in two steps.",
        "q3": "A second inspector signs task card NW-TC-7921.",
        "q4": "25 Nm in two steps.",
    }
    (root / "eval" / "queries.jsonl").write_text(
        "".join(
            json.dumps({"_id": q, "text": t, "metadata": {"answer": answers[q]}}) + "\n"
            for q, t, _ in queries
        )
    )
    (qdir / "test.tsv").write_text(
        "query-id\tcorpus-id\tscore\n" + "".join(f"{q}\t{d}\t1\n" for q, _, d in queries)
    )


@pytest.mark.slow
def test_demo_runs_every_stage_then_skips_them(settings_factory, tmp_path):
    corpus = tmp_path / "corpus"
    _write_corpus(corpus)
    settings = settings_factory(
        corpus=corpus,
        models={"reranker": "auto"},
        synth={"max_chunks": 3, "llm_queries_per_chunk": 1, "min_chunk_words": 5},
        finetune={
            "batch_size": 4,
            "max_steps": 4,
            "max_seq_length": 96,
            "negatives": {"range_min": 1},
            "reranker": {"batch_size": 4, "max_length": 96},
        },
    )
    lines: list[str] = []
    first = demo.run(settings, chat=False, echo=lines.append)
    stages = [name for name, _, _ in first.times]
    assert stages == [
        "ingest",
        "index (base model)",
        "synthetic queries",
        "fine-tune embedder",
        "train reranker",
        "users' feedback (half of corpus/eval)",
        "fine-tune with feedback",
        "index (fine-tuned model)",
        "evaluate on the held-out half",
    ]
    assert {r.kind for r in list_runs(settings)} == {"embedder", "reranker"}
    output = "\n".join(lines)
    assert "hybrid-finetuned" in output and "ndcg@10" in output  # the before/after table
    assert "Time per stage" in output
    # three rows on the held-out half: base, synthetic only, synthetic + feedback
    assert "held-out questions (documents no mark touched)" in output
    assert "synthetic only" in output and "synthetic + feedback" in output
    # and the same questions per query class (issue 31): kinds and codes apart
    per_class = output.split("nDCG@10 per query class", 1)[1].split("against their", 1)[0]
    assert "hybrid-finetuned vs base" in per_class and "\n  question " in per_class
    # and the chat's answers to them, scored against the reference answers
    assert "against their reference answers" in output and "key-fact recall" in output
    assert "extractive" in output.split("against their reference answers", 1)[1]
    summaries = dict((name, summary) for name, _, summary in first.times)
    assert "sources marked relevant" in summaries["users' feedback (half of corpus/eval)"]
    runs = list_runs(settings, kind="embedder")
    assert len(runs) == 2
    trained_on = [json.dumps(r.record.data) for r in runs]
    assert sum("source labelled:feedback-beir" in t for t in trained_on) == 1
    assert (settings.workspace / "feedback" / "feedback.jsonl").is_file()

    again: list[str] = []
    second = demo.run(settings, chat=False, echo=again.append)
    summaries = dict((name, summary) for name, _, summary in second.times)
    assert "unchanged" in summaries["ingest"]
    assert "already indexed" in summaries["index (base model)"]
    assert len(list_runs(settings, kind="embedder")) == 2  # not trained twice
    assert len(list_runs(settings, kind="reranker")) == 1
    assert "sources marked" not in summaries["users' feedback (half of corpus/eval)"]  # once

    # the default method trains a query adapter: it serves from the base model's index,
    # so the fine-tuned index stage has nothing to embed
    tuned = list_runs(settings, kind="embedder")[0]
    assert tuned.record.method == "adapter"
    assert "already indexed" in dict((n, s) for n, _, s in first.times)["index (fine-tuned model)"]


def test_quick_profile_skips_reranker_training_but_keeps_user_settings(
    settings_factory, monkeypatch
):
    defaults = settings_factory()
    profile = demo._unset_only(demo.QUICK_PROFILE, defaults)
    assert profile["finetune"]["reranker"] == {"enabled": False}
    quick = settings_factory(**profile)
    summary = demo._train_reranker(quick)  # returns before loading any model
    assert summary.startswith("skipped") and "--full" in summary
    assert list_runs(quick, kind="reranker") == []

    # a value the user set (config file or RAG_APP_*) is never overridden by the profile,
    # even when it equals the default
    monkeypatch.setenv("RAG_APP_FINETUNE__RERANKER__ENABLED", "true")
    monkeypatch.setenv("RAG_APP_FINETUNE__MAX_SEQ_LENGTH", "200")
    mine = settings_factory()
    assert "finetune" not in demo._unset_only(demo.QUICK_PROFILE, mine)
    assert demo._unset_only(demo.QUICK_PROFILE, mine)["synth"] == {"max_chunks": 64}


def test_demo_picks_the_fastest_llm_backend_installed_unless_the_user_chose(
    settings_factory, monkeypatch
):
    from rag_app.llm import llamacpp

    monkeypatch.setattr(llamacpp, "llama_cpp_available", lambda: True)
    assert demo.demo_profile(settings_factory())["llm"] == {"backend": "llamacpp"}
    monkeypatch.setenv("RAG_APP_LLM__BACKEND", "embedded")
    assert "llm" not in demo.demo_profile(settings_factory())
    monkeypatch.delenv("RAG_APP_LLM__BACKEND")
    monkeypatch.setattr(llamacpp, "llama_cpp_available", lambda: False)
    profile = demo.demo_profile(settings_factory(), full=True)
    assert "llm" not in profile and "finetune" not in profile
