"""Quality benchmark (issue 7): retrieval quality on a BEIR dataset's test split.

    .venv/bin/python bench/bench_quality.py                       # medquad-small, test split
    .venv/bin/python bench/bench_quality.py --dataset ../shared/datasets/medquad
    .venv/bin/python bench/bench_quality.py --finetuned workspace/models/<run>   # synthetic FT
    .venv/bin/python bench/bench_quality.py --supervised                         # qrels/train FT

Configurations: BM25, dense base, hybrid base, and, given a fine-tuned model, dense / hybrid
fine-tuned, each also with a trained reranker when one is configured or trained in the
workspace. ``--finetuned`` is a model fine-tuned on *synthetic queries written from the corpus*
(``rag-app finetune`` on this dataset's passages); ``--supervised`` additionally fine-tunes the
base model on the dataset's own labelled pairs (``qrels/train.tsv``, 1 epoch, MNRL) for the
"how much of the supervised gain do synthetic queries recover" comparison. The test split is
never trained on: the eval's training-query guard drops any test query that appears among a
model's training queries and prints the count.

Writes ``bench/results/quality-<dataset>-<date>.{json,md}`` (and the eval's own results and
HTML report under the bench workspace) and prints Markdown rows for docs/BENCHMARKS.md.
This is a benchmark, not a test: the first run embeds every passage with each model (about
4 minutes per model for medquad-small on a 2-core CPU).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from _common import DEFAULT_DATASET, REPO, RESULTS


def train_supervised(dataset: Path, out: Path, base: str, epochs: int, batch: int) -> Path:
    """Fine-tune ``base`` on (query, relevant passage) pairs of qrels/train.tsv with MNRL."""
    if (out / "modules.json").is_file() and (out / "run.json").is_file():
        print(f"supervised model already trained: {out}")
        return out
    from datasets import Dataset
    from sentence_transformers import (
        SentenceTransformer,
        SentenceTransformerTrainer,
        SentenceTransformerTrainingArguments,
    )
    from sentence_transformers.losses import MultipleNegativesRankingLoss

    from finetune.publish import write_record
    from rag_app.ir.beir import load_beir
    from rag_app.models import resolve_embedder
    from rag_app.runs import RunKind, RunRecord

    train = load_beir(dataset, split="train", on_duplicate_query="disambiguate")
    anchors, positives = [], []
    for qid, docs in train.qrels.items():
        for doc_id, grade in docs.items():
            if grade > 0:
                doc = train.corpus[doc_id]
                title = doc.get("title") or ""
                anchors.append(train.queries[qid])
                positives.append(f"{title}\n{doc['text']}" if title else doc["text"])
    print(f"supervised fine-tuning on {len(anchors)} pairs from qrels/train.tsv ...")
    model = SentenceTransformer(str(resolve_embedder(base).path), device="cpu")
    args = SentenceTransformerTrainingArguments(
        output_dir=str(out / "checkpoints"),
        num_train_epochs=epochs,
        per_device_train_batch_size=batch,
        learning_rate=2e-5,
        warmup_ratio=0.1,
        save_strategy="no",
        logging_steps=50,
        report_to=[],
        seed=42,
        batch_sampler="no_duplicates",
    )
    started = time.perf_counter()
    trainer = SentenceTransformerTrainer(
        model=model,
        args=args,
        train_dataset=Dataset.from_dict({"anchor": anchors, "positive": positives}),
        loss=MultipleNegativesRankingLoss(model),
    )
    trainer.train()
    model.save(str(out))
    train_file = out / "train_queries.jsonl"
    train_file.write_text(
        "".join(json.dumps({"query": q}) + "\n" for q in dict.fromkeys(anchors)), encoding="utf-8"
    )
    write_record(
        out,
        RunRecord(
            kind=RunKind.EMBEDDER,
            name=out.name,
            base_model=base,
            train_file=str(train_file),
            train_pairs=len(anchors),
            train_seconds=round(time.perf_counter() - started, 1),
            train_source=f"{dataset}/qrels/train.tsv",
            epochs=epochs,
            batch_size=batch,
        ),
    )
    return out


def rows_markdown(data: dict, label: str) -> list[str]:
    metrics = ["ndcg@10", "recall@10", "mrr@10"]
    lines = [
        f"| {label} config | " + " | ".join(metrics) + " | p50 ms |",
        "|---|" + "---:|" * (len(metrics) + 1),
    ]
    for name, cfg in data["configs"].items():
        lines.append(
            f"| {name} | "
            + " | ".join(f"{cfg['mean'][m]:.4f}" for m in metrics)
            + f" | {cfg['latency_ms_p50']:.1f} |"
        )
    gains = [c for c in data["comparisons"] if c["metric"] == "ndcg@10"]
    if gains:
        lines += [
            "",
            "| fine-tuned vs base | nDCG@10 delta [95% paired bootstrap CI] | p | W/L/T |",
            "|---|---|---:|---|",
        ]
        for c in gains:
            tag = " (best vs best)" if c.get("best_vs_best") else ""
            lines.append(
                f"| {c['candidate']} vs {c['base']}{tag} | {c['delta'] * 100:+.2f} pts "
                f"[{c['ci_low'] * 100:+.2f}, {c['ci_high'] * 100:+.2f}] | {c['p_value']:.4f} | "
                f"{c['wins']}/{c['losses']}/{c['ties']} |"
            )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", type=Path, default=DEFAULT_DATASET)
    parser.add_argument("--split", default="test")
    parser.add_argument("--workspace", type=Path, default=REPO / "workspace" / "bench-quality")
    parser.add_argument("--finetuned", type=Path, help="model fine-tuned on synthetic queries")
    parser.add_argument("--supervised", action="store_true", help="also fine-tune on qrels/train")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--rerank", action="store_true", help="add +rerank configurations")
    parser.add_argument("--limit", type=int, default=None, help="first N test queries only")
    parser.add_argument("--k", type=int, default=10)
    args = parser.parse_args(argv)

    from eval.report import write_report
    from eval.retrieval import run_retrieval_eval, summary_lines
    from rag_app.config import load_settings

    settings = load_settings(workspace=args.workspace)
    name = args.dataset.resolve().name
    date = datetime.now(UTC).strftime("%Y-%m-%d")
    RESULTS.mkdir(parents=True, exist_ok=True)
    machine = f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.system()}"
    command = "python bench/bench_quality.py " + " ".join(argv or sys.argv[1:])

    runs: list[tuple[str, Path | None]] = [
        ("synthetic" if args.finetuned else "base", args.finetuned)
    ]
    if args.supervised:
        supervised = train_supervised(
            args.dataset,
            args.workspace / "models" / f"supervised-{name}",
            settings.models.embedder,
            args.epochs,
            args.batch_size,
        )
        runs.append(("supervised", supervised))

    report: dict = {
        "dataset": str(args.dataset),
        "split": args.split,
        "date": date,
        "machine": machine,
        "command": command,
        "runs": {},
    }
    md: list[str] = [
        f"### Retrieval quality: {name}, {args.split} split ({date}, {machine})",
        "",
        f"Command: `{command}`",
        "",
    ]
    for label, model in runs:
        configs = ["bm25", "dense-base", "hybrid-base"]
        if model is not None:
            configs += ["dense-finetuned", "hybrid-finetuned"]
        if args.rerank:
            configs += [c + "+rerank" for c in configs if c != "bm25"]
        started = time.perf_counter()
        result = run_retrieval_eval(
            settings,
            args.dataset,
            configs,
            args.k,
            split=args.split,
            finetuned=model,
            limit=args.limit,
            out_dir=args.workspace / "eval" / "retrieval" / f"{name}-{args.split}-{label}",
            progress=True,
            echo=print,
        )
        paths = write_report(result.out_dir)
        data = result.to_dict()
        data["seconds"] = round(time.perf_counter() - started, 1)
        data["report"] = str(paths["html"])
        report["runs"][label] = data
        print("\n".join(summary_lines(result)))
        md += [f"Fine-tuned model: {label} ({model or 'none'})", ""]
        md += rows_markdown(data, label)
        md += ["", f"Report: `{paths['html']}`", ""]
        if result.notes:
            md += [f"> {n}" for n in result.notes] + [""]
        if result.skipped_configs:
            md += [f"- not run: {n}: {r}" for n, r in result.skipped_configs.items()] + [""]

    stem = RESULTS / f"quality-{name}-{date}"
    stem.with_suffix(".json").write_text(json.dumps(report, indent=2), encoding="utf-8")
    stem.with_suffix(".md").write_text("\n".join(md) + "\n", encoding="utf-8")
    print("\n".join(md))
    print(f"\nwritten {stem}.json and {stem}.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
