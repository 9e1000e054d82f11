"""Matryoshka dimensions at serve time (issue 9): quality, index size and latency per dimension.

    .venv/bin/python bench/bench_matryoshka.py                        # base model, 384/256/128/64
    .venv/bin/python bench/bench_matryoshka.py --finetuned workspace/models/<run>  # + a run
    .venv/bin/python bench/bench_matryoshka.py --train-matryoshka     # + MatryoshkaLoss on qrels/train

For each model and dimension: the model is indexed at that dimension (`rag_app.index.run(...,
dim=d)`; truncated collections reuse the full-dimension vectors, so only the first index
embeds), then `eval.retrieval.run_retrieval_eval` scores dense retrieval on the dataset's test
split, without and (below full dimension) with full-dimension rescoring of the top 50.

Columns: nDCG@10 / Recall@10 (test split), the vector segment's size on disk (Chroma's HNSW
files for that collection) and the raw float32 size (n x dim x 4 bytes), the query latency p50
end to end (query encoding + search, from the eval) and of the vector search alone (Chroma
query with a precomputed query vector, p50 over the same queries).

`--train-matryoshka` fine-tunes the base model on qrels/train.tsv (1 epoch, MNRL wrapped in
MatryoshkaLoss over 384/256/128/64): a supervised stand-in for `rag-app finetune` with
`finetune.matryoshka_dims`, to show what Matryoshka training buys at small dimensions.
Writes bench/results/matryoshka-<dataset>-<date>.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sqlite3
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from _common import DEFAULT_DATASET, REPO, folder_bytes, write_results

DIMS = (384, 256, 128, 64)


def train_matryoshka(dataset: Path, out: Path, base: str, dims: list[int], epochs: int) -> Path:
    """Fine-tune ``base`` on qrels/train.tsv pairs with MatryoshkaLoss(MNRL)."""
    if (out / "modules.json").is_file() and (out / "run.json").is_file():
        print(f"Matryoshka model already trained: {out}")
        return out
    from datasets import Dataset
    from sentence_transformers import (
        SentenceTransformer,
        SentenceTransformerTrainer,
        SentenceTransformerTrainingArguments,
    )
    from sentence_transformers.losses import MatryoshkaLoss, MultipleNegativesRankingLoss
    from sentence_transformers.training_args import BatchSamplers

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
    print(f"Matryoshka fine-tuning on {len(anchors)} pairs, dims {dims} ...")
    model = SentenceTransformer(str(resolve_embedder(base).path), device="cpu")
    model.max_seq_length = 256
    loss = MatryoshkaLoss(model, MultipleNegativesRankingLoss(model), matryoshka_dims=dims)
    args = SentenceTransformerTrainingArguments(
        output_dir=str(out / "checkpoints"),
        num_train_epochs=epochs,
        per_device_train_batch_size=32,
        learning_rate=2e-5,
        warmup_ratio=0.1,
        save_strategy="no",
        logging_steps=20,
        report_to=[],
        batch_sampler=BatchSamplers.NO_DUPLICATES,
        seed=42,
    )
    data = Dataset.from_dict({"anchor": anchors, "positive": positives})
    started = time.perf_counter()
    SentenceTransformerTrainer(model=model, args=args, train_dataset=data, loss=loss).train()
    model.save(str(out))
    write_record(
        out,
        RunRecord(
            kind=RunKind.EMBEDDER,
            name=out.name,
            base_model=base,
            train_seconds=round(time.perf_counter() - started, 1),
            train_data=[str(dataset / "qrels" / "train.tsv")],
            matryoshka_dims=dims,
        ),
    )
    return out


def segment_bytes(chroma_dir: Path, collection_name: str) -> int:
    """Bytes of the collection's vector segment folder (HNSW files) under `chroma_dir`."""
    db = chroma_dir / "chroma.sqlite3"
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as con:
        rows = con.execute(
            "SELECT s.id FROM segments s JOIN collections c ON s.collection = c.id "
            "WHERE c.name = ? AND s.scope = 'VECTOR'",
            (collection_name,),
        ).fetchall()
    total = 0
    for (segment_id,) in rows:
        folder = chroma_dir / segment_id
        if folder.is_dir():
            total += folder_bytes(folder)
    return total


