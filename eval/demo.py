"""`rag-app demo`: the whole pipeline on a corpus, then the chat.

ingest -> index (base) -> synth -> fine-tune embedder -> train reranker -> users'
feedback -> fine-tune with it -> index (fine-tuned) -> retrieval eval -> chat.

The corpus's hand-written questions (`<corpus>/eval`) are split by document: one half
plays the users, asked through the chat service and marked from its qrels into the
workspace's feedback file (`eval.feedback_play`), exported like `rag-app feedback export`
and trained on; the other half is the test. The table has three rows: base, synthetic
only, synthetic + feedback, each with its interval.

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
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from rag_app.config import Settings


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


def _ingest(settings: Settings) -> str:
    from rag_app import ingest

    r = ingest.run(settings, progress=sys.stderr.isatty())
    skipped = f", {len(r.skipped)} skipped" if r.skipped else ""
    return (
        f"{r.files} files -> {r.chunks} chunks ({r.added} added, {r.unchanged} unchanged{skipped})"
    )


def _index(settings: Settings, model: str | None = None) -> str:
    from rag_app import index

    r = index.run(settings, model=model, progress=sys.stderr.isatty())
    if not r.changed:
        return f"{r.model}: {r.chunks} chunks already indexed"
    return f"{r.model}: embedded {r.embedded}, deleted {r.deleted}, BM25 {r.bm25}"


def _synth(settings: Settings) -> str:
    from finetune import synth

    r = synth.run(settings, progress=sys.stderr.isatty())
    return str(r.summary() if hasattr(r, "summary") else r)


def _train_embedder(settings: Settings) -> str:
    from finetune import job

    r = job.run(settings, progress=sys.stderr.isatty())
    return str(r.summary() if hasattr(r, "summary") else r)


def _train_reranker(settings: Settings) -> str:
    if not settings.finetune.reranker.enabled:
        return (
            "skipped: finetune.reranker.enabled is off (the demo's quick profile turns it off unless "
            "you set it: a cross-encoder trained from the bi-encoder in the demo's budget "
            "loses to no reranking, docs/BENCHMARKS.md; `rag-app demo --full` or `rag-app "
            "finetune --reranker` trains one)"
        )
    from finetune import reranker

    r = reranker.run(settings, progress=sys.stderr.isatty())
    return str(r.summary() if hasattr(r, "summary") else r)


def _with_finetune(settings: Settings, **update: Any) -> Any:
    return settings.model_copy(update={"finetune": settings.finetune.model_copy(update=update)})


def _newest_embedder(settings: Settings) -> str | None:
    from rag_app.runs import RunKind, latest

    run = latest(settings, RunKind.EMBEDDER)
    return str(run.path) if run is not None else None


DEMO_USER = "demo (played from corpus/eval)"
FEEDBACK_SHARE = 0.5  # of corpus/eval's documents whose questions play the users


@dataclass
class DemoSplit:
    """corpus/eval split by document: the users' questions and the held-out test."""

    feedback: Path
    test: Path
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]
    feedback_ids: list[str]
    metadata: dict[str, dict[str, Any]] = field(default_factory=dict)  # per query: its kind


def _split_eval(settings: Settings) -> DemoSplit | None:
    """Write the two halves of corpus/eval as BEIR folders under workspace/demo (seeded)."""
    from eval.feedback_play import split_by_document
    from rag_app.ir.beir import load_beir
    from rag_app.ir.beir_write import write_beir

    source = Path(settings.corpus) / "eval"
    if not (source / "queries.jsonl").is_file():
        return None
    dataset = load_beir(source, split="test")
    split = split_by_document(dataset.qrels, FEEDBACK_SHARE, seed=settings.seed)
    root = Path(settings.workspace) / "demo"
    folders = {}
    for name, ids in (("feedback-questions", split.feedback), ("test-questions", split.test)):
        folders[name] = write_beir(
            {
                "queries": {q: dataset.queries[q] for q in ids},
                "qrels": {q: dataset.qrels[q] for q in ids},
            },
            root / name,
            split="test",
        )
    return DemoSplit(
        folders["feedback-questions"],
        folders["test-questions"],
        dict(dataset.queries),
        {q: dict(v) for q, v in dataset.qrels.items()},
        split.feedback,
        dict(dataset.query_metadata),
    )


