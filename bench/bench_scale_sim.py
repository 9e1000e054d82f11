"""The cost curve to a million passages (issue 21), with simulated vectors.

    .venv/bin/python bench/bench_scale_sim.py                         # 10k, 100k, 1M
    .venv/bin/python bench/bench_scale_sim.py --sizes 100000 --server  # + a `chroma run` server

Embedding a million passages on a laptop CPU takes hours (~15-20 passages/s, bench_scale.py),
so the dense side is simulated: every passage gets a seeded random unit vector of the base
model's dimension, written through the product's `VectorStore.upsert` into a collection
under the base model's fingerprint, so `build_retriever` opens it as it would a real index.
The lexical side is real: MedQuAD passages (10,833) replicated with distinct ids up to the
size, saved by `rag_app.chunkstore` and indexed by `BM25Index.build` (the product's
tokeniser, in worker processes). Queries are MedQuAD test questions, encoded by the real
base model; random document vectors make the dense *results* meaningless but not its cost.

Per size: build times (chunks, BM25, Chroma), folder sizes, then in a fresh process (so its
peak RSS is the serving process's): BM25 load time, workspace load time (`load_corpus`:
chunk table + BM25), peak RSS, and p50 / p95 query latency of bm25, dense and hybrid
(`build_retriever`, no reranking, k = 10). With `--server`, the same dense and hybrid
queries against `chroma run` serving the same folder over HTTP.

A size is built once (resumable: an interrupted Chroma load continues where it stopped);
delete ``workspace/bench-scale-sim/<size>`` to build it again.
Writes ``bench/results/scale-sim-<date>.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from _common import REPO, folder_bytes, peak_rss_mb, percentile, write_results

MODES = ("bm25", "dense", "hybrid")
BATCH = 5000


def folder_mb(path: Path) -> float:
    return round(folder_bytes(path) / 2**20, 1)


def settings_for(workspace: Path, chroma_url: str | None = None):
    from rag_app.config import load_settings

    return load_settings(
        workspace=workspace, retrieval={"chroma_url": chroma_url} if chroma_url else None
    )


def replicated_chunks(dataset: Path, size: int):
    """`size` chunks: the dataset's passages in order, again and again, each with its own id."""
    from rag_app.types import Chunk

    with (dataset / "corpus.jsonl").open(encoding="utf-8") as handle:
        passages = [json.loads(line) for line in handle]
    return [
        Chunk(
            id=f"p{i:07d}",
            doc_id=f"d{i:07d}",
            text=(p := passages[i % len(passages)])["text"],
            title=p.get("title") or "",
            end_char=len(p["text"]),
        )
        for i in range(size)
    ]


def build(workspace: Path, dataset: Path, size: int, seed: int) -> dict:
    """Chunks, BM25 and the simulated Chroma collection of one size (each step once)."""
    import numpy as np
    from tqdm.auto import tqdm

    from rag_app import chunkstore
    from rag_app.embedder import Embedder
    from rag_app.store.bm25 import BM25Index
    from rag_app.store.chroma import VectorStore

    settings = settings_for(workspace)
    row: dict = {"passages": size}
    done_file = workspace / "build.json"
    if done_file.is_file():
        row.update(json.loads(done_file.read_text()))
    chunks = None
    if "chunks_s" not in row:
        started = time.perf_counter()
        chunks = replicated_chunks(dataset, size)
        workspace.mkdir(parents=True, exist_ok=True)
        chunkstore.save(settings.chunks_path, settings.manifest_path, chunks, {"source": "sim"})
        row["chunks_s"] = round(time.perf_counter() - started, 1)
        row["chunks_mb"] = round(settings.chunks_path.stat().st_size / 2**20, 1)
        done_file.write_text(json.dumps(row))
    if "bm25_build_s" not in row:
        chunks = chunks or chunkstore.load_chunks(settings.chunks_path, settings.manifest_path)
        started = time.perf_counter()
        BM25Index.build(chunks).save(settings.bm25_dir)
        row["bm25_build_s"] = round(time.perf_counter() - started, 1)
        row["bm25_mb"] = folder_mb(settings.bm25_dir)
        done_file.write_text(json.dumps(row))
    if "chroma_build_s" not in row:
        chunks = chunks or chunkstore.load_chunks(settings.chunks_path, settings.manifest_path)
        embedder = Embedder.load(settings.models.embedder, device="cpu")
        store = VectorStore.open(
            settings, embedder.fingerprint, embedder.dim, model_name=embedder.name
        )
        done = store.count()  # batches go in in order: resume after the last one
        done -= done % BATCH
        started = time.perf_counter()
        spent = row.get("chroma_partial_s", 0.0)
        with tqdm(total=size, initial=done, desc=f"chroma {size}", unit="vec") as bar:
            for start in range(done, size, BATCH):
                rng = np.random.default_rng([seed, start])
                vectors = rng.standard_normal((min(BATCH, size - start), embedder.dim))
                vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
                store.upsert(chunks[start : start + BATCH], vectors.astype(np.float32))
                bar.update(len(vectors))
                row["chroma_partial_s"] = spent + time.perf_counter() - started
                done_file.write_text(json.dumps(row))
        row["chroma_build_s"] = round(row.pop("chroma_partial_s", 0.0), 1)
        row["chroma_mb"] = folder_mb(settings.chroma_dir)
        row["dim"] = embedder.dim
        done_file.write_text(json.dumps(row))
    return row


