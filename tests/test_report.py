"""CLI retrieval eval -> answer eval -> self-contained HTML / Markdown report, on beir_tiny."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

TINY = Path(__file__).parent / "fixtures" / "beir_tiny"


@pytest.fixture(scope="module")
def finetuned_model(tmp_path_factory) -> Path:
    """The bundled MiniLM with perturbed token embeddings: other weights, no training cost."""
    import torch
    from safetensors.torch import load_file, save_file

    from rag_app.models import resolve_embedder

    dst = tmp_path_factory.mktemp("models") / "tiny-ft"
    shutil.copytree(
        resolve_embedder("all-MiniLM-L6-v2").path, dst, ignore=shutil.ignore_patterns(".cache")
    )
    tensors = load_file(str(dst / "model.safetensors"))
    key = next(k for k in tensors if k.endswith("word_embeddings.weight"))
    noise = torch.randn(tensors[key].shape, generator=torch.Generator().manual_seed(1))
    tensors[key] = tensors[key] + 0.3 * noise
    save_file(tensors, str(dst / "model.safetensors"), metadata={"format": "pt"})
    (dst / "run.json").write_text(json.dumps({"run_id": "tiny-ft", "kind": "embedder"}))
    (dst / "README.md").write_text("# tiny-ft\nA perturbed MiniLM for tests.\n")
    return dst


class ExtractiveLLM:
    """Answers with the first sentence of the top passages, citing them (no model needed)."""

    name = "extractive-test-llm"

    def generate(self, messages, *, max_new_tokens=None, temperature=None, stop=None):
        return "8"


def extractive_answer(question, hits, llm):
    from types import SimpleNamespace

    from eval.grounding import split_sentences

    parts = [f"{split_sentences(h.chunk.text)[0][:-1]} [{i}]." for i, h in enumerate(hits[:2], 1)]
    parts.append("The Eiffel Tower is in Paris.")  # one unsupported sentence per answer
    return SimpleNamespace(text=" ".join(parts), citations=[1, 2], hits=hits, error=None)


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory, finetuned_model):
    from rag_app.cli import app

    ws = tmp_path_factory.mktemp("reportws") / "workspace"
    runner = CliRunner()
    result = runner.invoke(
        app,
        [
            "eval",
            "retrieval",
            str(TINY),
            "--workspace",
            str(ws),
            "--configs",
            "bm25,dense-base,dense-finetuned",
            "--k",
            "5",
            "--finetuned",
            str(finetuned_model),
        ],
    )
    assert result.exit_code == 0, result.output
    return ws, result.output


def test_cli_retrieval_prints_table_and_writes_report(evaluated):
    ws, output = evaluated
    assert "dense-finetuned vs dense-base: ndcg@10" in output
    assert "report:" in output
    folder = ws / "eval" / "retrieval" / "beir_tiny-test"
    for name in ("results.json", "per_query.jsonl", "diff.jsonl", "report.html", "report.md"):
        assert (folder / name).is_file(), name


def test_answer_eval_and_full_report(evaluated, finetuned_model):
    from eval.answers import run_answer_eval
    from eval.report import write_report
    from rag_app.config import load_settings

    ws, _ = evaluated
    settings = load_settings(workspace=ws)
    res = run_answer_eval(
        settings,
        TINY,
        ["dense-base", "dense-finetuned"],
        ExtractiveLLM(),
        k=3,
        finetuned=finetuned_model,
        limit=6,
        answer_fn=extractive_answer,
        judge_llm=ExtractiveLLM(),
        judge_runs=2,
        n_resamples=300,
    )
    base = res.configs["dense-base"]
    assert base["n_queries"] == 6 and base["errors"] == 0
    # two extracted sentences are supported, the Eiffel Tower is not
    assert base["mean"]["faithfulness"] == pytest.approx(2 / 3, abs=0.01)
    assert base["mean"]["citation_precision"] == pytest.approx(1.0)
    assert base["mean"]["judge_faithfulness"] == pytest.approx(0.8)
    assert 0 < base["mean"]["correctness_f1"] < 1  # reference = top relevant passage
    assert any(c["metric"] == "faithfulness" for c in res.comparisons)
    assert res.out_dir is not None and (res.out_dir / "per_query.jsonl").is_file()

    paths = write_report(settings=settings, out_dir=ws / "report")
    page = paths["html"].read_text()
    # self-contained: inline CSS and SVG, no scripts, no external resources
    assert "<style>" in page and "<svg" in page
    assert "<script" not in page.lower()
    assert not re.search(r"(src|href)=['\"]?https?:", page)
    for section in (
        "Retrieval",
        "Base vs fine-tuned (paired)",
        "Per-query wins and losses",
        "entered the top k",
        "Embedding map",
        "Limits of the grounding scores",
        "split <b>test</b>",
        "tiny-ft",
    ):
        assert section in page, section
    md = paths["markdown"].read_text()
    assert "| configuration |" in md and "## Answers" in md and "delta [95% CI]" in md
    summary = json.loads(paths["json"].read_text())
    assert summary["retrieval"]["dataset"]["name"] == "beir_tiny"
    assert summary["answers"]["grounding"]["method"] == "proxy"


def test_report_cli_without_results_fails_cleanly(tmp_path):
    from rag_app.cli import app

    result = CliRunner().invoke(app, ["eval", "report", "--workspace", str(tmp_path / "w")])
    assert result.exit_code == 1
    assert "no eval results" in result.output


@pytest.mark.slow
def test_answer_eval_with_the_real_embedded_llm(evaluated):
    """The production path: rag_app.answer with the bundled SmolLM2, scored by the proxy."""
    from eval.answers import run_answer_eval
    from rag_app.config import load_settings
    from rag_app.llm.factory import build_llm

    ws, _ = evaluated
    settings = load_settings(workspace=ws, llm={"max_new_tokens": 32, "temperature": 0.0})
    res = run_answer_eval(
        settings,
        TINY,
        ["bm25"],
        build_llm(settings),
        k=2,
        limit=2,
        n_resamples=100,
        mode="generative",  # auto would quote: the bundled model is too small to write
    )
    scored = res.configs["bm25"]
    assert scored["answer_mode"] == "generative"
    # The 135M model sometimes returns nothing; that is counted as an error (the answer
    # falls back to passages), never hidden.
    assert scored["n_queries"] == 2 and scored["errors"] < 2
    for name in ("faithfulness", "answer_relevance", "citation_precision"):
        assert 0.0 <= scored["mean"][name] <= 1.0


def test_answer_eval_quotes_as_the_chat_does_without_an_llm(evaluated, finetuned_model):
    """`answer.mode` auto with the bundled generator (or `--mode extractive`): no LLM is
    needed, each configuration's answers quote with its own embedder, and correctness is
    scored against the references."""
    from eval.answers import run_answer_eval
    from rag_app.config import load_settings

    ws, _ = evaluated
    settings = load_settings(workspace=ws, llm={"backend": "none"})
    res = run_answer_eval(
        settings,
        TINY,
        ["dense-base", "dense-finetuned"],
        None,
        k=3,
        finetuned=finetuned_model,
        limit=6,
        n_resamples=200,
        mode="extractive",
    )
    for name in ("dense-base", "dense-finetuned"):
        scored = res.configs[name]
        assert scored["answer_mode"] == "extractive" and scored["errors"] == 0
        assert scored["n_queries"] == 6 and "correctness_f1" in scored["mean"]
        assert scored["polarity_errors"] == []
    rows = [r for r in res.rows if r["config"] == "dense-base"]
    assert all("“" in r["answer"] or r["answer"].startswith("Not found") for r in rows)
