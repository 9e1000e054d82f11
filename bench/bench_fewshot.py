"""Real questions as the synth prompt's few-shot examples (issue 18, item 5): with or without?

    RAG_APP_LLM__BACKEND=llamacpp .venv/bin/python bench/bench_fewshot.py \\
        --subsets NHLBI --llm-chunks 150 --size 50 --seeds 1,2,3

Same protocol as bench_feedback_curve.py (documents split seen / unseen, N questions played
through the chat's feedback path and exported), then `rag-app synth` asks the LLM about
`--llm-chunks` sampled passages twice: with the fixed few-shot examples, and with up to 8
of the marked questions (training side only) as examples (`synth.real_examples`). The
adapter trains on LLM + structural + real pairs (recipe selection off, so the LLM questions
are always in), and its own gain is scored on unseen and seen documents; also the LLM
questions alone (no structural, no real pairs), which shows their quality directly.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from _common import REPO, RESULTS
from bench_feedback_curve import Scorer, fmt, gain, splits_for, subset_dataset

from rag_app.config import updated_finetune


def write(stem: Path, rows: list[dict], meta: dict, command: str) -> list[str]:
    stem.with_suffix(".json").write_text(
        json.dumps({**meta, "command": command, "rows": rows}, indent=2)
    )
    md = [
        f"Command: `{command}` ({meta['date']}, {meta['machine']})",
        "",
        "Own gain of each run (nDCG@10 points, 95% paired bootstrap), dense retrieval.",
        "",
        "| subset | seed | examples | LLM q/min | LLM+structural+real: unseen | seen "
        "| LLM questions alone: unseen | seen |",
        "|---|---:|---|---:|---|---|---|---|",
    ]
    for r in rows:
        llm = r.get("llm only") or {}
        md.append(
            f"| {r['subset']} | {r['seed']} | {r['variant']} | {r['synth']['llm_queries_per_min']} "
            f"| {fmt(r['all']['unseen'])} | {fmt(r['all']['seen'])} "
            f"| {fmt(llm.get('unseen'))} | {fmt(llm.get('seen'))} |"
        )
    stem.with_suffix(".md").write_text("\n".join(md) + "\n")
    return md


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--subsets", default="NHLBI")
    parser.add_argument("--llm-chunks", type=int, default=150)
    parser.add_argument("--size", type=int, default=50)
    parser.add_argument("--seeds", default="1,2,3")
    parser.add_argument("--workspace", type=Path, default=REPO / "workspace" / "bench-feedback")
    parser.add_argument("--tag", default="")
    args = parser.parse_args(argv)

    from eval.feedback_play import play_feedback
    from eval.sets import ingest_beir_corpus
    from finetune import adapter, synth
    from finetune import data as data_mod
    from rag_app import index
    from rag_app.config import load_settings
    from rag_app.feedback.export import export
    from rag_app.ir.beir import fingerprint, load_beir

    settings = load_settings(workspace=args.workspace)
    date = datetime.now(UTC).strftime("%Y-%m-%d")
    command = "python bench/bench_fewshot.py " + " ".join(argv or sys.argv[1:])
    meta = {"date": date, "machine": f"{platform.machine()}, {os.cpu_count()} CPUs"}
    stem = RESULTS / f"fewshot-{date}{'-' + args.tag if args.tag else ''}"
    rows: list[dict] = []
    for subset in args.subsets.split(","):
        folder = subset_dataset(subset, args.workspace)
        dataset = load_beir(folder, split="all", on_duplicate_query="disambiguate")
        ns = ingest_beir_corpus(settings, dataset, fingerprint(folder))
        index.run(ns, progress=False)
        scorer = Scorer(ns, dataset)
        for seed in [int(s) for s in args.seeds.split(",")]:
            pool, seen_pool, unseen, title_of = splits_for(dataset, seed)
            asked = random.Random(seed * 1000 + 17).sample(pool, min(args.size, len(pool)))
            seen = [q for q in seen_pool if title_of[q] in {title_of[a] for a in asked}]
            shutil.rmtree(ns.feedback_dir, ignore_errors=True)
            play_feedback(ns, {q: dataset.queries[q] for q in asked}, dataset.qrels)
            out = args.workspace / "exports" / f"fewshot-{subset}-{seed}"
            export(ns, out, force=True)
            for variant, examples in (("fixed examples", 0), ("real examples", 8)):
                s = ns.model_copy(
                    update={
                        "seed": seed,
                        "synth": ns.synth.model_copy(
                            update={
                                "llm_queries_per_chunk": 1,
                                "max_chunks": args.llm_chunks,
                                "real_examples": examples,
                            }
                        ),
                        "finetune": updated_finetune(
                            ns.finetune,
                            **{
                                "train_data": [out],
                                "select_recipe": False,
                                "reranker": {"enabled": False},
                            },
                        ),
                    }
                )
                began = time.perf_counter()
                report = synth.run(s, progress=False)
                print(f"[{subset} {seed} {variant}] {report.summary()}", flush=True)
                data = data_mod.prepare(s)
                row = {
                    "subset": subset,
                    "seed": seed,
                    "variant": variant,
                    "size": len(asked),
                    "synth": report.as_dict(),
                }
                for label, keep in (("all", None), ("llm only", "llm:")):
                    sub = data
                    if keep:
                        only = [p for p in data.train if p.source.startswith(keep)]
                        only_val = [p for p in data.val if p.source.startswith(keep)]
                        if not only or not only_val:
                            continue
                        sub = data_mod.TrainData(
                            data.chunks, data.passages, only, only_val, guard=data.guard
                        )
                    name = f"fewshot-{subset}-{seed}-{variant[:4]}-{label.replace(' ', '')}"
                    shutil.rmtree(s.models_dir / name, ignore_errors=True)
                    run = adapter.train_adapter(s, sub, name=name, progress=False)
                    row[label] = {
                        "train_pairs": run.train_pairs,
                        "unseen": gain(scorer, unseen, run.path),
                        "seen": gain(scorer, seen, run.path),
                    }
                row["seconds"] = round(time.perf_counter() - began, 1)
                print(
                    json.dumps({k: row[k] for k in ("subset", "seed", "variant")}),
                    "all: unseen",
                    fmt(row["all"]["unseen"]),
                    "seen",
                    fmt(row["all"]["seen"]),
                    "| llm only: unseen",
                    fmt((row.get("llm only") or {}).get("unseen")),
                    flush=True,
                )
                rows.append(row)
                write(stem, rows, meta, command)  # after every row: a stopped run keeps them
    print("\n".join(write(stem, rows, meta, command)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
