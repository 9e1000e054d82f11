"""Cross-corpus protocol (issue 19): every recipe and fusion decision on ten corpora at once.

    RAG_APP_LLM__BACKEND=llamacpp .venv/bin/python bench/bench_protocol.py
    .venv/bin/python bench/bench_protocol.py --corpora CDC,shipped --recipes structural
    .venv/bin/python bench/bench_protocol.py --splits dev --tag dev   # choosing: test unseen

Corpora, each its own workspace under ``workspace/bench-protocol/``:
- the eight MedQuAD sources of ``../shared/datasets/medquad`` taken separately (GARD,
  NIDDK, NINDS, CancerGov, NHLBI, NIHSeniorHealth, MPlusHealthTopics, CDC): one passage a
  chunk, as `rag-app eval retrieval` ingests a BEIR corpus;
- ``shipped``: this repository's ``corpus/`` ingested by `rag-app ingest` (the task cards,
  manuals and bulletins of the demo), judged per document by ``corpus/eval``;
- ``NIDDK-long``: each NIDDK focus written as one Markdown document (its answers as
  ``## <question type>`` sections), ingested and chunked by the product; a question's
  relevant chunks are the chunks of its answer's section.

Questions: no recipe here trains on a real question, so *every* question of a corpus can
judge; they are split by document (seeded, half and half) into **dev** (to choose) and
**test** (only to report), at most ``--max-queries`` a split. Scoring is exact cosine over
every chunk with the base model's vectors (the adapter maps only the query), BM25 is the
product's, and fusion uses the product's `rag_app.fusion.fuse` over 50 candidates a
retriever, as the chat does; the reranker is left out (it is the same for every recipe).

Recipes (``--recipes``): ``default`` (the shipped synth + adapter defaults), ``structural``
(no LLM: title + sibling-contrast term queries), ``llm`` (the default's LLM questions
only), and the candidates named in ``RECIPES``. Each row: base and tuned nDCG@10, the gain
with its 95% paired-bootstrap interval and a paired randomization p; fusion rows: dense,
BM25, RRF and weighted fusion at every weight, for the base model and the default run.
The LLM's replies are cached per chunk (``synth/raw.jsonl``), so re-runs only re-train.

Writes ``bench/results/protocol-<date>[-tag].{json,md}``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import statistics
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from _common import REPO, RESULTS
from _protocol_corpora import EvalCorpus, load_corpus

from rag_app.config import updated_finetune
from rag_app.runs import RunKind, read_record

SOURCES = (
    "GARD",
    "NIDDK",
    "NINDS",
    "CancerGov",
    "NHLBI",
    "NIHSeniorHealth",
    "MPlusHealthTopics",
    "CDC",
)
CORPORA = (*SOURCES, "shipped", "NIDDK-long")
WEIGHTS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
CANDIDATES = 50


@dataclass(frozen=True)
class Recipe:
    """Synth / finetune overrides and which synthetic pairs to keep (by query origin)."""

    synth: dict[str, Any] = field(default_factory=dict)
    finetune: dict[str, Any] = field(default_factory=dict)
    keep: tuple[str, ...] = ()  # query-origin prefixes kept ("llm:", "title", ...); () = all
    llm_pmi_keep: float = 1.0  # < 1: keep this share of LLM pairs, best generator PMI first
    note: str = ""


RECIPES: dict[str, Recipe] = {
    "default": Recipe(note="the shipped defaults"),
    "structural": Recipe({"llm_queries_per_chunk": 0}, note="no LLM: structural queries only"),
    "llm": Recipe(keep=("llm:",), note="the default's LLM questions only"),
    # candidates for a more robust default (issue 19)
    "strict": Recipe({"consistency_top_k": 5}, note="round trip top 5 instead of 20"),
    "wd": Recipe(
        finetune={"adapter": {"weight_decay": 0.1}}, note="adapter pulled 10x harder to identity"
    ),
    "patient": Recipe(
        finetune={"adapter": {"epochs": 100, "patience": 15}},
        note="adapter: up to 100 epochs, stop after 15 without a validation gain (30 / 5)",
    ),
    "slow": Recipe(
        finetune={"adapter": {"learning_rate": 1e-4, "epochs": 60, "patience": 10}},
        note="adapter: a third of the learning rate, more epochs (validation peaks at 1-2)",
    ),
    "pmi50": Recipe(llm_pmi_keep=0.5, note="LLM questions: the half with the best PMI"),
    "pmi25": Recipe(llm_pmi_keep=0.25, note="LLM questions: the quarter with the best PMI"),
}


def keep_by_pmi(settings, data, share: float):
    """`data` with only the `share` of its LLM pairs the generator's PMI ranks best."""
    from _pmi import score_questions

    from rag_app.chunkstore import load_chunks

    llm = [p for p in (*data.train, *data.val) if p.kind == "llm"]
    questions = [(p.passage_id, p.source.split(":", 1)[-1], p.query) for p in llm]
    chunks = load_chunks(settings.chunks_path, settings.manifest_path)
    pmi = score_questions(settings, chunks, questions, settings.synth_dir / "pmi.jsonl")
    ranked = sorted(llm, key=lambda p: -pmi[(p.passage_id, p.query)])
    keep = set(ranked[: round(share * len(ranked))])

    def kept(pairs):
        return [p for p in pairs if p.kind != "llm" or p in keep]

    return dataclasses.replace(data, train=kept(data.train), val=kept(data.val))


