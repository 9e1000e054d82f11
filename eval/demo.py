"""`rag-app demo`: the whole pipeline on a corpus, then the chat.

ingest -> index (base) -> synth -> fine-tune embedder -> train reranker -> index
(fine-tuned) -> retrieval eval on the corpus's own hand-written questions -> chat.

Every stage skips work already done (ingest and index are incremental, synth resumes,
training is skipped when a run trained on the same data exists), so a second run goes
straight to the chat. It lives in `eval` because it is the one place that uses every
layer (dependencies point eval -> finetune -> rag_app).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import typer


@dataclass
class StageTimer:
    """Runs named stages, printing what each did and how long it took."""

    echo: Callable[[str], None] = print
    times: list[tuple[str, float, str]] = field(default_factory=list)

    def run(self, name: str, fn: Callable[[], str]) -> None:
        self.echo(f"==> {name}")
        started = time.perf_counter()
        summary = fn()
        seconds = time.perf_counter() - started
        self.times.append((name, seconds, summary))
        self.echo(f"    {summary} ({seconds:.1f}s)")

    def table(self) -> str:
        width = max(len(n) for n, _, _ in self.times)
        lines = [f"{n.ljust(width)}  {s:7.1f}s" for n, s, _ in self.times]
        total = sum(s for _, s, _ in self.times)
        lines.append(f"{'total'.ljust(width)}  {total:7.1f}s")
        return "\n".join(lines)


def _ingest(settings: Any) -> str:
    from rag_app import ingest

    r = ingest.run(settings, progress=sys.stderr.isatty())
    skipped = f", {len(r.skipped)} skipped" if r.skipped else ""
    return (
        f"{r.files} files -> {r.chunks} chunks ({r.added} added, {r.unchanged} unchanged{skipped})"
    )


def _index(settings: Any, model: str | None = None) -> str:
    from rag_app import index

    r = index.run(settings, model=model, progress=sys.stderr.isatty())
    if not r.changed:
        return f"{r.model}: {r.chunks} chunks already indexed"
    return f"{r.model}: embedded {r.embedded}, deleted {r.deleted}, BM25 {r.bm25}"


def _synth(settings: Any) -> str:
    from finetune import synth

    r = synth.run(settings, progress=sys.stderr.isatty())
    return str(r.summary() if hasattr(r, "summary") else r)


def _train_embedder(settings: Any) -> str:
    from finetune import train

    r = train.run(settings, progress=sys.stderr.isatty())
    return str(r.summary() if hasattr(r, "summary") else r)


def _train_reranker(settings: Any) -> str:
    if not settings.finetune.reranker:
        return (
            "skipped: finetune.reranker is off (the demo's quick profile turns it off unless "
            "you set it: a cross-encoder trained from the bi-encoder in the demo's budget "
            "loses to no reranking, docs/BENCHMARKS.md; `rag-app demo --full` or `rag-app "
            "finetune --reranker` trains one)"
        )
    from finetune import reranker

    r = reranker.run(settings, progress=sys.stderr.isatty())
    return str(r.summary() if hasattr(r, "summary") else r)


def _newest_embedder(settings: Any) -> str | None:
    from rag_app.registry import list_runs

    runs = list_runs(settings, kind="embedder")
    return str(runs[-1].path) if runs else None


def _evaluate(settings: Any, echo: Callable[[str], None]) -> str:
    from eval.retrieval import run_retrieval_eval

    dataset = Path(settings.corpus) / "eval"
    if not (dataset / "queries.jsonl").is_file():
        return f"no hand-written questions in {dataset}; skipped"
    from eval.retrieval import summary_lines

    result = run_retrieval_eval(settings, dataset, k=10, n_resamples=2000)
    echo("\n".join(summary_lines(result)))
    return f"{len(result.queries)} held-out questions, results in {result.out_dir}"


def run(settings: Any, *, chat: bool = True, echo: Callable[[str], None] = print) -> StageTimer:
    """Run every stage (each skipping work already done), print timings, then serve."""
    timer = StageTimer(echo)
    timer.run("ingest", lambda: _ingest(settings))
    timer.run("index (base model)", lambda: _index(settings))
    timer.run("synthetic queries", lambda: _synth(settings))
    timer.run("fine-tune embedder", lambda: _train_embedder(settings))
    timer.run("train reranker", lambda: _train_reranker(settings))
    tuned = _newest_embedder(settings)
    if tuned:
        timer.run("index (fine-tuned model)", lambda: _index(settings, tuned))
    timer.run("evaluate on corpus/eval", lambda: _evaluate(settings, echo))
    echo("\nTime per stage:\n" + timer.table())
    if chat:
        from rag_app.ui.app import exposure_warning, launch

        warning = exposure_warning(settings)
        if warning:
            echo(f"warning: {warning}")
        launch(settings, block=True)
    return timer


# The shipped corpus must go from clone to chat in minutes on a 2-core laptop, so the demo
# asks the slow embedded LLM for queries on a sample of chunks (structural pseudo-queries
# still cover every chunk), trains on shorter sequences and does not train a reranker.
# The reranker was 811 of the demo's 1,131 s on a 2-core host, and even with one negative a
# pair (629 s) it came out near random order (validation nDCG@10 0.22 against 0.61 without
# reranking), so it was discarded every time (BENCHMARKS.md). `--full` drops these limits;
# settings from rag-app.toml or RAG_APP_* still apply on top of either.
QUICK_PROFILE: dict[str, Any] = {
    "synth": {"max_chunks": 64},
    "finetune": {"max_seq_length": 128, "reranker": False},
}


def register(app: typer.Typer) -> None:
    """Add `rag-app demo` to the CLI."""

    @app.command("demo")
    def demo_cmd(
        config: Annotated[Path | None, typer.Option("--config", "-c")] = None,
        workspace: Annotated[Path | None, typer.Option("--workspace", "-w")] = None,
        corpus: Annotated[Path | None, typer.Option(help="Documents (default: corpus/).")] = None,
        chat: Annotated[bool, typer.Option(help="Serve the chat at the end.")] = True,
        full: Annotated[
            bool,
            typer.Option(
                help="No demo limits: LLM queries for every chunk, full length, train the reranker."
            ),
        ] = False,
    ) -> None:
        """Ingest, index, synth, fine-tune, re-index, evaluate, then open the chat."""
        from rag_app.config import load_settings

        base = load_settings(config, workspace=workspace, corpus=corpus)
        profile = {} if full else _unset_only(QUICK_PROFILE, base)
        profile.setdefault("models", {})
        if base.models.reranker is None:
            profile["models"]["reranker"] = "auto"
        settings = load_settings(config, workspace=workspace, corpus=corpus, **profile)
        if profile.get("synth") or profile.get("finetune"):
            typer.echo(f"demo limits (use --full to lift): {profile}")
        run(settings, chat=chat, echo=typer.echo)


def _unset_only(profile: dict[str, Any], settings: Any) -> dict[str, Any]:
    """The profile's values for fields the user did not set (in rag-app.toml or RAG_APP_*).

    Uses pydantic's record of explicitly set fields, so a user who sets a value equal to
    the default (`finetune.reranker = true`) still keeps it.
    """
    out: dict[str, Any] = {}
    for section, values in profile.items():
        given = getattr(settings, section).model_fields_set
        keep = {k: v for k, v in values.items() if k not in given}
        if keep:
            out[section] = keep
    return out
