"""`rag-app` command line: parses arguments, calls one package function, prints.

All logic lives in importable functions (`rag_app.ingest.run`, ...), so everything the CLI
does can be scripted and tested without it.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from rag_app.cli_common import ConfigOpt, WorkspaceOpt, fail, settings_or_exit
from rag_app.errors import RagAppError

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")  # chromadb's posthog

app = typer.Typer(
    name="rag-app",
    help="Domain RAG chatbot that fine-tunes its own retriever. Offline by default.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


class _State:
    verbose: bool = False


@app.callback()
def main(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False,
) -> None:
    """Set up logging once for every command."""
    _State.verbose = verbose
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )


@app.command("config")
def config_cmd(config: ConfigOpt = None, workspace: WorkspaceOpt = None) -> None:
    """Print the effective configuration (file + environment + flags), secrets masked."""
    settings = settings_or_exit(config, workspace=workspace)
    typer.echo(json.dumps(settings.redacted(), indent=2))


@app.command("ingest")
def ingest_cmd(
    corpus: Annotated[
        Path | None, typer.Argument(help="Folder of documents (default: settings.corpus).")
    ] = None,
    config: ConfigOpt = None,
    workspace: WorkspaceOpt = None,
    chunk_size: Annotated[int | None, typer.Option(help="Chunk size in tokens.")] = None,
    chunk_overlap: Annotated[int | None, typer.Option(help="Chunk overlap in tokens.")] = None,
    rebuild: Annotated[bool, typer.Option(help="Ignore previous chunks and re-read all.")] = False,
    strict: Annotated[
        bool, typer.Option(help="Exit with status 2 when any file was skipped.")
    ] = False,
) -> None:
    """Read a folder of Markdown, text, HTML, PDF and DOCX files into chunks."""
    from rag_app import ingest

    settings = settings_or_exit(
        config,
        workspace=workspace,
        corpus=corpus,
        ingest={"chunk_size": chunk_size, "chunk_overlap": chunk_overlap},
    )
    try:
        report = ingest.run(settings, rebuild=rebuild, progress=True)
    except (RagAppError, FileNotFoundError, ValueError) as exc:
        fail(str(exc))
    typer.echo(
        f"ingested {report.corpus}: {report.files} files, {report.chunks} chunks "
        f"({report.added} added, {report.updated} updated, {report.unchanged} unchanged, "
        f"{report.removed} removed) in {report.seconds:.1f}s"
    )
    if not report.changed:
        typer.echo("nothing changed since the last ingest")
    if report.other_types:
        typer.echo(f"ignored {report.other_types} files of other types")
    if report.skipped:
        typer.secho(f"skipped {len(report.skipped)}:", fg=typer.colors.YELLOW)
        for doc_id, reason in report.skipped:
            typer.echo(f"  {doc_id}: {reason}")
        if strict:
            raise typer.Exit(2)


@app.command("index")
def index_cmd(
    config: ConfigOpt = None,
    workspace: WorkspaceOpt = None,
    model: Annotated[
        str | None,
        typer.Option(help="Embedder: bundled name, fine-tuned run dir, or hub id."),
    ] = None,
    dim: Annotated[
        int | None,
        typer.Option(help="Index vectors truncated to N dimensions (Matryoshka), own collection."),
    ] = None,
    processes: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Encoding processes: one per GPU on CUDA, else CPU workers "
            "(models.embed_processes).",
        ),
    ] = None,
) -> None:
    """Build or refresh the BM25 index and the model's Chroma collection (resumable)."""
    from rag_app import index

    settings = settings_or_exit(config, workspace=workspace, models={"embed_processes": processes})
    try:
        report = index.run(settings, model=model, progress=sys.stderr.isatty(), dim=dim)
    except (RagAppError, RuntimeError, ValueError) as exc:
        fail(str(exc))
    typer.echo(
        f"indexed {report.chunks} chunks for {report.model} ({report.fingerprint}, "
        f"dim {report.dim}): "
        f"embedded {report.embedded}, deleted {report.deleted}, "
        f"metadata updated {report.metadata_updated}, BM25 {report.bm25} "
        f"in {report.seconds:.1f}s"
        + (f" ({report.chunks_per_s:.1f} chunks/s)" if report.embedded else "")
        + (f", {report.processes} encoding processes" if report.processes > 1 else "")
        + (f"; {report.reused} truncated from the full-dim index" if report.reused else "")
    )
    if not report.changed:
        typer.echo("index is up to date: nothing to do")


