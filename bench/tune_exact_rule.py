"""Choose `retrieval.exact_short_words` (or `exact_title_docs`, or `acronyms`) on the dev
halves of the protocol's ten corpora.

    .venv/bin/python bench/tune_exact_rule.py                       # dev: choose
    .venv/bin/python bench/tune_exact_rule.py --half test --values 1,4   # report the choice
    .venv/bin/python bench/tune_exact_rule.py --param acronyms --values off,append,replace

The exact-match rule (`rag_app.fusion.ExactMatchRule`) makes a keyword query of at most
`short_words` words (not phrased as a question: `rag_app.store.bm25.is_question`) that
holds a rare term keyword-led. With 1 (the first default) a document's title typed alone
("Kenny-Caffey syndrome type 1") was not a lookup, and the served hybrid fell well below
BM25 on GARD's titles (docs/BENCHMARKS.md, "Query classes on the protocol's corpora").
For each value this prints, per corpus and class, the served hybrid minus the better of BM25
and dense (nDCG@10, 95% paired bootstrap) and the change on natural questions against the
previous default; the choice is the smallest value with no class significantly below the
better retriever on dev and natural questions within noise.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

from _common import REPO, write_results
from _query_classes import Searches, classes_of, mean_of, score
from _query_protocol import protocol_queries


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--values", default="1,2,3,4,6", help="Values of --param to try.")
    parser.add_argument(
        "--param",
        default="short_words",
        choices=("short_words", "title_docs", "acronyms", "clipped"),
        help="The rule's parameter (or `retrieval.acronyms`) to vary; the others stay at "
        "the settings' defaults.",
    )
    parser.add_argument("--half", default="dev", choices=("dev", "test"))
    parser.add_argument("--corpora", default="all")
    parser.add_argument("--per-class", type=int, default=150)
    parser.add_argument("--max-queries", type=int, default=500)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--tag", default="")
    args = parser.parse_args()

    from _protocol_corpora import CLASS_CORPORA
    from _protocol_corpora import load_corpus as load_eval_corpus
    from bench_protocol import CORPORA as PROTOCOL_CORPORA

    CORPORA = (*PROTOCOL_CORPORA, *CLASS_CORPORA)

    from rag_app import index
    from rag_app.config import load_settings
    from rag_app.fusion import ExactMatchRule, FusionChoice
    from rag_app.ir.stats import compare
    from rag_app.retrieve import load_corpus

    names = CORPORA if args.corpora == "all" else args.corpora.split(",")
    values: list = args.values.split(",")
    if args.param not in ("acronyms", "clipped"):
        values = [int(v) for v in values]
    root = REPO / "workspace" / "bench-protocol"
    base = load_settings(workspace=root / "ws" / "_", seed=args.seed)
    r = base.retrieval
    report: dict = {"half": args.half, "values": values, "corpora": {}}
    lines = [f"{args.param} on the {args.half} halves; max_docs {r.exact_max_docs}, "]
    lines[0] += f"pin {r.exact_pin}, weighted {r.dense_weight:g}"
    for name in names:
        corpus = load_eval_corpus(name, root, base, args.seed, args.max_queries)
        ns = corpus.settings
        index.run(ns, progress=False)
        chunks = load_corpus(ns).chunks
        queries, _ = protocol_queries(corpus, chunks, args.per_class)
        queries = [q for q in queries if q[3] == args.half]
        search = Searches(ns, load_corpus(ns))
        weighted = FusionChoice("weighted", r.dense_weight)
        systems: dict[str, object] = {"bm25": search.bm25, "dense": search.dense}
        for v in values:
            fixed = {"short_words": r.exact_short_words, "title_docs": r.exact_title_docs}
            if args.param in ("acronyms", "clipped"):
                rule = ExactMatchRule(max_docs=r.exact_max_docs, pin=r.exact_pin, **fixed)
                reading = {"acronyms": r.acronyms, "clipped": r.clipped, args.param: v}
                systems[f"sw{v}"] = search.hybrid(weighted, rule, **reading)
                continue
            rule = ExactMatchRule(
                max_docs=r.exact_max_docs, pin=r.exact_pin, **{**fixed, args.param: v}
            )
            systems[f"sw{v}"] = search.hybrid(weighted, rule)
        scores = score(systems, queries, corpus.granularity)
        rows = {}
        for cls in classes_of(queries):
            key = f"{cls}|{args.half}"
            per = {s: scores[s][key]["ndcg@10"] for s in systems}
            better = max(("bm25", "dense"), key=lambda s: mean_of(per[s]))
            cells = {}
            for v in values:
                c = compare(per[better], per[f"sw{v}"])
                cells[v] = {"delta": c.delta, "ci": [c.ci_low, c.ci_high], "below": c.ci_high < 0}
            rows[cls] = {"n": len(per["bm25"]), "better": better, "cells": cells}
            shown = "  ".join(
                f"sw{v} {c['delta'] * 100:+.1f} [{c['ci'][0] * 100:+.1f},{c['ci'][1] * 100:+.1f}]"
                + ("*" if c["below"] else "")
                for v, c in cells.items()
            )
            line = f"{name:18s} {cls:28s} n={len(per['bm25']):3d} vs {better:5s}: {shown}"
            print(line, flush=True)
            lines.append(line)
        report["corpora"][name] = rows
    below = {v: [] for v in values}
    natural = {v: [] for v in values}
    for name, rows in report["corpora"].items():
        for cls, row in rows.items():
            for v, c in row["cells"].items():
                if c["below"]:
                    below[v].append(f"{name}/{cls}")
                if cls == "natural":
                    natural[v].append(c["delta"])
    for v in values:
        line = (
            f"sw{v}: classes significantly below the better retriever: {below[v] or 'none'}; "
            f"natural: median delta vs better {statistics.median(natural[v]) * 100:+.2f}"
        )
        print(line)
        lines.append(line)
    tag = f"-{args.tag}" if args.tag else ""
    name = f"tune-exact-rule-{args.param}-{args.half}{tag}"
    write_results(name, report, ["    " + x for x in lines])
    print(" ".join(sys.argv), file=sys.stderr)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).parent))
    main()