def serve_queries(workspace: Path, dataset: Path, limit: int, repeats: int, url: str | None):
    """In this (fresh) process: load times, peak RSS, latency per mode. Prints one JSON line."""
    from bench_latency import time_queries

    from rag_app.ir.beir import load_beir
    from rag_app.retrieve import build_retriever, load_corpus
    from rag_app.store.bm25 import BM25Index

    settings = settings_for(workspace, url)
    queries = list(load_beir(dataset, split="test", on_duplicate_query="drop").queries.values())
    queries = queries[:limit]
    out: dict = {}
    if url is None:
        started = time.perf_counter()
        BM25Index.load(settings.bm25_dir)
        out["bm25_load_s"] = round(time.perf_counter() - started, 2)
        out["rss_after_bm25_load_mb"] = round(peak_rss_mb(), 1)
    started = time.perf_counter()
    load_corpus(settings)
    out["corpus_load_s"] = round(time.perf_counter() - started, 1)
    modes = MODES if url is None else ("dense", "hybrid")
    for mode in modes:
        retriever = build_retriever(settings, mode=mode, rerank=False)
        times = time_queries(lambda q, r=retriever: r.retrieve(q, 10), queries, repeats)
        out[mode] = {"p50_ms": percentile(times, 50), "p95_ms": percentile(times, 95)}
    out["peak_rss_mb"] = round(peak_rss_mb(), 1)
    print(json.dumps(out), flush=True)


def child(args: argparse.Namespace, workspace: Path, url: str | None = None) -> dict:
    command = [
        sys.executable,
        __file__,
        "--serve",
        str(workspace),
        "--dataset",
        str(args.dataset),
        "--limit",
        str(args.limit),
        "--repeats",
        str(args.repeats),
    ]
    if url:
        command += ["--chroma-url", url]
    done = subprocess.run(command, check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def with_server(args: argparse.Namespace, workspace: Path) -> dict:
    """The dense and hybrid queries through `chroma run` serving the size's folder."""
    import urllib.request

    from rag_app.ui.app import free_port

    chroma = shutil.which("chroma", path=str(Path(sys.executable).parent))
    if chroma is None:
        raise SystemExit("the `chroma` command is not installed in this environment")
    port = free_port()
    log = (workspace / "server.log").open("w")
    folder = str(workspace / "chroma")
    server = subprocess.Popen(
        [chroma, "run", "--path", folder, "--host", "127.0.0.1", "--port", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        started = time.perf_counter()
        while True:
            try:
                urllib.request.urlopen(f"{url}/api/v2/heartbeat", timeout=2)
                break
            except OSError:
                if server.poll() is not None or time.perf_counter() - started > 600:
                    raise SystemExit(f"chroma run did not start; see {log.name}") from None
                time.sleep(0.5)
        ready_s = round(time.perf_counter() - started, 1)
        result = child(args, workspace, url)
        result["server_start_s"] = ready_s
        return result
    finally:
        server.terminate()
        server.wait(timeout=60)
        log.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", type=Path, default=REPO.parent / "shared/datasets/medquad")
    parser.add_argument("--workspace", type=Path, default=REPO / "workspace/bench-scale-sim")
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--limit", type=int, default=100, help="Test queries to time.")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--server", action="store_true", help="Also query a `chroma run`.")
    parser.add_argument("--build-only", action="store_true", help="Build, time nothing else.")
    parser.add_argument("--serve", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--chroma-url", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        serve_queries(args.serve, args.dataset, args.limit, args.repeats, args.chroma_url)
        return 0

    rows = []
    for size in (int(s) for s in args.sizes.split(",") if s.strip()):
        workspace = args.workspace / str(size)
        row = build(workspace, args.dataset, size, args.seed)
        if args.build_only:
            print(json.dumps(row), flush=True)
            continue
        row.update(child(args, workspace))
        if args.server:
            row["server"] = with_server(args, workspace)
        print(json.dumps(row), flush=True)
        rows.append(row)
    if rows:
        write_report(args, argv, rows)
    return 0


def write_report(args: argparse.Namespace, argv: list[str] | None, rows: list[dict]) -> None:
    date = datetime.now(UTC).date().isoformat()
    machine = f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.system()}"
    command = "python bench/bench_scale_sim.py " + " ".join(
        argv if argv is not None else sys.argv[1:]
    )
    md = [
        f"Command: `{command}` ({date}, {machine}; {args.limit} queries, k = 10, "
        "simulated vectors)",
        "",
        "| passages | BM25 build s | BM25 MB | Chroma build s | Chroma MB | chunks MB "
        "| BM25 load s | workspace load s | peak RSS MB | bm25 p50 / p95 ms "
        "| dense p50 / p95 ms | hybrid p50 / p95 ms |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        latency = " | ".join(f"{r[m]['p50_ms']:.1f} / {r[m]['p95_ms']:.1f}" for m in MODES)
        md.append(
            f"| {r['passages']:,} | {r['bm25_build_s']} | {r['bm25_mb']} | {r['chroma_build_s']} "
            f"| {r['chroma_mb']} | {r['chunks_mb']} | {r['bm25_load_s']} | {r['corpus_load_s']} "
            f"| {r['peak_rss_mb']:,.0f} | {latency} |"
        )
    served = [r for r in rows if "server" in r]
    if served:
        md += [
            "",
            "Against `chroma run` (same folder, HTTP on loopback):",
            "",
            "| passages | server start s | dense p50 / p95 ms | hybrid p50 / p95 ms |",
            "|---:|---:|---:|---:|",
        ]
        for r in served:
            s = r["server"]
            md.append(
                f"| {r['passages']:,} | {s['server_start_s']} "
                f"| {s['dense']['p50_ms']:.1f} / {s['dense']['p95_ms']:.1f} "
                f"| {s['hybrid']['p50_ms']:.1f} / {s['hybrid']['p95_ms']:.1f} |"
            )
    record = {"date": date, "machine": machine, "command": command, "rows": rows}
    write_results(f"scale-sim-{date}", record, md)


if __name__ == "__main__":
    raise SystemExit(main())