@app.command("search")
def search_cmd(
    query: Annotated[str, typer.Argument(help="The question or keywords.")],
    config: ConfigOpt = None,
    workspace: WorkspaceOpt = None,
    model: Annotated[str | None, typer.Option(help="Embedder (default: models.embedder).")] = None,
    mode: Annotated[str, typer.Option(help="hybrid, dense or bm25.")] = "hybrid",
    k: Annotated[int | None, typer.Option("-k", "--top-k", help="Passages to return.")] = None,
    rerank: Annotated[
        bool | None, typer.Option("--rerank/--no-rerank", help="Cross-encoder reranking.")
    ] = None,
    filters: Annotated[
        list[str] | None,
        typer.Option(
            "--filter", "-f", help="key=value, key=a,b, key!=v or effective_date>=2025-01-01."
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print hits as JSON.")] = False,
    dim: Annotated[
        int | None, typer.Option(help="Embedding dimension (one indexed with --dim).")
    ] = None,
    rescore: Annotated[
        bool | None,
        typer.Option("--rescore/--no-rescore", help="Truncated dim: rescore at full dim."),
    ] = None,
) -> None:
    """Retrieve passages for a query and show each stage's score and rank."""
    from rag_app.filters import parse_filter
    from rag_app.retrieve import build_retriever

    settings = settings_or_exit(config, workspace=workspace, retrieval={"top_k": k})
    try:
        flt = parse_filter(filters)
        retriever = build_retriever(
            settings,
            model=model,
            mode=mode,
            rerank=rerank,
            dim=dim,
            rescore=rescore,
        )
        hits = retriever.retrieve(query, k=settings.retrieval.top_k, filters=flt)
    except (RagAppError, ValueError) as exc:
        fail(str(exc))
    if as_json:
        rows = [
            {
                "id": h.chunk.id,
                "doc_id": h.chunk.doc_id,
                "title": h.chunk.title,
                "heading_path": h.chunk.heading_path,
                "text": h.chunk.text,
                "metadata": h.chunk.metadata,
                "scores": h.scores,
                "ranks": h.ranks,
            }
            for h in hits
        ]
        typer.echo(json.dumps(rows, indent=2, ensure_ascii=False))
        return
    for note in retriever.notes:
        typer.secho(note, fg=typer.colors.YELLOW, err=True)
    if not hits:
        typer.echo("no passages found" + (f" matching {flt}" if flt else ""))
    for rank, hit in enumerate(hits, start=1):
        stages = "  ".join(
            f"{stage} {hit.scores[stage]:.3f} (#{hit.ranks[stage]})"
            for stage in ("bm25", "dense", "fused", "rerank")
            if stage in hit.scores
        )
        where = hit.chunk.doc_id + (
            f" > {hit.chunk.heading_path}" if hit.chunk.heading_path else ""
        )
        snippet = " ".join(hit.chunk.text.split())
        typer.echo(f"[{rank}] {where}\n    {stages}\n    {snippet[:200]}")


@app.command("ask")
def ask_cmd(
    question: Annotated[str, typer.Argument(help="The question.")],
    config: ConfigOpt = None,
    workspace: WorkspaceOpt = None,
    retriever: Annotated[
        str, typer.Option(help="'baseline' or a fine-tuned run's name (as the chat lists it).")
    ] = "baseline",
    mode: Annotated[str, typer.Option(help="hybrid, dense or bm25.")] = "hybrid",
    answer_mode: Annotated[
        str | None, typer.Option("--answer-mode", help="auto, extractive or generative.")
    ] = None,
) -> None:
    """Answer one question as the chat does, as JSON (for scripts): the answer, which mode
    wrote it and why, its quotes and citations, the sources and the stage times."""
    import time

    from rag_app.chat import ChatService, RetrieverChoice

    overrides = {"answer": {"mode": answer_mode}} if answer_mode else {}
    settings = settings_or_exit(config, workspace=workspace, **overrides)
    try:
        choice = RetrieverChoice.of(retriever, mode, True)
    except ValueError as exc:
        fail(str(exc))
    service = ChatService(settings)
    try:
        t0 = time.perf_counter()
        hits = service.search(question, choice)
        t1 = time.perf_counter()
        final = service.answer(question, hits, choice=choice)
        t2 = time.perf_counter()
    except KeyError as exc:
        fail(f"{exc.args[0]}; choose one of: {', '.join(o.key for o in service.options())}")
    except (RagAppError, ValueError) as exc:
        fail(str(exc))
    note = service.search_note(question, choice)
    out = {
        "question": question,
        "answer": final.text,
        "mode": final.mode,
        "why": final.why,
        "abstained": final.abstained,
        "flags": final.flags,
        "citations": final.citations,
        "quotes": [
            {"source": q.unit.passage, "text": q.unit.text, "score": round(q.score, 4)}
            for q in final.quotes
        ],
        "search": note,
        "sources": [
            {
                "n": n,
                "doc_id": h.chunk.doc_id,
                "title": h.chunk.title,
                "heading_path": h.chunk.heading_path,
                "scores": h.scores,
                "ranks": h.ranks,
            }
            for n, h in enumerate(hits, 1)
        ],
        "ms": {"retrieve": round((t1 - t0) * 1000, 1), "answer": round((t2 - t1) * 1000, 1)},
    }
    typer.echo(json.dumps(out, indent=2, ensure_ascii=False))


@app.command("chat")
def chat_cmd(
    config: ConfigOpt = None,
    workspace: WorkspaceOpt = None,
    host: Annotated[str | None, typer.Option(help="Interface to bind (default 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default 7860).")] = None,
    llm: Annotated[
        str | None,
        typer.Option(help="LLM backend: embedded, llamacpp, openai or none (passages only)."),
    ] = None,
) -> None:
    """Serve the Gradio chat over the indexed corpus (baseline / fine-tuned toggle)."""
    from rag_app.ui.app import exposure_warning, launch

    settings = settings_or_exit(
        config, workspace=workspace, server={"host": host, "port": port}, llm={"backend": llm}
    )
    if not settings.chunks_path.exists():
        fail(f"nothing ingested in {settings.workspace}: run `rag-app ingest` then `rag-app index`")
    from rag_app.models import ModelNotFoundError, resolve_embedder

    try:  # a chat that starts and then fails every question helps nobody: refuse now
        resolve_embedder(settings.models.embedder)
    except ModelNotFoundError as exc:
        fail(str(exc))
    warning = exposure_warning(settings)
    if warning:
        typer.secho(f"warning: {warning}", fg=typer.colors.YELLOW, err=True)
    try:
        launch(settings, block=True)
    except ValueError as exc:  # an access policy without a login, a damaged policy file
        fail(str(exc))


feedback_app = typer.Typer(
    help="What chat users marked: summary (default) and export to a BEIR folder.",
    invoke_without_command=True,
    no_args_is_help=False,
)
app.add_typer(feedback_app, name="feedback")

SkipInvalidOpt = Annotated[
    bool,
    typer.Option(
        "--skip-invalid", help="Skip malformed lines (counted) instead of stopping at the first."
    ),
]


@feedback_app.callback()
def feedback_cmd(
    ctx: typer.Context,
    config: ConfigOpt = None,
    workspace: WorkspaceOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
    skip_invalid: SkipInvalidOpt = False,
) -> None:
    """Summarise the chat's marks: by kind, retriever and user, and voters' agreement."""
    if ctx.invoked_subcommand is not None:
        return
    from rag_app.feedback import LogFormatError
    from rag_app.feedback.export import summarise

    settings = settings_or_exit(config, workspace=workspace)
    try:
        summary = summarise(settings, strict=not skip_invalid)
    except LogFormatError as exc:
        fail(str(exc))
    if as_json:
        typer.echo(json.dumps(summary, indent=2))
        return
    typer.echo(f"{summary['marks']} marks in {summary['feedback_file']}")
    if not summary["marks"]:
        typer.echo("no marks yet: mark sources relevant / not relevant in the chat")
    for what in ("by_mark", "by_retriever", "by_user"):
        for key, value in summary[what].items():
            counts = value if isinstance(value, dict) else {"marks": value}
            text = ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
            typer.echo(f"  {what.removeprefix('by_')} {key}: {text}")
    agreement = summary["agreement"]
    if agreement is not None:
        typer.echo(
            f"  agreement: {agreement:.0%} of {summary['passages_with_several_voters']} "
            "passages marked by several voters"
        )
    typer.echo(
        f"  {summary['questions_marked']} questions marked, {summary['queries_logged']} logged"
    )
    for line in summary["skipped_lines"]:
        typer.secho(f"  skipped {line}", fg=typer.colors.YELLOW)


@feedback_app.command("export")
def feedback_export_cmd(
    out: Annotated[Path, typer.Argument(help="New folder for the BEIR export.")],
    config: ConfigOpt = None,
    workspace: WorkspaceOpt = None,
    force: Annotated[bool, typer.Option("--force", help="Replace `out` if it exists.")] = False,
    skip_invalid: SkipInvalidOpt = False,
) -> None:
    """Write the source marks as BEIR (queries.jsonl, qrels/train.tsv) for finetune / eval."""
    from rag_app.feedback.export import export

    settings = settings_or_exit(config, workspace=workspace)
    try:
        report = export(settings, out, force=force, strict=not skip_invalid)
    except (RagAppError, FileExistsError, FileNotFoundError, ValueError) as exc:
        fail(str(exc))
    typer.echo(report.summary())
    typer.echo(f"train on it: rag-app finetune --train-data {out}")


def _load_plugins() -> None:
    """Add the commands of installed plugins (entry-point group `rag_app.cli`).

    `finetune` and `eval` register their commands this way; a plugin whose import fails
    is reported and skipped so the serving commands keep working.
    """
    from importlib.metadata import entry_points

    for ep in sorted(entry_points(group="rag_app.cli"), key=lambda e: e.name):
        try:
            register = ep.load()
        except (ImportError, AttributeError) as exc:
            logging.getLogger(__name__).warning("CLI plugin %s not loaded: %s", ep.name, exc)
            continue
        register(app)


_load_plugins()


def run() -> None:
    app()


if __name__ == "__main__":
    run()
