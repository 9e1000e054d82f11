"""Training throughput (issue 7): `rag-app finetune`'s embedder training vs a bare trainer.

    .venv/bin/python bench/bench_train.py                  # 480 labelled medquad-small pairs
    .venv/bin/python bench/bench_train.py --pairs 960 --repeats 2

Both sides train the same base model on the same rows (query, positive, mined hard
negative) with the same loss, batch size, sequence length, frozen layers, learning rate,
warmup, no-duplicates sampler and seed, in the same process:

- **ours**: `finetune.train.train_embedder`, the `rag-app finetune` path, whose training loop
  also validates on the held-out split once an epoch (embedding every passage) and keeps
  the best checkpoint;
- **bare**: a plain `SentenceTransformerTrainer` with no evaluator and no checkpoints.

Reported: training pairs/s of each (examples seen / seconds of training steps), their
ratio (issue 7's target: ours / bare >= 0.95), ours again with the in-loop validation
counted (``trainer.train()`` wall time: the epoch-end evaluation that picks the best
checkpoint embeds every passage), and our end-to-end time (mining, scoring before / after,
saving). Pairs are the dataset's labelled
training pairs (qrels/train.tsv), so no LLM is needed; the synthetic path trains the same
way. Writes ``bench/results/train-<dataset>-<date>.{json,md}``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import random
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from _common import DEFAULT_DATASET, REPO, RESULTS, peak_rss_mb

from rag_app.config import updated_finetune


def bare_pairs_per_s(settings, rows: list[dict[str, str]], output_dir: Path) -> float:
    """Train with a plain SentenceTransformerTrainer on `rows`; examples seen per second."""
    from datasets import Dataset
    from sentence_transformers import (
        SentenceTransformer,
        SentenceTransformerTrainer,
        SentenceTransformerTrainingArguments,
    )

    try:
        from sentence_transformers.sentence_transformer.training_args import BatchSamplers
    except ImportError:  # pragma: no cover - 5.x
        from sentence_transformers.training_args import BatchSamplers
    from transformers import set_seed

    from finetune.train import build_loss, freeze_layers
    from finetune.trainer_args import warmup_args
    from rag_app.models import resolve_embedder

    cfg = settings.finetune
    set_seed(settings.seed)
    model = SentenceTransformer(resolve_embedder(settings.models.embedder).location, device="cpu")
    model.max_seq_length = min(cfg.max_seq_length, model.max_seq_length or cfg.max_seq_length)
    freeze_layers(model, cfg.freeze_layers)
    columns = list(rows[0])
    args = SentenceTransformerTrainingArguments(
        output_dir=str(output_dir),
        num_train_epochs=cfg.epochs,
        per_device_train_batch_size=cfg.batch_size,
        learning_rate=cfg.learning_rate,
        weight_decay=cfg.weight_decay,
        **warmup_args(cfg.warmup_ratio),
        batch_sampler=BatchSamplers.NO_DUPLICATES,
        save_strategy="no",
        eval_strategy="no",
        report_to="none",
        seed=settings.seed,
        data_seed=settings.seed,
        use_cpu=True,
        disable_tqdm=True,
        dataloader_num_workers=0,
    )
    trainer = SentenceTransformerTrainer(
        model=model,
        args=args,
        train_dataset=Dataset.from_dict({c: [r[c] for r in rows] for c in columns}),
        loss=build_loss(model, settings),
    )
    began = time.perf_counter()
    result = trainer.train()
    return int(result.global_step) * cfg.batch_size / (time.perf_counter() - began)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", type=Path, default=DEFAULT_DATASET)
    parser.add_argument("--workspace", type=Path, default=REPO / "workspace" / "bench-quality")
    parser.add_argument("--pairs", type=int, default=480, help="training pairs (sampled)")
    parser.add_argument("--repeats", type=int, default=1, help="alternating bare / ours runs")
    args = parser.parse_args(argv)

    from eval.sets import ingest_beir_corpus
    from finetune import negatives, train
    from rag_app.config import load_settings
    from rag_app.embedder import Embedder
    from rag_app.ir.beir import fingerprint, load_beir

    settings = load_settings(workspace=args.workspace)
    dataset = load_beir(args.dataset, split="test", on_duplicate_query="disambiguate")
    ns = ingest_beir_corpus(settings, dataset, fingerprint(args.dataset))
    ns = ns.model_copy(
        update={
            "finetune": updated_finetune(
                ns.finetune,
                **{
                    "train_data": [args.dataset],
                    "use_synthetic": False,
                    "reranker": {"enabled": False},
                },
            )
        }
    )
    data = train.prepare(ns)
    sample = random.Random(ns.seed).sample(data.train, min(args.pairs, len(data.train)))
    data = dataclasses.replace(data, train=sample)
    base = Embedder.load(ns.models.embedder, device="cpu")
    rows, _ = negatives.mine(data.train, data.passages, base.model, ns)
    print(f"{len(rows)} training rows, {len(data.val)} validation pairs", flush=True)

    bare, ours, ours_with_eval, records = [], [], [], []
    for repeat in range(args.repeats):
        bare.append(bare_pairs_per_s(ns, rows, ns.workspace / "tmp" / "bench-train-bare"))
        began = time.perf_counter()
        stamp = datetime.now(UTC).strftime("%Y%m%d%H%M%S")
        report = train.train_embedder(ns, data, name=f"bench-train-{stamp}-{repeat}")
        total = time.perf_counter() - began
        record = report.record
        ours.append(record.pairs_per_s)
        ours_with_eval.append(record.steps * ns.finetune.batch_size / record.train_seconds)
        records.append(
            {
                "train_seconds": record.train_seconds,
                "eval_seconds": record.eval_seconds,
                "end_to_end_seconds": round(total, 1),
                "steps": record.steps,
            }
        )
        print(f"pass {repeat + 1}: bare {bare[-1]:.2f} pairs/s, ours {ours[-1]:.2f}", flush=True)

    cfg = ns.finetune
    peak_mb = peak_rss_mb()
    ratio = statistics.median(ours) / statistics.median(bare)
    date = datetime.now(UTC).date().isoformat()
    machine = f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.system()}"
    command = "python bench/bench_train.py " + " ".join(argv if argv is not None else sys.argv[1:])
    result = {
        "date": date,
        "machine": machine,
        "command": command,
        "rows": len(rows),
        "settings": {
            "batch_size": cfg.batch_size,
            "max_seq_length": cfg.max_seq_length,
            "freeze_layers": cfg.freeze_layers,
            "negatives_per_query": cfg.negatives.per_query,
            "epochs": cfg.epochs,
        },
        "bare_pairs_per_s": bare,
        "ours_pairs_per_s": ours,
        "ours_with_validation_pairs_per_s": ours_with_eval,
        "ratio": round(ratio, 3),
        "ours_runs": records,
        "peak_rss_mb": peak_mb,
    }
    md = [
        f"Command: `{command}` ({date}, {machine})",
        "",
        f"{len(rows)} rows, batch {cfg.batch_size}, seq {cfg.max_seq_length}, "
        f"{cfg.freeze_layers} frozen layers, {cfg.negatives.per_query} hard negative(s) a row",
        "",
        "| path | pairs/s (median) | runs |",
        "|---|---:|---:|",
        f"| bare SentenceTransformerTrainer | {statistics.median(bare):.2f} | {len(bare)} |",
        f"| rag-app finetune (train_embedder) | {statistics.median(ours):.2f} | {len(ours)} |",
        f"| ratio ours / bare | {ratio:.2f}x | |",
        f"| rag-app finetune, in-loop validation counted | {statistics.median(ours_with_eval):.2f} "
        f"| {len(ours_with_eval)} |",
        "",
        f"Peak RSS of the process (base model, mining, both trainings): {peak_mb:.0f} MB",
    ]
    RESULTS.mkdir(parents=True, exist_ok=True)
    stem = RESULTS / f"train-{args.dataset.resolve().name}-{date}"
    stem.with_suffix(".json").write_text(json.dumps(result, indent=2), encoding="utf-8")
    stem.with_suffix(".md").write_text("\n".join(md) + "\n", encoding="utf-8")
    print("\n".join(md))
    print(json.dumps(records))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