def search_latency_ms(settings, model: str | None, dim: int, queries: list[str]) -> float:
    """p50 of Chroma's vector search alone (query vectors encoded beforehand)."""
    from rag_app.retrieve import build_dense, load_corpus

    dense = build_dense(settings, load_corpus(settings), model, dim=dim, rescore=False)
    vectors = dense.embedder.encode_queries(queries)
    dense.store.query(vectors[0], 10)  # warm-up
    times = []
    for vec in vectors:
        t0 = time.perf_counter()
        dense.store.query(vec, 10)
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", type=Path, default=DEFAULT_DATASET)
    parser.add_argument("--split", default="test")
    parser.add_argument("--workspace", type=Path, default=REPO / "workspace" / "bench-matryoshka")
    parser.add_argument("--dims", type=int, nargs="+", default=list(DIMS))
    parser.add_argument("--finetuned", type=Path, help="a (Matryoshka-)fine-tuned model dir")
    parser.add_argument("--train-matryoshka", action="store_true")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--no-rescore", action="store_true")
    parser.add_argument("--limit", type=int, default=None)
    args = parser.parse_args(argv)

    from eval.retrieval import ingest_beir_corpus, run_retrieval_eval
    from rag_app import index
    from rag_app.config import load_settings
    from rag_app.ir.beir import fingerprint, load_beir

    settings = load_settings(workspace=args.workspace, retrieval={"rerank": False})
    name = args.dataset.resolve().name
    date = datetime.now(UTC).strftime("%Y-%m-%d")
    machine = f"{platform.machine()}, {os.cpu_count()} CPUs (shared), {platform.system()}"
    command = "python bench/bench_matryoshka.py " + " ".join(argv or sys.argv[1:])
    dims = sorted(set(args.dims), reverse=True)

    models: list[tuple[str, Path | None]] = [("base", None)]
    if args.finetuned:
        models.append((args.finetuned.name, args.finetuned))
    if args.train_matryoshka:
        out = args.workspace / "models" / f"matryoshka-{name}"
        models.append(
            (
                "matryoshka",
                train_matryoshka(args.dataset, out, settings.models.embedder, dims, args.epochs),
            )
        )

    dataset = load_beir(args.dataset, split=args.split, on_duplicate_query="disambiguate")
    ns = ingest_beir_corpus(settings, dataset, fingerprint(args.dataset))
    queries = list(dataset.queries[q] for q in dataset.qrels if q in dataset.queries)
    if args.limit:
        queries = queries[: args.limit]

    rows = []
    for label, model in models:
        spec = str(model.resolve()) if model else None
        for dim in dims:
            started = time.perf_counter()
            rep = index.run(ns, model=spec, progress=False, dim=dim)
            print(
                f"{label} dim {dim}: indexed {rep.embedded} ({rep.reused} truncated from the "
                f"full index) in {rep.seconds:.1f}s"
            )
            for rescore in (False, True):
                if rescore and (args.no_rescore or dim == dims[0]):
                    continue
                cfg = settings.retrieval.model_copy(update={"dim": dim, "rescore": rescore})
                run_settings = settings.model_copy(update={"retrieval": cfg})
                config = "dense-finetuned" if model else "dense-base"
                result = run_retrieval_eval(
                    run_settings,
                    dataset,
                    [config],
                    10,
                    split=args.split,
                    finetuned=model,
                    limit=args.limit,
                    save=False,
                    index=False,
                    embedding_map=False,
                    n_resamples=100,
                    echo=lambda _line: None,
                )
                res = result.configs[config]
                row = {
                    "model": label,
                    "dim": dim,
                    "rescore": rescore,
                    "ndcg@10": res.mean["ndcg@10"],
                    "recall@10": res.mean.get("recall@10"),
                    "segment_bytes": segment_bytes(ns.chroma_dir, rep.fingerprint),
                    "raw_bytes": rep.chunks * dim * 4,
                    "latency_ms_p50": res.latency_ms_p50,
                    "latency_ms_p95": res.latency_ms_p95,
                    "search_ms_p50": None
                    if rescore
                    else search_latency_ms(ns, spec, dim, queries[:200]),
                    "queries": len(result.queries),
                    "seconds": round(time.perf_counter() - started, 1),
                }
                rows.append(row)
                print(json.dumps(row))

    md = [
        f"### {name}, {args.split} split, dense retrieval ({date}; {machine})",
        "",
        f"Command: `{command}`",
        "",
        "| model | dim | rescore | nDCG@10 | Recall@10 | HNSW on disk | raw f32 | "
        "latency p50 (encode+search) | search p50 |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        search = f"{r['search_ms_p50']:.2f} ms" if r["search_ms_p50"] is not None else "–"
        md.append(
            f"| {r['model']} | {r['dim']} | {'full-dim top 50' if r['rescore'] else 'no'} | "
            f"{r['ndcg@10']:.4f} | {r['recall@10']:.4f} | {r['segment_bytes'] / 1e6:.2f} MB | "
            f"{r['raw_bytes'] / 1e6:.2f} MB | {r['latency_ms_p50']:.1f} ms | {search} |"
        )
    record = {"date": date, "machine": machine, "command": command, "rows": rows}
    stem = write_results(f"matryoshka-{name}-{date}", record, md)
    print(f"\nwritten {stem}.json and {stem}.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
