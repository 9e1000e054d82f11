"""int8 embedder: what dynamic int8 quantisation gains in speed, and costs in nDCG@10.

Issue 7 asks what an ONNX or int8 backend gains at equal nDCG@10. sentence-transformers'
ONNX / OpenVINO backends need `optimum`, whose ONNX exporter pins transformers < 4.58
(this project runs 5.x), so the int8 path measured here is the one torch has built in:
`torch.ao.quantization.quantize_dynamic` on every `nn.Linear` (weights int8, activations
quantised on the fly), no new dependency.

In one process, on the same texts, through `Embedder.encode_documents` / `encode_queries`
(the index and query paths):
- speed: `--n` sampled passages encoded by fp32 and int8 in alternating order, `--repeats`
  times; medians and their ratio;
- quality: the whole corpus and the split's questions encoded by both, exact cosine top 10,
  nDCG@10 / Recall@10 of each, and int8 minus fp32 with a 95% paired-bootstrap interval.

Usage:
    .venv/bin/python bench/bench_int8.py [--dataset ../shared/datasets/medquad-small]
        [--split test] [--n 256] [--repeats 3] [--threads N]
"""

from __future__ import annotations

import argparse
import copy
import os
import platform
import random
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from _common import DEFAULT_DATASET


def rankings(q, docs, ids: list[str], k: int = 10) -> list[list[str]]:
    """Exact cosine top k (vectors are unit length), as lists of document ids."""
    import numpy as np

    scores = q @ docs.T
    top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return [[ids[i] for i in row] for row in top]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", type=Path, default=DEFAULT_DATASET)
    parser.add_argument("--split", default="test")
    parser.add_argument("--model", default="all-MiniLM-L6-v2")
    parser.add_argument("--n", type=int, default=256, help="passages in each timed pass")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = default)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    import numpy as np
    import torch

    from eval.datasets import load_beir
    from eval.metrics import ndcg_at_k, recall_at_k
    from eval.stats import paired_bootstrap
    from rag_app.embedder import Embedder

    if args.threads:
        torch.set_num_threads(args.threads)
    data = load_beir(args.dataset, split=args.split, on_duplicate_query="disambiguate")
    ids = list(data.corpus)
    texts = [f"{d.get('title', '')}\n{d['text']}".strip() for d in data.corpus.values()]
    qids = list(data.queries)
    questions = [data.queries[q] for q in qids]

    fp32 = Embedder.load(args.model, device="cpu")
    quantised = torch.ao.quantization.quantize_dynamic(
        copy.deepcopy(fp32.model), {torch.nn.Linear}, dtype=torch.qint8
    )
    int8 = Embedder(
        quantised, name=f"{fp32.name}-int8", spec=fp32.spec, fingerprint="int8", dim=fp32.dim
    )
    models = {"fp32": fp32, "int8": int8}

    # speed: the same sampled passages, alternating which model goes first
    sample = random.Random(args.seed).sample(texts, min(args.n, len(texts)))
    for emb in models.values():  # warm-up
        emb.encode_documents(sample[: args.batch_size], batch_size=args.batch_size)
    times: dict[str, list[float]] = {name: [] for name in models}
    for repeat in range(args.repeats):
        order = list(models.items())
        if repeat % 2:
            order.reverse()
        for name, emb in order:
            began = time.perf_counter()
            emb.encode_documents(sample, batch_size=args.batch_size)
            times[name].append(time.perf_counter() - began)
    medians = {name: statistics.median(v) for name, v in times.items()}

    # quality: whole corpus, every question of the split
    per_query: dict[str, dict[str, list[float]]] = {}
    vectors = {}
    for name, emb in models.items():
        began = time.perf_counter()
        docs = emb.encode_documents(texts, batch_size=args.batch_size, progress=True)
        q = emb.encode_queries(questions)
        vectors[name] = docs
        print(f"{name}: corpus encoded in {time.perf_counter() - began:.0f} s", file=sys.stderr)
        ranked = rankings(q, docs, ids)
        pairs = list(zip(qids, ranked, strict=True))
        per_query[name] = {
            "ndcg@10": [ndcg_at_k(data.qrels[qid], r, 10) for qid, r in pairs],
            "recall@10": [recall_at_k(data.qrels[qid], r, 10) for qid, r in pairs],
        }
    cosines = np.sum(vectors["fp32"] * vectors["int8"], axis=1)

    date = datetime.now(UTC).strftime("%Y-%m-%d")
    machine = (
        f"{platform.machine()}, {os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}"
    )
    print(
        f"{date}, {machine}; {args.dataset.name} ({len(ids)} passages, {len(qids)} {args.split} questions)"
    )
    print(f"timed: {len(sample)} passages, batch {args.batch_size}, median of {args.repeats}")
    print("| model | passages/s | speed vs fp32 | nDCG@10 | Recall@10 |")
    print("|---|---:|---:|---:|---:|")
    for name in models:
        rate = len(sample) / medians[name]
        ratio = medians["fp32"] / medians[name]
        nd = float(np.mean(per_query[name]["ndcg@10"]))
        rc = float(np.mean(per_query[name]["recall@10"]))
        print(f"| {name} | {rate:.1f} | {ratio:.2f}x | {nd:.4f} | {rc:.4f} |")
    gap = paired_bootstrap(per_query["fp32"]["ndcg@10"], per_query["int8"]["ndcg@10"])
    print(
        f"int8 - fp32 nDCG@10: {gap.mean_diff * 100:+.2f} points "
        f"[{gap.ci_low * 100:+.2f}, {gap.ci_high * 100:+.2f}] (95% paired bootstrap, "
        f"{gap.n} questions)"
    )
    print(
        f"passage vectors, cosine(fp32, int8): median {np.median(cosines):.4f}, "
        f"min {cosines.min():.4f}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
