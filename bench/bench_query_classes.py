"""Hybrid search per query class: does the fused list keep what BM25 is sure of?

    .venv/bin/python bench/bench_query_classes.py                      # the shipped corpus
    .venv/bin/python bench/bench_query_classes.py --beir ../shared/datasets/medquad-small
    .venv/bin/python bench/bench_query_classes.py --protocol      # bench_protocol's corpora

The protocol's corpora hold natural-language questions only; users of a technical library
also type identifiers ("SB 72-61-009"), codes, keywords and symptoms. This bench scores
every way of searching on each class separately:

- **identifier**: built from the documents. A code with digits in a document's title
  ("SB 72-61-009", "NW-TC-32-411", "CP-04", "SLN-02") that no other title holds is asked
  in four phrasings ("SB 72-61-009", "what does SB 72-61-009 say", ...), judged by the
  document that owns it.
- the hand-written `corpus/eval` questions by their own `kind` (question, keyword,
  symptom / how-to), plus **hand-written with a code** (any of them naming an identifier).
- `--beir`: a BEIR dataset's questions (natural), indexed in the eval harness's namespace.
- `--protocol [CORPORA]`: every corpus of `bench_protocol.py` (default all ten), each with
  its natural questions, titles, rare words and (where titles hold codes) identifiers,
  split dev / test by the protocol's own document halves; served hybrid vs the better of
  BM25 and dense, nothing chosen (`_query_protocol.py`).

Queries are split dev / test by a hash of the judged document (one document's queries never
straddle the split). The exact-match rule's thresholds (`retrieval.exact_max_df`,
`retrieval.exact_pin`) are chosen on dev (the best mean of hit@1 over the identifier and
hand-written classes; ties to the smaller change) and reported on test with 95% paired
bootstrap intervals against the better of BM25 and dense, and against today's weighted
default. Candidates come from the served retrievers (BM25 and the base model's Chroma
collection, 50 each); every fusion is `rag_app.retrieve.HybridRetriever`'s own code.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from datetime import UTC, datetime
from pathlib import Path

from _common import REPO, write_results
from _query_classes import (
    Searches,
    classes_of,
    identifier_queries,
    keyword_queries,
    mean_of,
    score,
    split_of,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workspace", default=None, help="(protocol: workspace/bench-protocol)")
    parser.add_argument("--corpus", default=str(REPO / "corpus"))
    parser.add_argument("--beir", default=None, help="A BEIR dataset (natural questions).")
    parser.add_argument("--split", default="test", help="The BEIR qrels split to read.")
    parser.add_argument("--limit", type=int, default=400, help="BEIR queries at most.")
    parser.add_argument(
        "--protocol",
        nargs="?",
        const="all",
        default=None,
        help="The cross-corpus protocol's corpora (bench_protocol.CORPORA, or a comma list): "
        "natural questions, titles, rare words and identifiers on each, base model.",
    )
    parser.add_argument("--max-queries", type=int, default=500, help="protocol: a split")
    parser.add_argument("--per-class", type=int, default=150, help="protocol: built queries")
    parser.add_argument("--seed", type=int, default=42, help="protocol: its split seed")
    parser.add_argument("--tag", default="")
    args = parser.parse_args()
    if args.protocol:
        from _query_protocol import run_protocol

        run_protocol(args)
        return
    args.workspace = args.workspace or str(REPO / "workspace")

    from rag_app import index, ingest
    from rag_app.config import load_settings
    from rag_app.fusion import ExactMatchRule, FusionChoice
    from rag_app.ir.stats import compare
    from rag_app.retrieve import load_corpus

    settings = load_settings(workspace=Path(args.workspace), corpus=Path(args.corpus))
    # (query, {judged id: 1}, class, split)
    queries: list[tuple[str, dict[str, int], str, str]] = []
    if args.beir:
        from eval.sets import ingest_beir_corpus
        from rag_app.ir.beir import fingerprint, load_beir

        dataset = load_beir(args.beir, split=args.split, on_duplicate_query="drop")
        settings = ingest_beir_corpus(settings, dataset, fingerprint(args.beir))
        index.run(settings, progress=True)
        granularity = "chunk"
        for qid, text in list(dataset.queries.items())[: args.limit]:
            judged = {d: 1 for d, s in dataset.qrels.get(qid, {}).items() if s > 0}
            if judged:
                queries.append((text, judged, "natural (BEIR)", split_of(min(judged))))
        queries.extend(keyword_queries(load_corpus(settings).chunks))
    else:
        ingest.run(settings, progress=False)
        index.run(settings, progress=True)
        granularity = "doc"
        from eval.query_classes import WITH_CODE, query_classes
        from rag_app.ir.beir import load_beir

        hand = load_beir(Path(args.corpus) / "eval", split="test")
        # the demo's classes (kind, and any naming a code), each in the questions' order
        for cls, qids in query_classes(hand.queries, hand.query_metadata).items():
            for qid in qids:
                judged = {d: 1 for d, score in hand.qrels.get(qid, {}).items() if score > 0}
                if judged:
                    name = "hand-written with a code" if cls == WITH_CODE else cls
                    queries.append((hand.queries[qid], judged, name, split_of(min(judged))))
        corpus = load_corpus(settings)
        for text, doc, _ in identifier_queries(corpus.chunks):
            queries.append((text, {doc: 1}, "identifier", split_of(doc)))

    corpus = load_corpus(settings)
    search = Searches(settings, corpus)
    weighted = FusionChoice("weighted", settings.retrieval.dense_weight)
    systems: dict[str, object] = {
        "bm25": search.bm25,
        "dense": search.dense,
        "rrf": search.hybrid(FusionChoice("rrf"), None),
        f"weighted {weighted.dense_weight:g} (before)": search.hybrid(weighted, None),
    }
    # short words 3: the default chosen on the protocol's ten corpora (bench/tune_exact_rule.py)
    grid = [(df, pin, short) for df in (10, 50) for pin in (1, 5, 10) for short in (0, 1, 2, 3)]
    for df, pin, short in grid:
        systems[f"exact docs<={df} pin {pin} short {short}"] = search.hybrid(
            weighted, ExactMatchRule(df, pin, short)
        )
    scores = score(systems, queries, granularity, log=lambda m: print(m, file=sys.stderr))

    classes = classes_of(queries)
    before = f"weighted {weighted.dense_weight:g} (before)"

    def mean(name: str, cls: str, split: str, metric: str) -> float:
        return mean_of(scores[name][f"{cls}|{split}"][metric])

    # choose the rule on dev
    tuned_classes = [c for c in classes if c != "hand-written with a code"]

    def dev_objective(name: str) -> tuple[float, float]:
        return (
            statistics.fmean(mean(name, c, "dev", "hit@1") for c in tuned_classes),
            statistics.fmean(mean(name, c, "dev", "ndcg@10") for c in tuned_classes),
        )

    def rule(g) -> str:
        return f"exact docs<={g[0]} pin {g[1]} short {g[2]}"

    ranked_rules = sorted(
        grid, key=lambda g: (-dev_objective(rule(g))[0], -dev_objective(rule(g))[1], g)
    )
    best = ranked_rules[0]
    r = settings.retrieval
    default = (r.exact_max_docs, r.exact_pin, r.exact_short_words)
    served = rule(default)  # the grid holds every default the settings allow here
    print(f"dev choice: {rule(best)} (served default: {served})", file=sys.stderr)

    md = [
        f"Query classes, {'BEIR ' + Path(args.beir).name if args.beir else 'shipped corpus'} "
        f"({granularity}-level judgements), base model, {datetime.now(UTC).date()}. "
        f"Dev choice of the exact-match rule (max docs, pin, short words): {best}; "
        f"served default {default}.",
        "",
        "| class | split | n | bm25 | dense | rrf | weighted (before) | served | "
        "served - better of bm25/dense [95% CI] | served - before [95% CI] |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    record: dict = {"dev_choice": best, "default": default, "classes": {}}
    for cls in classes:
        for split in ("dev", "test"):
            key = f"{cls}|{split}"
            if not scores["bm25"][key]["ndcg@10"]:
                continue
            n = len(scores["bm25"][key]["ndcg@10"])
            cells = []
            for name in ("bm25", "dense", "rrf", before, served):
                cells.append(
                    f"{mean(name, cls, split, 'ndcg@10'):.3f} / {mean(name, cls, split, 'hit@5'):.2f}"
                    f" / {mean(name, cls, split, 'hit@1'):.2f}"
                )
            better = max(("bm25", "dense"), key=lambda s: mean(s, cls, split, "ndcg@10"))
            cmp_best = compare(
                scores[better][key]["ndcg@10"], scores[served][key]["ndcg@10"], n_resamples=2000
            )
            cmp_before = compare(
                scores[before][key]["ndcg@10"], scores[served][key]["ndcg@10"], n_resamples=2000
            )
            md.append(
                f"| {cls} | {split} | {n} | "
                + " | ".join(cells)
                + f" | {cmp_best.delta * 100:+.1f} [{cmp_best.ci_low * 100:+.1f}, "
                f"{cmp_best.ci_high * 100:+.1f}] ({better}) | {cmp_before.delta * 100:+.1f} "
                f"[{cmp_before.ci_low * 100:+.1f}, {cmp_before.ci_high * 100:+.1f}] |"
            )
            record["classes"][key] = {
                name: {m: mean(name, cls, split, m) for m in ("ndcg@10", "hit@5", "hit@1")}
                for name in systems
            }
    md.append("")
    md.append(
        "Cells: nDCG@10 / hit@5 / hit@1. 'served' is weighted fusion with the exact-match "
        "rule at the served default; CIs are 95% paired bootstrap over queries (nDCG@10 points)."
    )
    md.append("")
    md.append(
        "Dev hit@1 / nDCG@10 (mean over the tuned classes) of the rule grid, best first: "
        + ", ".join(
            f"{g}: " + "{:.3f} / {:.3f}".format(*dev_objective(rule(g))) for g in ranked_rules[:8]
        )
    )
    record["grid_dev"] = {str(g): dev_objective(rule(g)) for g in grid}
    tag = f"-{args.tag}" if args.tag else ""
    name = "query-classes-" + (Path(args.beir).name if args.beir else "shipped") + tag
    write_results(name, record, md)


if __name__ == "__main__":
    main()
