"""Reranking latency by cross-encoder batch size and max length (issue 3).

    .venv/bin/python bench/bench_rerank_batch.py                 # medquad-small test queries
    .venv/bin/python bench/bench_rerank_batch.py --reranker workspace/models/<reranker-run>

Why: `CrossEncoder.predict` sorts the pairs by length, then pads each batch to its longest
pair. With the top 20 candidates in one batch of 32, every pair pays for the longest
passage; smaller batches pad less but run more, smaller matrix products. This measures
which wins on this CPU, in one process, against batch 32 as the baseline, and checks that
the scores do not change (they must not: padding is masked).

Candidates are each test query's BM25 top 20 (no dense index needed; the passage-length
mix is what matters for timing). Without `--reranker`, the bundled MiniLM weights with a
fresh classification head are timed: the architecture, not the head, sets the cost, and
the scores are only compared with each other. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
from datetime import UTC, datetime
from pathlib import Path

from _common import REPO


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default=str(REPO.parent / "shared/datasets/medquad-small"))
    parser.add_argument("--split", default="test")
    parser.add_argument("--limit", type=int, default=100, help="Test queries to time.")
    parser.add_argument("--candidates", type=int, default=20)
    parser.add_argument("--batch-sizes", default="32,10,5,4,2,1")
    parser.add_argument("--max-lengths", default="256,128")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--reranker", default="", help="A trained CrossEncoder (default: see doc)")
    args = parser.parse_args()

    import numpy as np
    import torch
    from _common import percentile
    from bench_latency import time_queries
    from rank_bm25 import BM25Okapi
    from sentence_transformers import CrossEncoder

    from rag_app.ir.beir import load_beir
    from rag_app.models import resolve_embedder

    data = load_beir(Path(args.dataset), split=args.split, on_duplicate_query="disambiguate")
    texts = [f"{d['title']}\n{d['text']}".strip() for d in data.corpus.values()]
    bm25 = BM25Okapi([t.lower().split() for t in texts])
    queries = [data.queries[q] for q in list(data.qrels)[: args.limit]]
    candidates = []
    for q in queries:
        top = np.argsort(-bm25.get_scores(q.lower().split()))[: args.candidates]
        candidates.append([texts[i] for i in top])
    location = args.reranker or resolve_embedder("all-MiniLM-L6-v2").location
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    rows = []
    for max_length in [int(m) for m in args.max_lengths.split(",")]:
        model = CrossEncoder(location, device="cpu", max_length=max_length, num_labels=1)
        model.eval()
        baseline_scores: list[np.ndarray] = []
        baseline_p50 = None
        for bs in batch_sizes:

            def run(i: int, bs: int = bs, model=model) -> np.ndarray:
                pairs = [(queries[i], p) for p in candidates[i]]
                return model.predict(pairs, batch_size=bs, show_progress_bar=False)

            scores = [run(i) for i in range(len(queries))]
            if not baseline_scores:
                baseline_scores = scores
            diff = max(
                float(np.abs(a - b).max()) for a, b in zip(scores, baseline_scores, strict=True)
            )
            ms = time_queries(run, list(range(len(queries))), args.repeats)
            p50, p95 = percentile(ms, 50), percentile(ms, 95)
            baseline_p50 = baseline_p50 or p50
            rows.append((max_length, bs, p50, p95, baseline_p50 / p50, diff))
            print(
                f"max_length {max_length} batch {bs}: p50 {p50:.0f} p95 {p95:.0f} ms "
                f"(x{baseline_p50 / p50:.2f}), max |score diff| {diff:.1e}",
                flush=True,
            )

    date = datetime.now(UTC).strftime("%Y-%m-%d")
    machine = f"{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}"
    print(
        f"\nCommand: `{' '.join(['python', *sys.argv])}` ({date}, {machine}); "
        f"{len(queries)} {args.split} queries x {args.candidates} BM25 candidates, "
        f"median of {args.repeats} passes after a warm-up\n"
    )
    print(
        "| max length (tokens) | batch size | p50 ms | p95 ms | speed vs batch "
        f"{batch_sizes[0]} | max score difference |"
    )
    print("|---:|---:|---:|---:|---:|---:|")
    for max_length, bs, p50, p95, ratio, diff in rows:
        print(f"| {max_length} | {bs} | {p50:.0f} | {p95:.0f} | {ratio:.2f}x | {diff:.1e} |")


if __name__ == "__main__":
    main()
