"""Synthetic-query fine-tuning ablation (issues 4, 9, 10): which recipe beats the base model?

    .venv/bin/python bench/bench_synthetic.py                    # every variant, medquad-small
    .venv/bin/python bench/bench_synthetic.py --variants adapter-linear,full-default
    .venv/bin/python bench/bench_synthetic.py --max-chunks 400   # LLM queries for 400 passages

The honest protocol of issue 10:
- synthetic queries come from the dataset's *passages only* (`rag-app synth` on the corpus,
  default offline generator SmolLM2-135M); no real query is ever shown to the generator or
  trained on (except in the `supervised-*` reference rows, which train on qrels/train);
- variants are compared on the **dev** split (qrels/dev.tsv), which also serves as the
  labelled guardrail; the **test** split (qrels/test.tsv) is only scored, never used to
  choose anything; both with dense retrieval alone and a 95% paired-bootstrap interval of
  the nDCG@10 gain over the base model;
- the LLM's raw replies are cached per passage (resumable), so variants that differ only in
  filtering or training reuse them; every trained run is reused when data and settings are
  unchanged, so a second run of this script only re-scores.

Writes ``bench/results/synthetic-<dataset>-<date>.{json,md}``. CPU cost on 2 cores: LLM
queries ~50/min, full fine-tuning a few minutes plus a re-index of the corpus per variant,
adapters seconds.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import platform
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from _common import DEFAULT_DATASET, REPO, RESULTS

from rag_app.config import updated_finetune

if TYPE_CHECKING:
    from finetune.split import Pair


@dataclass(frozen=True)
class Variant:
    """One recipe: synth / finetune overrides, the trainer, the data, and an optional
    post-filter on the training pairs (for ablations the config has no knob for)."""

    synth: dict[str, Any] = field(default_factory=dict)
    finetune: dict[str, Any] = field(default_factory=dict)
    method: str = "adapter"  # "adapter" or "full"
    source: str = "synthetic"  # "synthetic": written from the passages; "supervised": qrels/train
    select: Callable[[Pair, dict[str, Any]], bool] | None = None  # (pair, its synth row) -> keep?
    note: str = ""


def _rank_within(low: int, high: int, sources: tuple[str, ...] = ()):
    """Keep synthetic pairs whose source passage ranked low..high for the base model."""

    def keep(pair: Pair, row: dict[str, Any]) -> bool:
        rank = row.get("rank") or 10**9
        return low <= rank <= high and (not sources or row.get("source", "").startswith(sources))

    return keep


def _query_share(share: float, seed: int = 42):
    """Keep a seeded random `share` of the training queries (all pairs of a kept query)."""

    def keep(pair: Pair, row: dict[str, Any]) -> bool:
        digest = hashlib.sha256(f"{seed}:{pair.query}".encode()).digest()
        return int.from_bytes(digest[:4], "big") / 2**32 < share

    return keep


LINEAR = {"adapter": {"kind": "linear"}}
# The synth defaults before 2026-12-02: keyword + "any question" prompts, two LLM queries a
# chunk, round trip top 2 (the structural term queries have changed since, see BENCHMARKS).
OLD = {
    "prompts_file": REPO / "bench" / "prompts" / "any-question.toml",
    "styles": ["keyword", "question"],
    "llm_queries_per_chunk": 2,
    "consistency_top_k": 2,
}


def _old(**update: Any) -> dict[str, Any]:
    return {**OLD, **update}


VARIANTS: dict[str, Variant] = {
    # the shipped defaults: 'main question' prompt, 1 a chunk, round trip top 20, title +
    # sibling-contrast term queries, linear query adapter
    "default": Variant(note="the defaults of rag-app synth + finetune"),
    "adapter-linear-llm-only": Variant(
        select=_rank_within(1, 20, ("llm:",)), note="defaults, LLM questions only"
    ),
    "adapter-linear-structural-only": Variant(
        {"llm_queries_per_chunk": 0}, note="defaults, no LLM: title + sibling-contrast terms"
    ),
    "adapter-mlp": Variant(finetune={"adapter": {"kind": "mlp"}}),
    "full": Variant(method="full", note="defaults, every weight trained"),
    # the older defaults, for the ablation
    "old-full-default": Variant(OLD, method="full"),
    "old-adapter-linear": Variant(OLD, LINEAR),
    "old-adapter-linear-top20": Variant(_old(consistency_top_k=20), LINEAR),
    "old-adapter-linear-top50": Variant(_old(consistency_top_k=50), LINEAR),
    "old-adapter-linear-nofilter": Variant(_old(consistency_top_k=0), LINEAR),
    "supervised-adapter-linear": Variant(finetune=LINEAR, source="supervised"),
    "supervised-adapter-linear-30pct": Variant(
        finetune=LINEAR,
        source="supervised",
        select=_query_share(0.3),
        note="30% of the labelled training questions (about as many as the synthetic sets)",
    ),
    "supervised-full": Variant(method="full", source="supervised"),
}


def dev_guard(dataset: Path, root: Path) -> Path:
    """A BEIR folder holding only the dev split: the guardrail must never read test."""
    guard = root / "dev-guard"
    (guard / "qrels").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(dataset / "queries.jsonl", guard / "queries.jsonl")
    shutil.copyfile(dataset / "qrels" / "dev.tsv", guard / "qrels" / "dev.tsv")
    return guard


def train_variant(ns, name: str, spec: Variant, dataset: Path, guard: Path, progress: bool) -> dict:
    """Synthesise (cached LLM replies), filter and train one variant; returns its record."""
    from finetune import adapter, publish, synth, train
    from finetune import data as data_mod
    from rag_app.runs import RunKind

    method, source = spec.method, spec.source
    synth_cfg = ns.synth.model_copy(update=spec.synth)
    ft_update = {"labelled_eval": guard, "reranker": {"enabled": False}, **spec.finetune}
    if source == "supervised":
        ft_update.update({"train_data": [dataset], "use_synthetic": False})
    settings = ns.model_copy(
        update={"synth": synth_cfg, "finetune": updated_finetune(ns.finetune, **ft_update)}
    )
    began = time.perf_counter()
    synth_report = None
    if source == "synthetic":
        synth_report = synth.run(settings, progress=progress)
        print(f"[{name}] {synth_report.summary()}")
    data = data_mod.prepare(settings)
    if spec.select is not None:
        data = _selected(settings, data, spec.select)
    job = "adapter" if method == "adapter" else "embedder"
    found = publish.existing_run(
        settings, data_mod.data_fingerprint(settings, data, job), RunKind.EMBEDDER
    )
    if found is None:
        trainer = adapter.train_adapter if method == "adapter" else train.train_embedder
        found = trainer(
            settings, data, name=f"{name}-{datetime.now(UTC):%Y%m%d%H%M%S}", progress=progress
        )
    print(f"[{name}] {found.summary()}")
    record = found.record
    return {
        "run": str(found.path),
        "method": method,
        "source": source,
        "train_pairs": record.train_pairs,
        "val_pairs": record.val_pairs,
        "train_seconds": record.train_seconds,
        "pairs_per_s": record.pairs_per_s,
        "synth": synth_report.as_dict() if synth_report else None,
        "guard_mrr@10": record.metrics.get("labelled_mrr@10"),
        "guard_mrr@10_base": record.metrics.get("labelled_mrr@10_base"),
        "recommended": record.recommended,
        "prepare_and_train_seconds": round(time.perf_counter() - began, 1),
        "note": spec.note,
    }


def _selected(settings, data, select):
    """`data` with only the train / validation pairs that `select` keeps."""
    from finetune import synth

    rows: dict[tuple[str, str], dict[str, Any]] = {}
    queries = settings.synth_dir / synth.QUERIES_FILE
    if queries.is_file():
        for line in queries.read_text(encoding="utf-8").splitlines():
            row = json.loads(line)
            rows[(row["query"], row["chunk_id"])] = row

    def keep(pairs):
        return [p for p in pairs if select(p, rows.get((p.query, p.passage_id), {}))]

    return dataclasses.replace(data, train=keep(data.train), val=keep(data.val))


def score(settings, dataset: Path, run: str, split: str, out: Path) -> dict:
    """Dense base vs dense fine-tuned on one split, with the paired bootstrap."""
    from eval.retrieval import run_retrieval_eval

    began = time.perf_counter()
    result = run_retrieval_eval(
        settings,
        dataset,
        ["dense-base", "dense-finetuned"],
        10,
        split=split,
        finetuned=run,
        out_dir=out,
        embedding_map=False,
        progress=False,
        echo=print,
    )
    data = result.to_dict()
    gain = next(
        c
        for c in data["comparisons"]
        if c["metric"] == "ndcg@10" and c["candidate"] == "dense-finetuned"
    )
    return {
        "base": data["configs"]["dense-base"]["mean"]["ndcg@10"],
        "tuned": data["configs"]["dense-finetuned"]["mean"]["ndcg@10"],
        "delta": gain["delta"],
        "ci": [gain["ci_low"], gain["ci_high"]],
        "p": gain["p_value"],
        "queries": len(result.configs["dense-base"].per_query),
        "dropped_training_overlap": data.get("dropped_training_overlap"),
        "seconds": round(time.perf_counter() - began, 1),
    }


def write_report(stem: Path, rows: dict[str, Any], *, date: str, machine: str, command: str) -> str:
    """Write the JSON and Markdown results so far (after every variant: a crash keeps them)."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    report = {"date": date, "machine": machine, "command": command, "variants": rows}
    stem.with_suffix(".json").write_text(
        json.dumps(report, indent=2, default=str), encoding="utf-8"
    )
    md = [
        f"Command: `{command}` ({date}, {machine})",
        "",
        "| variant | data | train pairs | dev nDCG@10 (base -> tuned) | dev gain [95% CI] "
        "| test nDCG@10 (base -> tuned) | test gain [95% CI] | p (test) | train s | note |",
        "|---|---|---:|---|---|---|---|---:|---:|---|",
    ]

    def cells(split: dict[str, Any] | None) -> str:
        if split is None:  # not scored in this run
            return "– | –"
        low, high = split["ci"]
        return (
            f"{split['base']:.4f} -> {split['tuned']:.4f} "
            f"| {split['delta'] * 100:+.2f} [{low * 100:+.2f}, {high * 100:+.2f}]"
        )

    for name, row in rows.items():
        test = row.get("test")
        p = f"{test['p']:.4f}" if test else "–"
        md.append(
            f"| {name} | {row['source']} | {row['train_pairs']} | {cells(row.get('dev'))} "
            f"| {cells(test)} | {p} | {row['train_seconds']} | {row.get('note', '')} |"
        )
    text = "\n".join(md) + "\n"
    stem.with_suffix(".md").write_text(text, encoding="utf-8")
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", type=Path, default=DEFAULT_DATASET)
    parser.add_argument("--workspace", type=Path, default=REPO / "workspace" / "bench-quality")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--max-chunks", type=int, default=400, help="passages asked of the LLM")
    parser.add_argument(
        "--seed",
        type=int,
        help="settings.seed (default: the config's): LLM sampling (new replies only), split "
        "and training order; results get a -seedN suffix",
    )
    parser.add_argument(
        "--splits",
        default="dev,test",
        help="splits to score; `dev` alone while choosing a recipe keeps test unseen",
    )
    parser.add_argument("--tag", default="", help="suffix of the result files' names")
    parser.add_argument("--progress", action="store_true")
    args = parser.parse_args(argv)

    from eval.sets import ingest_beir_corpus
    from rag_app import index
    from rag_app.config import load_settings
    from rag_app.ir.beir import fingerprint, load_beir

    names = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        parser.error(f"unknown variants {unknown}; known: {', '.join(VARIANTS)}")
    overrides = {} if args.seed is None else {"seed": args.seed}
    settings = load_settings(
        workspace=args.workspace, synth={"max_chunks": args.max_chunks}, **overrides
    )
    dataset = load_beir(args.dataset, split="test", on_duplicate_query="disambiguate")
    ns = ingest_beir_corpus(settings, dataset, fingerprint(args.dataset))
    index.run(ns, progress=args.progress)  # the base model's collection (once)
    guard = dev_guard(args.dataset, args.workspace / "bench-synthetic")
    date = datetime.now(UTC).strftime("%Y-%m-%d")
    machine = f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.system()}"
    command = "python bench/bench_synthetic.py " + " ".join(argv or sys.argv[1:])
    rows: dict[str, Any] = {}
    md = ""
    seed = "" if args.seed is None else f"-seed{args.seed}"
    tag = f"-{args.tag}" if args.tag else ""
    stem = RESULTS / f"synthetic-{args.dataset.resolve().name}-{date}{seed}{tag}"
    for name in names:
        row = train_variant(ns, name, VARIANTS[name], args.dataset, guard, args.progress)
        for split in [s.strip() for s in args.splits.split(",") if s.strip()]:
            out = args.workspace / "bench-synthetic" / "eval" / f"{name}{seed}-{split}"
            row[split] = score(settings, args.dataset, row["run"], split, out)
            print(f"[{name}] {split}: {row[split]}")
        rows[name] = row
        md = write_report(stem, rows, date=date, machine=machine, command=command)
    print(md)
    print(f"\nwritten {stem}.json and {stem}.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