def _play_feedback(settings: Settings, split: DemoSplit) -> tuple[str, Path]:
    """The feedback half asked through the chat and marked from its qrels (once), then
    exported with `rag-app feedback export`'s code."""
    from eval.feedback_play import play_feedback
    from rag_app.feedback.export import export, read_marks

    played = ""
    marks, _ = read_marks(settings) if settings.feedback_dir.exists() else ([], None)
    if not any(m.get("user") == DEMO_USER for m in marks):
        report = play_feedback(
            settings,
            {q: split.queries[q] for q in split.feedback_ids},
            split.qrels,
            user=DEMO_USER,
        )
        played = (
            f"{report.questions} questions asked, {report.relevant} sources marked relevant "
            f"and {report.not_relevant} not relevant; "
        )
    out = Path(settings.workspace) / "demo" / "feedback-beir"
    exported = export(settings, out, force=True)
    return played + exported.summary(), out


def _evaluate(settings: Settings, echo: Callable[[str], None], split: DemoSplit | None) -> str:
    """Base, synthetic only and synthetic + feedback on the held-out half of corpus/eval."""
    from eval.query_classes import class_rows, query_classes
    from eval.retrieval import run_retrieval_eval, summary_lines

    if split is None:
        return f"no hand-written questions in {Path(settings.corpus) / 'eval'}; skipped"
    runs = _embedder_runs(settings)
    result = None
    last = ""
    rows: list[str] = []
    for label, run in (
        ("synthetic only", runs.get("synthetic")),
        ("synthetic + feedback", runs.get("feedback")),
    ):
        if run is None:
            continue
        result = run_retrieval_eval(
            settings,
            split.test,
            ["dense-base", "dense-finetuned", "hybrid-base", "hybrid-finetuned"],
            k=10,
            finetuned=run,
            n_resamples=2000,
            out_dir=Path(settings.eval_dir) / "demo" / label.replace(" ", "-").replace("+", "plus"),
            embedding_map=False,
            progress=False,
            echo=lambda *_: None,
        )
        last = label
        data = result.to_dict()
        means = {c: v["mean"]["ndcg@10"] for c, v in data["configs"].items()}
        if not rows:
            rows.append(
                f"  {'base':22s} dense {means['dense-base']:.3f}          hybrid {means['hybrid-base']:.3f}"
            )
        cells = []
        for mode in ("dense", "hybrid"):
            gain = next(
                c
                for c in data["comparisons"]
                if c["metric"] == "ndcg@10" and c["candidate"] == f"{mode}-finetuned"
            )
            cells.append(
                f"{mode} {means[f'{mode}-finetuned']:.3f} {gain['delta'] * 100:+.1f} "
                f"[{gain['ci_low'] * 100:+.1f}, {gain['ci_high'] * 100:+.1f}]"
            )
        rows.append(f"  {label:22s} " + "   ".join(cells))
    if result is None:
        return "no fine-tuned run to compare"
    echo("\n".join(summary_lines(result)))
    echo(
        f"\nnDCG@10 on {len(result.queries)} held-out questions (documents no mark touched), "
        "gain over base in points [95% paired bootstrap]:\n" + "\n".join(rows)
    )
    classes = query_classes(result.queries, split.metadata)
    echo(
        f"\nnDCG@10 per query class, the same questions, base -> fine-tuned ({last}), gain in "
        "points [95% paired bootstrap]:\n"
        + "\n".join(
            class_rows(
                result,
                classes,
                [("dense-base", "dense-finetuned"), ("hybrid-base", "hybrid-finetuned")],
            )
        )
    )
    _answer_table(settings, echo, split, runs)
    return (
        f"{len(result.queries)} held-out questions, results in {Path(settings.eval_dir) / 'demo'}"
    )


def _answer_table(
    settings: Settings, echo: Callable[[str], None], split: DemoSplit, runs: dict[str, str]
) -> None:
    """The chat's answers to the same held-out questions, scored against corpus/eval's
    reference answers (eval.answer_table), base and each fine-tuned run."""
    from eval.answer_table import answer_rows, table_lines
    from eval.sets import _references_from
    from rag_app.ir.beir import load_beir

    references, _ = _references_from(load_beir(Path(settings.corpus) / "eval", split="test"))
    held_out = load_beir(split.test, split="test").queries  # the retrieval table's questions
    questions = {q: text for q, text in held_out.items() if q in references}
    if not questions:
        return
    retrievers = {"base": "baseline"}
    for label, run in (
        ("synthetic only", runs.get("synthetic")),
        ("synthetic + feedback", runs.get("feedback")),
    ):
        if run is not None:
            retrievers[label] = Path(run).name
    rows = answer_rows(settings, questions, references, retrievers)
    echo(
        f"\nThe chat's answers to {len(questions)} of those questions against their reference "
        "answers (key facts: numbers, identifiers, yes/no; gain over base [95% paired "
        "bootstrap]):\n" + "\n".join(table_lines(rows))
    )


