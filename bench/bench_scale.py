"""How cost grows with the corpus (issue 7): index time and query latency at 1k, 5k, 10k passages.

    .venv/bin/python bench/bench_scale.py                          # medquad: 1000, 5000, 10000
    .venv/bin/python bench/bench_scale.py --sizes 500,2000 --limit 50

Each size is a seeded random sample of the dataset's passages, written to its own eval
namespace and indexed with the base model by `rag_app.index.run` — the path `rag-app index`
takes (BM25 build, batched embedding into the embedded Chroma). The first run of a size
embeds every passage and that is its index time; a later run finds the collection up to
date and reports the time as cached (delete ``workspace/bench-scale`` to measure again).
Query latency uses the dataset's test questions (for timing, any question will do): BM25,
dense and hybrid, the median of ``--repeats`` timed passes per query after a warm-up pass,
then p50 / p95 over queries. Reranking is left out: its cost is per candidate pair, not
per passage in the corpus (see bench_latency.py).

Writes ``bench/results/scale-<dataset>-<date>.{json,md}``. Beyond the sizes a laptop can
embed, `bench_scale_sim.py` continues the curve to a million passages with simulated vectors.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import platform
import random
import sys
from datetime import UTC, datetime
from pathlib import Path

from _common import REPO, write_results

MODES = ("bm25", "dense", "hybrid")


def sample_dataset(dataset, size: int, seed: int):
    """The dataset restricted to `size` passages drawn with `seed` (all of them if fewer)."""
    ids = sorted(dataset.corpus)
    chosen = sorted(random.Random(seed).sample(ids, min(size, len(ids))))
    corpus = {doc_id: dataset.corpus[doc_id] for doc_id in chosen}
    return dataclasses.replace(dataset, corpus=corpus, name=f"{dataset.name}-{len(corpus)}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", type=Path, default=REPO.parent / "shared/datasets/medquad")
    parser.add_argument("--workspace", type=Path, default=REPO / "workspace" / "bench-scale")
    parser.add_argument("--sizes", default="1000,5000,10000")
    parser.add_argument("--limit", type=int, default=100, help="Test queries to time.")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args(argv)

    from _common import percentile
    from bench_latency import time_queries

    from eval.sets import ingest_beir_corpus
    from rag_app import index
    from rag_app.config import load_settings
    from rag_app.ir.beir import fingerprint, load_beir
    from rag_app.retrieve import build_retriever

    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    settings = load_settings(workspace=args.workspace)
    full = load_beir(args.dataset, split="test", on_duplicate_query="drop")
    queries = list(full.queries.values())[: args.limit]
    base_digest = fingerprint(args.dataset)
    rows = []
    for size in sizes:
        subset = sample_dataset(full, size, args.seed)
        digest = hashlib.sha256(f"{base_digest}:{len(subset.corpus)}:{args.seed}".encode())
        ns = ingest_beir_corpus(settings, subset, digest.hexdigest())
        report = index.run(ns, progress=True)
        row = {
            "passages": len(subset.corpus),
            "embedded": report.embedded,
            "index_seconds": round(report.seconds, 1) if report.embedded else None,
            "passages_per_s": round(report.chunks_per_s, 1) if report.embedded else None,
        }
        for mode in MODES:
            retriever = build_retriever(ns, mode=mode, rerank=False)
            times = time_queries(
                lambda q, r=retriever: r.retrieve(q, args.k), queries, args.repeats
            )
            row[mode] = {"p50_ms": percentile(times, 50), "p95_ms": percentile(times, 95)}
        print(json.dumps(row), flush=True)
        rows.append(row)

    date = datetime.now(UTC).date().isoformat()
    machine = f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.system()}"
    command = "python bench/bench_scale.py " + " ".join(argv if argv is not None else sys.argv[1:])
    md = [
        f"Command: `{command}` ({date}, {machine}; {len(queries)} queries, k = {args.k})",
        "",
        "| passages | index s (embed + BM25) | passages/s | bm25 p50 / p95 ms "
        "| dense p50 / p95 ms | hybrid p50 / p95 ms |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        cost = (
            f"{row['index_seconds']} | {row['passages_per_s']}" if row["embedded"] else "cached | –"
        )
        latency = " | ".join(f"{row[m]['p50_ms']:.2f} / {row[m]['p95_ms']:.2f}" for m in MODES)
        md.append(f"| {row['passages']} | {cost} | {latency} |")
    record = {"date": date, "machine": machine, "command": command, "rows": rows}
    write_results(f"scale-{args.dataset.resolve().name}-{date}", record, md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
