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
from typing import Annotated, Any

import typer

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")  # chromadb's posthog

app = typer.Typer(
    name="rag-app",
    help="Domain RAG chatbot that fine-tunes its own retriever. Offline by default.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

ConfigOpt = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="TOML config file (default: ./rag-app.toml if present)."),
]
WorkspaceOpt = Annotated[
    Path | None, typer.Option("--workspace", "-w", help="Folder holding all of the app's state.")
]


class _State:
    verbose: bool = False


def _settings(config: Path | None, **overrides: Any):
    from rag_app.config import load_settings

    try:
        return load_settings(config, **overrides)
    except Exception as exc:  # validation errors: show them, not a traceback
        _fail(f"invalid configuration: {exc}")


def _fail(message: str, code: int = 1) -> None:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


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
    settings = _settings(config, workspace=workspace)
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
) -> None:
    """Read a folder of Markdown, text, HTML, PDF and DOCX files into chunks."""
    from rag_app import ingest

    settings = _settings(
        config,
        workspace=workspace,
        corpus=corpus,
        ingest={"chunk_size": chunk_size, "chunk_overlap": chunk_overlap},
    )
    try:
        report = ingest.run(settings, rebuild=rebuild, progress=sys.stderr.isatty())
    except (FileNotFoundError, ValueError) as exc:
        _fail(str(exc))
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
