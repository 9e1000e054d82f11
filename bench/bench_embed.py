"""Embedding throughput: the index path (`Embedder.encode_documents`) vs a bare encode loop.

Both run in one process on the same passages with the same model and batch size:
- "rag-app": `Embedder.encode_documents(texts, batch_size=B)` (length-sorted batches);
- "bare":    `for each slice of B texts: SentenceTransformer.encode(slice)` in corpus order.
Runs alternate between the two; the medians over `--repeats` are compared, and the outputs
are checked to be the same vectors.

Usage:
    .venv/bin/python bench/bench_embed.py [--dataset ../shared/datasets/medquad-small]
        [--n 128] [--batch-size 32] [--repeats 3] [--threads N] [--device cpu]
        [--processes P]   # also the index path with a P-process pool (`rag-app index
                          # --processes P`); the pool's start-up is timed on its own
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import random
import statistics
import time
from pathlib import Path

from _common import DEFAULT_DATASET


def load_passages(dataset: Path, n: int, seed: int) -> list[str]:
    rows = []
    with (dataset / "corpus.jsonl").open(encoding="utf-8") as handle:
        for line in handle:
            doc = json.loads(line)
            text = f"{doc.get('title', '')}\n{doc['text']}".strip()
            rows.append(text)
    random.Random(seed).shuffle(rows)
    return rows[:n]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", type=Path, default=DEFAULT_DATASET)
    parser.add_argument("--model", default="all-MiniLM-L6-v2")
    parser.add_argument("--n", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = default)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--processes", type=int, default=1)
    args = parser.parse_args()

    import numpy as np
    import torch

    from rag_app.embedder import Embedder

    if args.threads:
        torch.set_num_threads(args.threads)
    texts = load_passages(args.dataset, args.n, args.seed)
    embedder = Embedder.load(args.model, device=args.device)
    model = embedder.model
    lengths = [len(model.tokenizer(t, truncation=False, verbose=False)["input_ids"]) for t in texts]

    def ours() -> np.ndarray:
        return embedder.encode_documents(texts, batch_size=args.batch_size)

    def bare() -> np.ndarray:
        parts = [
            model.encode(
                texts[i : i + args.batch_size],
                batch_size=args.batch_size,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
            for i in range(0, len(texts), args.batch_size)
        ]
        return np.concatenate(parts)

    embedder.encode_documents(texts[: args.batch_size], batch_size=args.batch_size)  # warm-up
    times: dict[str, list[float]] = {"rag-app": [], "bare": []}
    outputs = {}
    with contextlib.ExitStack() as stack:
        runs = [("rag-app", ours), ("bare", bare)]
        if args.processes > 1:
            started = time.perf_counter()
            pool = stack.enter_context(embedder.start_pool(args.processes))
            pooled = f"rag-app, {args.processes} processes"
            # warm-up: every worker loads its copy of the model
            embedder.encode_documents(
                texts[: args.batch_size * 4], batch_size=args.batch_size, pool=pool
            )
            print(
                f"pool of {args.processes} started and warm in {time.perf_counter() - started:.1f} s"
            )
            times[pooled] = []
            runs.append(
                (
                    pooled,
                    lambda: embedder.encode_documents(texts, batch_size=args.batch_size, pool=pool),
                )
            )
        for repeat in range(args.repeats):
            order = runs[::-1] if repeat % 2 else runs
            for name, fn in order:
                started = time.perf_counter()
                outputs[name] = fn()
                times[name].append(time.perf_counter() - started)
    diff = max(float(np.abs(out - outputs["bare"]).max()) for out in outputs.values())

    print(
        f"model {embedder.fingerprint} on {args.device}, torch threads {torch.get_num_threads()}, "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs"
    )
    print(
        f"{len(texts)} passages from {args.dataset.name}: tokens median "
        f"{statistics.median(lengths):.0f}, max {max(lengths)} (model max_seq "
        f"{model.max_seq_length}); batch {args.batch_size}; {args.repeats} repeats"
    )
    print("| path | median s | passages/s |")
    print("|---|---|---|")
    medians = {}
    for name, values in times.items():
        medians[name] = statistics.median(values)
        print(f"| {name} | {medians[name]:.2f} | {len(texts) / medians[name]:.1f} |")
    speedups = ", ".join(
        f"{medians['bare'] / value:.2f}x ({name})"
        for name, value in medians.items()
        if name != "bare"
    )
    print(f"speed-up over bare: {speedups}; max |difference| between outputs {diff:.2e}")


if __name__ == "__main__":
    main()
