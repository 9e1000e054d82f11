"""Query classes after fine-tuning (issue 31, item 4): does the fine-tuned retriever learn
identifiers, titles, rare words and jargon, or lose them?

    .venv/bin/python bench/bench_query_classes_tuned.py --corpora shipped,GARD,ruff-rules

For each corpus, the product's own training (`bench_protocol.train_recipe`, the `default`
recipe: the bundled LLM's questions for a sample of chunks plus structural queries for
every chunk, then the query-side adapter) **on the dev half's documents only**: structural
queries include a chunk's title and the codes in it, so a title or identifier query of a
trained document would be a training query. The classes (`_query_protocol
.protocol_queries`) are then scored on the **test** half, documents the run never saw:
base and fine-tuned, dense alone and the served hybrid (weighted fusion at
`retrieval.dense_weight` with the exact-match rule and the query readings), fine-tuned minus base by
a 95% paired bootstrap. This is the conservative reading: in the product the run trains on
every document, the ones users then look up included.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from _common import REPO, write_results
from _query_classes import Cached, Searches, classes_of, mean_of, score

SYSTEMS = ("dense", "dense tuned", "served", "served tuned")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpora", default="shipped,GARD,ruff-rules")
    parser.add_argument("--per-class", type=int, default=150)
    parser.add_argument("--max-queries", type=int, default=500)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--progress", action="store_true")
    parser.add_argument("--tag", default="")
    args = parser.parse_args()

    from _protocol_corpora import load_corpus as load_eval_corpus
    from _query_protocol import document_of, half_of, protocol_queries
    from bench_protocol import RECIPES, train_recipe

    from rag_app import index
    from rag_app.config import load_settings
    from rag_app.fusion import FusionChoice
    from rag_app.ir.stats import compare
    from rag_app.retrieve import build_dense, exact_rule, load_corpus

    root = REPO / "workspace" / "bench-protocol"
    base = load_settings(workspace=root / "ws" / "_", seed=args.seed)
    began = time.perf_counter()
    report: dict = {
        "date": str(datetime.now(UTC).date()),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.system()}",
        "command": "python bench/bench_query_classes_tuned.py " + " ".join(sys.argv[1:]),
        "corpora": {},
    }
    for name in args.corpora.split(","):
        t0 = time.perf_counter()
        corpus = load_eval_corpus(name, root, base, args.seed, args.max_queries)
        ns = corpus.settings
        index.run(ns, progress=False)
        chunks = load_corpus(ns).chunks
        queries, _ = protocol_queries(corpus, chunks, args.per_class)
        queries = [q for q in queries if q[3] == "test"]
        # train on the dev half's documents only (a test document's title is a class query)
        doc = document_of(corpus)
        half = {c.id: half_of(corpus, doc(c)) for c in chunks}
        trained = train_recipe(
            corpus,
            f"{name}-classes-dev",
            RECIPES["default"],
            args.progress,
            keep_pair=lambda pair, half=half: half.get(pair.passage_id) == "dev",
        )
        if "error" in trained:
            print(f"[{name}] {trained['error']}", file=sys.stderr)
            continue
        search = Searches(ns, load_corpus(ns))
        tuned = Cached(
            "dense tuned", build_dense(ns, load_corpus(ns), trained["run"]), search.dense.cache
        )
        weighted = FusionChoice("weighted", ns.retrieval.dense_weight)
        rule, reading = exact_rule(ns), (ns.retrieval.acronyms, ns.retrieval.clipped)
        served_tuned = search.hybrid(weighted, rule, *reading)
        served_tuned.dense = tuned
        systems = {
            "dense": search.dense,
            "dense tuned": tuned,
            "served": search.hybrid(weighted, rule, *reading),
            "served tuned": served_tuned,
        }
        scores = score(systems, queries, corpus.granularity)
        rows = {}
        for cls in classes_of(queries):
            key = f"{cls}|test"
            if not scores["dense"][key]["ndcg@10"]:
                continue
            row = {
                "n": len(scores["dense"][key]["ndcg@10"]),
                "means": {s: mean_of(scores[s][key]["ndcg@10"]) for s in SYSTEMS},
            }
            for a, b in (("dense", "dense tuned"), ("served", "served tuned")):
                c = compare(scores[a][key]["ndcg@10"], scores[b][key]["ndcg@10"])
                row[f"{b} - {a}"] = {"delta": c.delta, "ci": [c.ci_low, c.ci_high]}
            rows[cls] = row
        report["corpora"][name] = {
            "train": {
                k: trained.get(k)
                for k in ("run", "train_pairs", "val_pairs", "recommended", "seconds")
            },
            "rows": rows,
        }
        print(
            f"[{name}] {time.perf_counter() - t0:.0f} s; trained {trained}",
            file=sys.stderr,
            flush=True,
        )
    report["seconds"] = round(time.perf_counter() - began, 1)

    def ci(c: dict) -> str:
        flag = " **worse**" if c["ci"][1] < 0 else (" **better**" if c["ci"][0] > 0 else "")
        return f"{c['delta'] * 100:+.1f} [{c['ci'][0] * 100:+.1f}, {c['ci'][1] * 100:+.1f}]{flag}"

    md = [
        f"Query classes after fine-tuning on the dev half's documents, scored on the test "
        f"half, {report['date']}, {report['machine']}, {report['seconds']:.0f} s.",
        "",
        "| corpus | class | n | dense | dense tuned | served | served tuned | "
        "dense: tuned - base | served: tuned - base |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, c in report["corpora"].items():
        for cls, r in c["rows"].items():
            m = r["means"]
            md.append(
                f"| {name} | {cls} | {r['n']} | "
                + " | ".join(f"{m[s]:.3f}" for s in SYSTEMS)
                + f" | {ci(r['dense tuned - dense'])} | {ci(r['served tuned - served'])} |"
            )
    md += ["", "nDCG@10 on test; CIs: 95% paired bootstrap, nDCG@10 x100.", ""]
    for name, c in report["corpora"].items():
        t = c["train"]
        md.append(
            f"- {name}: {t['train_pairs']} training pairs, {t['val_pairs']} validation, "
            f"recommended {t['recommended']}, {t['seconds']} s"
        )
    tag = f"-{args.tag}" if args.tag else ""
    write_results(f"query-classes-tuned{tag}", report, md)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).parent))
    main()
