"""`rag-app eval ...` commands, added to the CLI as an entry-point plugin.

``rag-app eval retrieval [DATASET]``, ``rag-app eval answers [DATASET]`` and
``rag-app eval report``; each is a thin wrapper over ``eval.retrieval.run_retrieval_eval``,
``eval.answers.run_answer_eval`` and ``eval.report.write_report``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from rag_app.cli_common import ConfigOpt, WorkspaceOpt, fail, settings_or_exit
from rag_app.errors import RagAppError

DatasetArg = Annotated[
    Path | None,
    typer.Argument(
        help="BEIR-layout folder (corpus.jsonl optional, queries.jsonl, qrels/<split>.tsv). "
        "Default: the workspace's synthetic validation split, else <corpus>/eval."
    ),
]
ConfigsOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--configs",
        help="Configurations, repeatable or comma-separated: bm25, dense-base, dense-finetuned, "
        "hybrid-base, hybrid-finetuned, each optionally +rerank.",
    ),
]
SplitOpt = Annotated[str, typer.Option(help="qrels split of a BEIR dataset.")]
FinetunedOpt = Annotated[
    Path | None,
    typer.Option(help="Fine-tuned model directory (default: the newest in the workspace)."),
]
OverlapOpt = Annotated[
    str,
    typer.Option(
        "--on-overlap", help="Eval queries that are training queries: 'drop' them or 'refuse'."
    ),
]
LimitOpt = Annotated[int | None, typer.Option(help="Only the first N queries (smoke runs).")]
OutOpt = Annotated[Path | None, typer.Option("--out", help="Folder for the results.")]


def _configs(values: list[str] | None) -> list[str] | None:
    if not values:
        return None
    return [c.strip() for v in values for c in v.split(",") if c.strip()]


def register(app: typer.Typer) -> None:
    """Add the ``eval`` sub-app with ``retrieval``, ``answers`` and ``report``."""
    eval_app = typer.Typer(
        name="eval",
        help="Measure retrieval and answer quality, base versus fine-tuned, on held-out queries.",
        no_args_is_help=True,
    )

    @eval_app.command("retrieval")
    def retrieval_cmd(
        dataset: DatasetArg = None,
        config: ConfigOpt = None,
        workspace: WorkspaceOpt = None,
        configs: ConfigsOpt = None,
        k: Annotated[int, typer.Option(help="Cut-off for recall/precision/MAP/hit rate.")] = 10,
        split: SplitOpt = "test",
        finetuned: FinetunedOpt = None,
        on_overlap: OverlapOpt = "drop",
        limit: LimitOpt = None,
        out: OutOpt = None,
        report: Annotated[bool, typer.Option(help="Also write the HTML/Markdown report.")] = True,
    ) -> None:
        """Score BM25, dense and hybrid retrieval (base and fine-tuned) with paired tests."""
        from eval.retrieval import run_retrieval_eval, summary_lines

        settings = settings_or_exit(config, workspace=workspace)
        try:
            result = run_retrieval_eval(
                settings,
                dataset,
                _configs(configs),
                k,
                split=split,
                finetuned=finetuned,
                on_overlap=on_overlap,
                limit=limit,
                out_dir=out,
                progress=sys.stderr.isatty(),
                echo=typer.echo,
            )
        except (RagAppError, FileNotFoundError, ValueError, RuntimeError) as exc:
            fail(str(exc))
        for line in summary_lines(result):
            typer.echo(line)
        for note in result.notes:
            typer.echo(f"note: {note}")
        if report and result.out_dir is not None:
            from eval.report import write_report

            paths = write_report(result.out_dir)
            typer.echo(f"report: {paths['html']}")

    @eval_app.command("answers")
    def answers_cmd(
        dataset: DatasetArg = None,
        config: ConfigOpt = None,
        workspace: WorkspaceOpt = None,
        configs: ConfigsOpt = None,
        k: Annotated[int | None, typer.Option(help="Passages per answer.")] = None,
        split: SplitOpt = "test",
        finetuned: FinetunedOpt = None,
        on_overlap: OverlapOpt = "drop",
        limit: Annotated[int | None, typer.Option(help="Queries to answer.")] = 50,
        judge_runs: Annotated[
            int, typer.Option(help="Also ask the configured LLM to judge each answer N times.")
        ] = 0,
        mode: Annotated[
            str | None,
            typer.Option(help="Answer mode: auto, extractive or generative (default answer.mode)."),
        ] = None,
        out: OutOpt = None,
    ) -> None:
        """Answer with each retriever's context, as the chat does; score correctness against
        reference answers (key facts) and grounding offline."""
        from eval.answers import run_answer_eval
        from rag_app.answer_modes import needs_llm

        settings = settings_or_exit(config, workspace=workspace, answer={"mode": mode})
        try:
            from rag_app.llm.factory import build_llm

            llm = build_llm(settings) if needs_llm(settings) or judge_runs else None
            result = run_answer_eval(
                settings,
                dataset,
                _configs(configs),
                llm,
                k=k,
                split=split,
                finetuned=finetuned,
                on_overlap=on_overlap,
                limit=limit,
                judge_llm=llm if judge_runs else None,
                judge_runs=judge_runs,
                out_dir=out,
                progress=sys.stderr.isatty(),
                echo=typer.echo,
            )
        except (FileNotFoundError, ValueError, RuntimeError) as exc:
            fail(str(exc))
        for note in result.notes:
            typer.echo(f"note: {note}")

    @eval_app.command("report")
    def report_cmd(
        retrieval: Annotated[
            Path | None, typer.Option(help="Retrieval results folder (default: newest).")
        ] = None,
        answers: Annotated[
            Path | None, typer.Option(help="Answer results folder (default: newest).")
        ] = None,
        config: ConfigOpt = None,
        workspace: WorkspaceOpt = None,
        out: OutOpt = None,
    ) -> None:
        """Write a self-contained HTML report (and Markdown, JSON) of saved eval results."""
        from eval.report import write_report

        settings = settings_or_exit(config, workspace=workspace)
        if retrieval is None and answers is None:
            from eval.report import latest_result

            retrieval = latest_result(Path(settings.eval_dir) / "retrieval")
            answers = latest_result(Path(settings.eval_dir) / "answers")
        try:
            paths = write_report(retrieval, answers, out, settings=settings)
        except (FileNotFoundError, ValueError) as exc:
            fail(str(exc))
        for kind, path in paths.items():
            typer.echo(f"{kind}: {path}")

    app.add_typer(eval_app, name="eval")
