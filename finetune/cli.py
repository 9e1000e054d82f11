"""`rag-app` commands of the fine-tuning side, added to the CLI as an entry-point plugin.

Each command parses options, calls one function and prints:
`synth` -> `finetune.synth.run`, `finetune` -> `finetune.job.run` /
`finetune.reranker.train_reranker`, `models` -> `rag_app.runs.list_runs`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from rag_app.cli_common import ConfigOpt, WorkspaceOpt, fail, settings_or_exit
from rag_app.errors import RagAppError
from rag_app.runs import RunKind, RunRecord


def synth_cmd(
    config: ConfigOpt = None,
    workspace: WorkspaceOpt = None,
    per_chunk: Annotated[
        int | None, typer.Option("--per-chunk", "-n", help="LLM query candidates per chunk.")
    ] = None,
    structural: Annotated[
        int | None,
        typer.Option(help="Pseudo-queries per chunk from titles, headings and key terms."),
    ] = None,
    max_chunks: Annotated[
        int | None,
        typer.Option(
            help="Ask the LLM about at most this many chunks (seeded sample; default 150, "
            "0 = every chunk). Structural queries cover every chunk."
        ),
    ] = None,
    top_k: Annotated[
        int | None,
        typer.Option("--consistency-k", help="Keep a query if its chunk is in the base top k."),
    ] = None,
    llm: Annotated[
        str | None, typer.Option(help="LLM backend: embedded, llamacpp, openai or none.")
    ] = None,
    prompts: Annotated[
        Path | None, typer.Option(help="TOML file overriding the query prompts.")
    ] = None,
) -> None:
    """Write synthetic search queries (the LLM's for a sample of chunks, structural ones for
    every chunk; resumable), then filter them."""
    from finetune import synth

    settings = settings_or_exit(
        config,
        workspace=workspace,
        llm={"backend": llm},
        synth={
            "llm_queries_per_chunk": per_chunk,
            "structural_queries_per_chunk": structural,
            "max_chunks": max_chunks,
            "consistency_top_k": top_k,
            "prompts_file": prompts,
        },
    )
    try:
        report = synth.run(settings, progress=sys.stderr.isatty())
    except (RagAppError, FileNotFoundError, ValueError) as exc:
        fail(str(exc))
    typer.echo(report.summary())


def finetune_cmd(
    config: ConfigOpt = None,
    workspace: WorkspaceOpt = None,
    embedder: Annotated[
        bool, typer.Option("--embedder/--no-embedder", help="Fine-tune the embedder.")
    ] = True,
    reranker: Annotated[
        bool | None,
        typer.Option(
            "--reranker/--no-reranker",
            help="Also train a cross-encoder reranker (default: finetune.reranker.enabled).",
        ),
    ] = None,
    name: Annotated[str | None, typer.Option(help="Run name (default: <model>-ft-<time>).")] = None,
    epochs: Annotated[float | None, typer.Option(help="Training epochs.")] = None,
    max_steps: Annotated[int | None, typer.Option(help="Stop after this many steps.")] = None,
    lr: Annotated[float | None, typer.Option("--lr", help="Learning rate.")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Pairs per batch.")] = None,
    train_data: Annotated[
        list[Path] | None,
        typer.Option(help="Labelled pairs (BEIR folder or CSV query,passage_id); repeatable."),
    ] = None,
    no_synthetic: Annotated[
        bool, typer.Option("--no-synthetic", help="Train on --train-data only.")
    ] = False,
    merge_alpha: Annotated[
        float | None,
        typer.Option(help="Keep alpha x tuned + (1 - alpha) x base weights (WiSE-FT)."),
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Retrain even if an identical run exists.")
    ] = False,
    adapter: Annotated[
        bool | None,
        typer.Option(
            "--adapter/--full",
            help=(
                "--adapter: train a query-side adapter on the frozen embedder (no re-index); "
                "--full: fine-tune every weight. Default: finetune.method (adapter)."
            ),
        ),
    ] = None,
    adapter_kind: Annotated[
        str | None, typer.Option(help="--adapter: linear or mlp (default: finetune.adapter.kind).")
    ] = None,
) -> None:
    """Fine-tune the embedder (and the reranker) on synthetic / labelled pairs."""
    from finetune import adapter as adapter_mod
    from finetune import data as data_mod
    from finetune import publish, train
    from finetune import reranker as reranker_mod
    from rag_app.chunkstore import CorruptWorkspaceError, NotIngestedError
    from rag_app.models import ModelNotFoundError

    settings = settings_or_exit(
        config,
        workspace=workspace,
        finetune={
            "epochs": epochs,
            "max_steps": max_steps,
            "learning_rate": lr,
            "batch_size": batch_size,
            "train_data": [str(p) for p in train_data] if train_data else None,
            "use_synthetic": False if no_synthetic else None,
            "reranker": None if reranker is None else {"enabled": reranker},
            "merge_alpha": merge_alpha,
            "adapter": None if adapter_kind is None else {"kind": adapter_kind},
            "method": None if adapter is None else ("adapter" if adapter else "full"),
        },
    )
    adapter = settings.finetune.method == "adapter"
    do_reranker = settings.finetune.reranker.enabled
    if not embedder and not do_reranker:
        fail("nothing to train: --no-embedder and --no-reranker")
    errors = (
        data_mod.NoTrainingDataError,
        NotIngestedError,
        CorruptWorkspaceError,
        ModelNotFoundError,
        FileExistsError,
        FileNotFoundError,
        ValueError,
    )
    progress = sys.stderr.isatty()
    try:
        data = data_mod.prepare(settings)
        typer.echo(
            f"data: {len(data.train)} train / {len(data.val)} validation pairs "
            f"(split by {settings.finetune.split_by}); sources {data.sources}"
        )
        if embedder:
            job = "adapter" if adapter else "embedder"
            found = None
            if not force and name is None:
                fingerprint = data_mod.data_fingerprint(settings, data, job)
                found = publish.existing_run(settings, fingerprint, RunKind.EMBEDDER)
            trainer = adapter_mod.train_adapter if adapter else train.train_embedder
            report = found or trainer(settings, data, name=name, progress=progress)
            typer.echo(report.summary())
            record = report.record
            if record.guard.get("queries"):
                guard = record.guard
                typer.echo(f"guard: {guard['queries']} real questions ({guard.get('source')})")
            if record.selection:
                typer.echo(f"recipe: {record.selection}")
            for line in fusion_lines(record):
                typer.echo(line)
            if adapter:
                typer.echo(
                    f"no re-index needed: it serves from the base model's index; "
                    f"try: rag-app search 'your question' --model {report.path}"
                )
            else:
                typer.echo(f"next: rag-app index --model {report.path}")
        if do_reranker:
            rname = f"{name}-reranker" if name and embedder else name
            report = reranker_mod.run(
                settings, name=rname, progress=progress, force=force, data=data
            )
            typer.echo(report.summary())
            if report.recommended:
                typer.echo("use it with models.reranker = 'auto' (or the path above)")
    except errors as exc:
        fail(str(exc))


def models_cmd(
    config: ConfigOpt = None,
    workspace: WorkspaceOpt = None,
    kind: Annotated[str | None, typer.Option(help="embedder or reranker.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the runs as JSON.")] = False,
) -> None:
    """List the base models and the trained runs in the workspace, with their metrics."""
    from rag_app.runs import list_runs

    settings = settings_or_exit(config, workspace=workspace)
    runs = list_runs(settings, kind=kind)
    if as_json:
        rows = [
            {**r.record.model_dump(mode="json"), "name": r.name, "path": str(r.path)} for r in runs
        ]
        typer.echo(json.dumps(rows, indent=2))
        return
    typer.echo(f"base embedder: {settings.models.embedder}")
    if not runs:
        typer.echo(f"no trained runs in {settings.models_dir} (train one: rag-app finetune)")
    for run in runs:
        rec = run.record
        shown = {
            k: v
            for k, v in run.metrics.items()
            if isinstance(v, int | float) and ("mrr@10" in k or "ndcg@10" in k)
        }
        metrics = ", ".join(f"{k} {v:.3f}" for k, v in sorted(shown.items()))
        typer.echo(f"{run.name}  [{rec.label}, {rec.verdict_text}]  {run.created}\n    {metrics}")
        guard = rec.guard
        if guard.get("queries"):
            typer.echo(f"    guard: {guard['queries']} questions ({guard.get('source')})")
        for cand in rec.candidates:
            won = "  <- served" if cand["recipe"] == rec.recipe else ""
            low, high = cand["ci"]
            typer.echo(
                f"    recipe {cand['recipe']}: guard nDCG@10 {cand['gain'] * 100:+.2f} "
                f"[{low * 100:+.2f}, {high * 100:+.2f}] ({cand['train_pairs']} pairs){won}"
            )
        for line in fusion_lines(rec):
            typer.echo(f"    {line}")


def fusion_lines(record: RunRecord) -> list[str]:
    """What run.json says about the fusion chosen for the base model and for the run."""
    from rag_app.fusion import Measured

    lines = []
    for role, data in record.fusion.items():
        if role == "note":
            lines.append(f"hybrid search: {data}")
        elif not isinstance(data, dict):
            continue
        elif data.get("choice"):
            lines.append(f"hybrid search ({role}): {Measured.from_json(data).describe()}")
        elif data.get("error"):
            lines.append(f"hybrid search ({role}): not measured ({data['error']}); the default")
    return lines


def register(app: typer.Typer) -> None:
    """Add the fine-tuning commands to the `rag-app` CLI."""
    app.command("synth")(synth_cmd)
    app.command("finetune")(finetune_cmd)
    app.command("models")(models_cmd)