class Scorer:
    """Candidate lists of BM25 and of exact dense search, and nDCG@10 of any fusion of them."""

    def __init__(self, corpus: EvalCorpus) -> None:
        from _dense import ExactDense

        from rag_app.retrieve import BM25Retriever, load_corpus

        ns = corpus.settings
        self.corpus = corpus
        self.exact = ExactDense(ns)
        self.doc = {c.id: c.doc_id for c in self.exact.chunks}
        qids = sorted({q for s in corpus.splits.values() for q in s})
        self.exact.encode({q: corpus.queries[q] for q in qids})
        bm25 = BM25Retriever(load_corpus(ns))
        self.lexical = {
            q: [
                (h.chunk.id, h.scores["bm25"]) for h in bm25.retrieve(corpus.queries[q], CANDIDATES)
            ]
            for q in qids
        }

    def dense(self, qids: list[str], run: Path | None) -> dict[str, list[tuple[str, float]]]:
        return self.exact.top(qids, run, CANDIDATES)

    def ndcg(self, qid: str, ranking: list[str]) -> float:
        from rag_app.ir.metrics import ndcg_at_k

        if self.corpus.granularity == "doc":
            seen: list[str] = []
            for cid in ranking:
                if self.doc[cid] not in seen:
                    seen.append(self.doc[cid])
            ranking = seen
        return ndcg_at_k(self.corpus.qrels[qid], ranking[:10], 10)

    def fusions(self, qids: list[str], run: Path | None) -> dict[str, list[float]]:
        """Per-query nDCG@10 of dense, BM25, RRF and weighted fusion at every weight."""
        from rag_app.fusion import FusionChoice, fuse

        dense = self.dense(qids, run)
        configs = [FusionChoice("dense"), FusionChoice("bm25"), FusionChoice("rrf")]
        configs += [FusionChoice("weighted", w) for w in WEIGHTS]
        out: dict[str, list[float]] = {}
        for config in configs:
            out[config.key] = [
                self.ndcg(q, fuse(self.lexical[q], dense[q], config, k=CANDIDATES)) for q in qids
            ]
        return out


def compare(base: list[float], tuned: list[float], seed: int = 0) -> dict[str, Any]:
    from rag_app.ir.stats import paired_bootstrap, randomization_test

    ci = paired_bootstrap(base, tuned, seed=seed)
    return {
        "base": statistics.fmean(base),
        "tuned": statistics.fmean(tuned),
        "delta": ci.mean_diff,
        "ci": [ci.ci_low, ci.ci_high],
        "p": randomization_test(base, tuned, seed=seed),
        "n": len(base),
    }