def _embedder_runs(settings: Settings) -> dict[str, str]:
    """The newest run trained without and with real labelled pairs."""
    from rag_app.runs import RunKind, list_runs

    found: dict[str, str] = {}
    for run in list_runs(settings, kind=RunKind.EMBEDDER):
        sources = run.record.data.keys()
        labelled = any(str(k).startswith("source labelled:") for k in sources)
        found["feedback" if labelled else "synthetic"] = str(run.path)
    return found


def run(
    settings: Settings, *, chat: bool = True, echo: Callable[[str], None] = print
) -> StageTimer:
    """Run every stage (each skipping work already done), print timings, then serve."""
    timer = StageTimer(echo)
    split = _split_eval(settings)
    if split is not None:  # the users' half guards the synthetic run; the rest is the test
        settings = _with_finetune(settings, labelled_eval=split.feedback)
    timer.run("ingest", lambda: _ingest(settings))
    timer.run("index (base model)", lambda: _index(settings))
    timer.run("synthetic queries", lambda: _synth(settings))
    timer.run("fine-tune embedder", lambda: _train_embedder(settings))
    timer.run("train reranker", lambda: _train_reranker(settings))
    if split is not None and split.feedback_ids:
        exported: list[Path] = []

        def feedback() -> str:
            summary, out = _play_feedback(settings, split)
            exported.append(out)
            return summary

        timer.run("users' feedback (half of corpus/eval)", feedback)
        with_feedback = _with_finetune(settings, train_data=exported, labelled_eval=None)
        timer.run("fine-tune with feedback", lambda: _train_embedder(with_feedback))
    tuned = _newest_embedder(settings)
    if tuned:
        timer.run("index (fine-tuned model)", lambda: _index(settings, tuned))
    timer.run("evaluate on the held-out half", lambda: _evaluate(settings, echo, split))
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
    "finetune": {"max_seq_length": 128, "reranker": {"enabled": False}},
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
        profile = demo_profile(base, full=full)
        settings = load_settings(config, workspace=workspace, corpus=corpus, **profile)
        if profile.get("synth") or profile.get("finetune"):
            typer.echo(f"demo limits (use --full to lift): {profile}")
        if profile.get("llm"):
            typer.echo(
                "LLM backend: llama.cpp (installed: about twice the embedded backend's "
                "synthetic queries a minute, docs/BENCHMARKS.md; set llm.backend to choose)"
            )
        run(settings, chat=chat, echo=typer.echo)


def demo_profile(base: Any, *, full: bool = False) -> dict[str, Any]:
    """What `rag-app demo` sets on top of the user's settings, for fields they left unset:
    the quick limits (unless `full`), the newest trained reranker, and the fastest LLM
    backend installed (llama.cpp when llama-cpp-python is, else the embedded one)."""
    from rag_app.llm.llamacpp import llama_cpp_available

    profile = {} if full else _unset_only(QUICK_PROFILE, base)
    profile.setdefault("models", {})
    if base.models.reranker is None:
        profile["models"]["reranker"] = "auto"
    if "backend" not in base.llm.model_fields_set and llama_cpp_available():
        profile["llm"] = {"backend": "llamacpp"}
    return profile


def _unset_only(profile: dict[str, Any], settings: Settings) -> dict[str, Any]:
    """The profile's values for fields the user did not set (in rag-app.toml or RAG_APP_*).

    Uses pydantic's record of explicitly set fields, so a user who sets a value equal to
    the default (`finetune.reranker.enabled = true`) still keeps it.
    """
    out: dict[str, Any] = {}
    for section, values in profile.items():
        model = getattr(settings, section)
        keep = {}
        for key, value in values.items():
            if isinstance(value, dict):  # a nested group: only its unset fields
                inner = _unset_only({key: value}, model)
                if inner:
                    keep[key] = inner[key]
            elif key not in model.model_fields_set:
                keep[key] = value
        if keep:
            out[section] = keep
    return out
