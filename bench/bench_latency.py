"""Query latency (issue 7): p50 / p95 per retrieval mode, and BM25 against bm25s.

    .venv/bin/python bench/bench_latency.py                      # medquad-small test queries
    .venv/bin/python bench/bench_latency.py --dataset ../shared/datasets/medquad

Uses the eval harness's namespace for the dataset (one chunk per passage, indexed with the
base model; the first run embeds every passage). Each mode answers every test query once
as warm-up, then `--repeats` timed passes; medians of per-query times are reported.
BM25 is also compared with bm25s (a sparse-matrix BM25) on the same tokenised corpus, in
the same process, as a reference point: the ratio says how far our numpy scoring is from a
purpose-built library. Prints a Markdown table for docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from _common import REPO, percentile


def time_queries(fn, queries: list[str], repeats: int) -> list[float]:
    """Per-query latency in ms: the median over `repeats` passes, after one warm-up pass."""
    for q in queries:
        fn(q)
    per_query: list[list[float]] = [[] for _ in queries]
    for _ in range(repeats):
        for i, q in enumerate(queries):
            t0 = time.perf_counter()
            fn(q)
            per_query[i].append((time.perf_counter() - t0) * 1000)
    return [statistics.median(times) for times in per_query]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default=str(REPO.parent / "shared/datasets/medquad-small"))
    parser.add_argument("--workspace", default=str(REPO / "workspace/bench-quality"))
    parser.add_argument("--split", default="test")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--limit", type=int, default=200, help="Test queries to time.")
    parser.add_argument("--k", type=int, default=10)
    args = parser.parse_args()

    import torch

    from eval.sets import ingest_beir_corpus
    from rag_app import index
    from rag_app.config import load_settings
    from rag_app.ir.beir import fingerprint, load_beir
    from rag_app.retrieve import build_retriever, load_corpus

    settings = load_settings(workspace=Path(args.workspace))
    dataset = load_beir(args.dataset, split=args.split, on_duplicate_query="drop")
    ns = ingest_beir_corpus(settings, dataset, fingerprint(args.dataset))
    index.run(ns, progress=True)
    queries = list(dataset.queries.values())[: args.limit]
    corpus = load_corpus(ns)
    print(
        f"{len(corpus.chunks)} passages, {len(queries)} queries, torch threads "
        f"{torch.get_num_threads()}",
        file=sys.stderr,
    )

    rows: list[tuple[str, list[float]]] = []
    for mode in ("bm25", "dense", "hybrid"):
        retriever = build_retriever(ns, mode=mode, rerank=False)
        rows.append(
            (
                mode,
                time_queries(lambda q, r=retriever: r.retrieve(q, args.k), queries, args.repeats),
            )
        )
    try:
        reranked = build_retriever(ns, mode="hybrid", rerank=True)
    except Exception as exc:  # no trained reranker: say so rather than invent a row
        print(f"hybrid+rerank skipped: {exc}", file=sys.stderr)
    else:
        rows.append(
            ("hybrid+rerank", time_queries(lambda q: reranked.retrieve(q, args.k), queries, 1))
        )

    # BM25 scoring alone: ours vs bm25s over the same tokens.
    bm25 = corpus.bm25
    ours = time_queries(lambda q: bm25.search(q, args.k), queries, args.repeats)
    ref_line = "bm25s not installed (pip install bm25s)"
    try:
        import bm25s
        import numpy as np
    except ImportError:
        pass
    else:
        from rag_app.store.bm25 import tokenize

        ids, vocab = _vocab_ids([tokenize(c.embedding_text()) for c in corpus.chunks])
        ref = bm25s.BM25(k1=bm25.k1, b=bm25.b, method="robertson")
        ref.index(bm25s.tokenization.Tokenized(ids, vocab), show_progress=False)

        def ref_search(q: str) -> object:
            ids = [vocab[t] for t in tokenize(q) if t in vocab]
            if not ids:
                return None
            scores = ref.get_scores(ids)
            return np.argpartition(scores, -args.k)[-args.k :]

        theirs = time_queries(ref_search, queries, args.repeats)
        ratio = statistics.median(ours) / statistics.median(theirs)
        ref_line = (
            f"BM25 scoring p50: ours {statistics.median(ours):.2f} ms, bm25s "
            f"{statistics.median(theirs):.2f} ms (ours / bm25s = {ratio:.2f}x)"
        )

    today = datetime.now(UTC).date().isoformat()
    print(
        f"\n### Query latency: {Path(args.dataset).name}, {len(corpus.chunks)} passages "
        f"({today}, {platform.machine()}, {os.cpu_count()} CPUs)\n"
    )
    print(f"Command: `python bench/bench_latency.py {' '.join(sys.argv[1:])}`\n")
    print("| mode | p50 ms | p95 ms |\n|---|---:|---:|")
    for name, times in rows:
        print(f"| {name} | {percentile(times, 50):.2f} | {percentile(times, 95):.2f} |")
    print(f"\n{ref_line}")


def _vocab_ids(docs_tokens: list[list[str]]) -> tuple[list[list[int]], dict[str, int]]:
    vocab: dict[str, int] = {}
    ids = [[vocab.setdefault(t, len(vocab)) for t in doc] for doc in docs_tokens]
    return ids, vocab


if __name__ == "__main__":
    main()