# --- recipes ----------------------------------------------------------------------------------
def train_recipe(
    corpus: EvalCorpus, name: str, recipe: Recipe, progress: bool, keep_pair=None
) -> dict[str, Any]:
    """Synthesise (cached LLM replies), keep, train the adapter; the run and its record.

    `keep_pair(pair)`: train and validate only on the pairs it accepts (e.g. one half's
    documents)."""
    from finetune import adapter, publish, synth
    from finetune import data as data_mod

    ns = corpus.settings
    settings = ns.model_copy(
        update={
            "synth": ns.synth.model_copy(update=recipe.synth),
            "finetune": updated_finetune(
                ns.finetune, **{"reranker": {"enabled": False}, **recipe.finetune}
            ),
        }
    )
    began = time.perf_counter()
    report = synth.run(settings, progress=progress)
    data = data_mod.prepare(settings)
    if recipe.keep:

        def kept(pairs):
            return [p for p in pairs if p.source.startswith(recipe.keep)]

        data = dataclasses.replace(data, train=kept(data.train), val=kept(data.val))
    if keep_pair is not None:
        data = dataclasses.replace(
            data,
            train=[p for p in data.train if keep_pair(p)],
            val=[p for p in data.val if keep_pair(p)],
        )
    if recipe.llm_pmi_keep < 1.0:
        data = keep_by_pmi(settings, data, recipe.llm_pmi_keep)
    if not data.train:
        return {"error": "no training pairs", "synth": report.as_dict()}
    fp = data_mod.data_fingerprint(settings, data, "adapter")
    found = publish.existing_run(settings, fp, RunKind.EMBEDDER)
    if found is None:
        stamp = datetime.now(UTC).strftime("%Y%m%d%H%M%S")
        found = adapter.train_adapter(settings, data, name=f"{name}-{stamp}", progress=progress)
    record = found.record
    return {
        "run": str(found.path),
        "train_pairs": record.train_pairs,
        "val_pairs": record.val_pairs,
        "sources": {k: v for k, v in record.data.items() if k.startswith("source ")},
        "best_epoch": (record.model_extra or {}).get("best_epoch"),
        "recommended": record.recommended,
        "llm_replies_new": report.as_dict().get("llm_replies"),
        "seconds": round(time.perf_counter() - began, 1),
    }


# --- report -----------------------------------------------------------------------------------
def _cell(row: dict[str, Any] | None) -> str:
    if not row:
        return "–"
    low, high = row["ci"]
    star = "*" if low > 0 or high < 0 else ""
    return f"{row['delta'] * 100:+.1f} [{low * 100:+.1f}, {high * 100:+.1f}]{star}"


def fusion_rows(report: dict[str, Any], split: str = "test") -> list[str]:
    """Served fusion vs the better of dense and BM25 alone, on `split`, for the base model
    and the default run: the way chosen on the run's synthetic validation queries (what
    `rag-app finetune` records) and the way chosen on the real dev questions."""
    from finetune.fusion_select import choose

    md = [
        f"**{split}**: served hybrid search nDCG@10 ×100, fusion chosen on synthetic validation "
        "(as `rag-app finetune` does) or on real dev questions, against the better of dense "
        "and BM25 alone on this split (gain ×100, 95% paired bootstrap; * = interval excludes 0)",
        "",
        "| corpus | model | dense | BM25 | RRF | synthetic-chosen (way) | vs better part "
        "| dev-chosen (way) | vs better part |",
        "|---|---|---:|---:|---:|---:|---|---:|---|",
    ]
    for name, row in report["corpora"].items():
        per_query = (row.get("per_query") or {}).get(split)
        run = (row["recipes"].get("default") or {}).get("run")
        if not per_query or not run:
            continue
        found = read_record(Path(run))
        recorded = found.fusion if found is not None else {}
        dev = (row.get("per_query") or {}).get("dev")
        for model, role in (("base", "base"), ("default", "finetuned")):
            scores = per_query[model]
            mean = {k: statistics.fmean(v) for k, v in scores.items()}
            better = "dense" if mean["dense"] >= mean["bm25"] else "bm25"
            cells = [f"{mean[k] * 100:.1f}" for k in ("dense", "bm25", "rrf")]
            synth_key = (recorded.get(role) or {}).get("choice")
            dev_key = None
            if dev:
                dev_key = choose({k: statistics.fmean(v) for k, v in dev[model].items()}).key
            for key in (synth_key, dev_key):
                if key is None or key not in scores:
                    cells += ["–", "–"]
                    continue
                cells.append(f"{mean[key] * 100:.1f} ({key})")
                cells.append(_cell(compare(scores[better], scores[key])))
            md.append(f"| {name} | {model} | " + " | ".join(cells) + " |")
    return [*md, ""]


def fixed_fusion(report: dict[str, Any]) -> tuple[str | None, list[str]]:
    """The one fixed way to fuse for workspaces without real questions, chosen on **dev**
    across every corpus and both models (base, default run): among the ways never
    significantly below the better of dense and BM25 (paired bootstrap) on any of them, the
    one with the best median margin; then its **test** gain over the better part, per
    corpus, with the paired interval."""
    margins: dict[str, list[float]] = defaultdict(list)
    losses: dict[str, int] = defaultdict(int)
    for row in report["corpora"].values():
        dev = (row.get("per_query") or {}).get("dev") or {}
        for scores in dev.values():
            mean = {k: statistics.fmean(v) for k, v in scores.items()}
            better = "dense" if mean["dense"] >= mean["bm25"] else "bm25"
            for key, value in mean.items():
                margins[key].append(value - mean[better])
                if key != better and compare(scores[better], scores[key])["ci"][1] < 0:
                    losses[key] += 1
    if not margins:
        return None, []
    ranked = sorted(margins, key=lambda k: (-losses[k], statistics.median(margins[k])))
    chosen = ranked[-1]
    md = [
        "Fixed fusion (no real questions): **dev** nDCG@10 minus the better of dense and BM25, "
        "×100, over every corpus and model; the last column counts the corpus x model pairs "
        "where the way is significantly below the better part (95% paired interval below 0)",
        "",
        "| way | median | worst | significantly below |",
        "|---|---:|---:|---:|",
    ]
    for key in reversed(ranked):
        median, worst = statistics.median(margins[key]), min(margins[key])
        md.append(
            f"| {key}{' (chosen)' if key == chosen else ''} | {median * 100:+.1f} "
            f"| {worst * 100:+.1f} | {losses[key]} |"
        )
    md += [
        "",
        f"**test**: `{chosen}` against the better of dense and BM25 alone (×100, 95% paired "
        "bootstrap, * = interval excludes 0)",
        "",
        "| corpus | model | better part | its nDCG@10 | fused nDCG@10 | gain |",
        "|---|---|---|---:|---:|---|",
    ]
    for name, row in report["corpora"].items():
        test = (row.get("per_query") or {}).get("test") or {}
        for model, scores in test.items():
            mean = {k: statistics.fmean(v) for k, v in scores.items()}
            better = "dense" if mean["dense"] >= mean["bm25"] else "bm25"
            md.append(
                f"| {name} | {model} | {better} | {mean[better] * 100:.1f} "
                f"| {mean[chosen] * 100:.1f} | {_cell(compare(scores[better], scores[chosen]))} |"
            )
    return chosen, [*md, ""]


def write_report(stem: Path, report: dict[str, Any], recipes: list[str], splits: list[str]) -> str:
    stem.parent.mkdir(parents=True, exist_ok=True)
    # compact: the per-query scores make it megabytes otherwise
    stem.with_suffix(".json").write_text(json.dumps(report, separators=(",", ":"), default=str))
    md = [f"Command: `{report['command']}` ({report['date']}, {report['machine']})", ""]
    for split in splits:
        md += [
            f"**{split}**: dense nDCG@10 gain over the base model ×100, 95% paired bootstrap "
            "(* = interval excludes 0)",
            "",
            "| corpus | structure | questions | base | " + " | ".join(recipes) + " |",
            "|---|---|---:|---:|" + "---|" * len(recipes),
        ]
        medians: dict[str, list[float]] = defaultdict(list)
        for name, row in report["corpora"].items():
            scores = row.get("scores", {}).get(split, {})
            base = next((s["base"] for s in scores.values() if s), None)
            cells = []
            for r in recipes:
                s = scores.get(r)
                cells.append(_cell(s))
                if s:
                    medians[r].append(s["delta"])
            n = len(row["splits"][split])
            base_cell = f"{base:.3f}" if base is not None else "–"
            md.append(
                f"| {name} | {row['structure']} | {n} | {base_cell} | " + " | ".join(cells) + " |"
            )
        md.append(
            "| **median** | | | | "
            + " | ".join(
                f"{statistics.median(medians[r]) * 100:+.1f}" if medians[r] else "–"
                for r in recipes
            )
            + " |"
        )
        md.append("")
        md += [
            f"**{split}**: nDCG@10 ×100 of each search mode (base model / default run)",
            "",
            "| corpus | dense | BM25 | RRF | best weighted (w) |",
            "|---|---:|---:|---:|---:|",
        ]
        for name, row in report["corpora"].items():
            fus = row.get("fusion", {}).get(split)
            if not fus:
                continue
            cells = []
            for key in ("dense", "bm25", "rrf"):
                cells.append(" / ".join(f"{fus[m][key] * 100:.1f}" for m in fus))
            best = []
            for m in fus:
                w_key = max((k for k in fus[m] if k.startswith("weighted")), key=fus[m].get)
                best.append(f"{fus[m][w_key] * 100:.1f} ({w_key.split(':')[1]})")
            md.append(f"| {name} | " + " | ".join(cells) + " | " + " / ".join(best) + " |")
        md.append("")
    if "test" in splits:
        md += fusion_rows(report, "test")
        md += fixed_fusion(report)[1]
    text = "\n".join(md)
    stem.with_suffix(".md").write_text(text + "\n")
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--corpora", default=",".join(CORPORA))
    parser.add_argument("--recipes", default="default,structural,llm")
    parser.add_argument("--splits", default="dev,test")
    parser.add_argument("--workspace", type=Path, default=REPO / "workspace" / "bench-protocol")
    parser.add_argument("--max-chunks", type=int, default=150, help="chunks asked of the LLM")
    parser.add_argument("--max-queries", type=int, default=500, help="questions a split")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--tag", default="")
    parser.add_argument("--progress", action="store_true")
    parser.add_argument(
        "--report",
        type=Path,
        nargs="+",
        help="re-write the Markdown of earlier runs' JSON (several: merged, corpora in order, "
        "into the first file's name, or --tag's) and stop",
    )
    args = parser.parse_args(argv)
    if args.report:
        reports = [json.loads(path.read_text()) for path in args.report]
        report = reports[0]
        for other in reports[1:]:
            report["corpora"].update(other["corpora"])
            report["command"] += f"` + `{other['command']}"
        recipes: list[str] = []
        for row in report["corpora"].values():
            recipes += [r for r in row["recipes"] if r not in recipes]
        splits = list(next(iter(report["corpora"].values()))["scores"])
        stem = RESULTS / f"protocol-{report['date']}-{args.tag}" if args.tag else args.report[0]
        print(write_report(stem.with_suffix(""), report, recipes, splits))
        return 0

    from rag_app import index
    from rag_app.config import load_settings

    recipes = [r.strip() for r in args.recipes.split(",") if r.strip()]
    unknown = [r for r in recipes if r not in RECIPES]
    if unknown:
        parser.error(f"unknown recipes {unknown}; known: {', '.join(RECIPES)}")
    splits = [s.strip() for s in args.splits.split(",") if s.strip()]
    base = load_settings(
        workspace=args.workspace / "ws" / "_", synth={"max_chunks": args.max_chunks}, seed=args.seed
    )
    date = datetime.now(UTC).strftime("%Y-%m-%d")
    report: dict[str, Any] = {
        "date": date,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.system()}",
        "command": "python bench/bench_protocol.py " + " ".join(argv or sys.argv[1:]),
        "llm_backend": base.llm.backend,
        "corpora": {},
    }
    stem = RESULTS / f"protocol-{date}{'-' + args.tag if args.tag else ''}"
    for name in [c.strip() for c in args.corpora.split(",") if c.strip()]:
        began = time.perf_counter()
        corpus = load_corpus(name, args.workspace, base, args.seed, args.max_queries)
        index.run(corpus.settings, progress=args.progress)
        row: dict[str, Any] = {
            "structure": corpus.structure,
            "granularity": corpus.granularity,
            "splits": corpus.splits,
            "recipes": {},
            "scores": {},
            "fusion": {},
        }
        report["corpora"][name] = row
        scorer = Scorer(corpus)
        for recipe in recipes:
            row["recipes"][recipe] = train_recipe(corpus, recipe, RECIPES[recipe], args.progress)
            print(f"[{name}] {recipe}: {row['recipes'][recipe]}", flush=True)
        for split in splits:
            qids = corpus.splits[split]
            base_dense = scorer.fusions(qids, None)
            row["scores"][split] = {}
            for recipe in recipes:
                run = row["recipes"][recipe].get("run")
                if run is None:
                    continue
                tuned = scorer.fusions(qids, Path(run))
                row["scores"][split][recipe] = compare(base_dense["dense"], tuned["dense"])
                if recipe == "default":
                    row["fusion"][split] = {
                        "base": {k: statistics.fmean(v) for k, v in base_dense.items()},
                        "default": {k: statistics.fmean(v) for k, v in tuned.items()},
                    }
                    row["per_query"] = row.get("per_query", {})
                    row["per_query"][split] = {"base": base_dense, "default": tuned}
            if "default" not in recipes:
                row["fusion"][split] = {
                    "base": {k: statistics.fmean(v) for k, v in base_dense.items()}
                }
        row["seconds"] = round(time.perf_counter() - began, 1)
        print(write_report(stem, report, recipes, splits), flush=True)
    print(f"\nwritten {stem}.json and {stem}.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
