"""Query classes on the cross-corpus protocol's corpora (`bench_query_classes.py --protocol`).

Each corpus of `bench_protocol.py` is loaded as the protocol loads it
(`_protocol_corpora.load_corpus`: workspace ``workspace/bench-protocol/``, seed 42, at most
500 questions a split) and indexed with the base model. Classes:

- **natural**: the corpus's real questions, the protocol's own dev / test questions and
  judgements (chunks; documents on the shipped corpus);
- **title**: a document's title typed alone, judged by its units (the chunks of that title,
  or the document); **rare word**: a word of 7+ letters in 2-5 units typed alone, judged by
  them (`_query_classes.keyword_queries`, 150 of each drawn per corpus);
- **identifier**: where at least `MIN_CODES` codes are each held by exactly one document's
  title, each in four phrasings, judged by the owning document (its chunks at chunk level).

A built query takes the protocol's half of the document(s) it is judged by (a MedQuAD
source's document is a title; a document without a question falls to a hash); one whose
judged units straddle the halves is left out, so dev and test never share a document.
Searches: BM25, dense (the base model's Chroma collection) and the served hybrid
(`HybridRetriever`: weighted fusion at `retrieval.dense_weight` with
`rag_app.retrieve.exact_rule(settings)`), 50 candidates each. Nothing is chosen here:
every number is the served default's; the served hybrid is compared with the better of BM25
and dense on each class and half by a 95% paired bootstrap (`rag_app.ir.stats`).
"""

from __future__ import annotations

import os
import platform
import sys
import time
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path

from _common import REPO, write_results
from _query_classes import (
    Query,
    Searches,
    classes_of,
    identifier_queries,
    jargon_queries,
    keyword_queries,
    mean_of,
    score,
    split_of,
)

MIN_CODES = 10  # fewer codes in a corpus's titles: no identifier class there
METRICS = ("ndcg@10", "hit@5", "hit@1")
SHOWN = ("bm25", "dense", "served")


def document_of(corpus):
    """A chunk's document in the protocol: a MedQuAD source's title, else its file."""
    from bench_protocol import SOURCES

    medquad = corpus.name in SOURCES

    def doc(chunk) -> str:
        return (chunk.title or chunk.id) if medquad else chunk.doc_id

    return doc


def half_of(corpus, key: str) -> str:
    """The protocol's half (dev / test) of document `key`; a document without a question
    falls to a hash."""
    return corpus.doc_split.get(key) or split_of(key)


def protocol_queries(corpus, chunks, per_class: int, seed: int = 0) -> tuple[list[Query], dict]:
    """Every class's queries of one protocol corpus, and what was left out (counts)."""
    doc = document_of(corpus)

    def unit(chunk) -> str:
        return chunk.id if corpus.granularity == "chunk" else chunk.doc_id

    doc_of_unit = {unit(c): doc(c) for c in chunks}
    left_out = {"straddling": 0}

    def half(key: str) -> str:
        return half_of(corpus, key)

    def split(_text: str, judged) -> str | None:
        halves = {half(doc_of_unit[u]) for u in judged}
        if len(halves) == 1:
            return halves.pop()
        left_out["straddling"] += 1
        return None

    queries: list[Query] = []
    for name in ("dev", "test"):
        for qid in corpus.splits[name]:
            judged = {u: 1 for u, grade in corpus.qrels[qid].items() if grade > 0}
            if judged:
                queries.append((corpus.queries[qid], judged, corpus.question_class, name))
    queries += keyword_queries(
        chunks, per_class, seed, unit=unit, split=split, names=("title", "rare word")
    )
    natural = [q for q in queries if q[2] == "natural"]  # clipped questions: people's only
    queries += jargon_queries(chunks, natural, per_class, seed, unit=unit, split=split)
    found = identifier_queries(chunks, doc, corpus.code_pattern)
    codes = sorted({code for *_, code in found})
    left_out["codes"] = codes if len(codes) < MIN_CODES else len(codes)
    if len(codes) >= MIN_CODES:
        units_of: dict[str, set[str]] = defaultdict(set)
        for c in chunks:
            units_of[doc(c)].add(unit(c))
        for text, owner, _ in found:
            queries.append((text, dict.fromkeys(units_of[owner], 1), "identifier", half(owner)))
    return queries, left_out


def compare_cell(scores, key: str, metric: str) -> dict:
    """The served hybrid against the better (on this half, by `metric`) of BM25 and dense."""
    from rag_app.ir.stats import compare

    better = max(("bm25", "dense"), key=lambda s: mean_of(scores[s][key][metric]))
    c = compare(scores[better][key][metric], scores["served"][key][metric])
    return {
        "better": better,
        "delta": c.delta,
        "ci": [c.ci_low, c.ci_high],
        "p": c.p_value,
        "below": c.ci_high < 0,
    }


def corpus_rows(name: str, scores, queries: list[Query]) -> dict:
    rows = {}
    for cls in classes_of(queries):
        for half in ("dev", "test"):
            key = f"{cls}|{half}"
            if not scores["bm25"][key]["ndcg@10"]:
                continue
            rows[key] = {
                "n": len(scores["bm25"][key]["ndcg@10"]),
                "means": {s: {m: mean_of(scores[s][key][m]) for m in METRICS} for s in scores},
                "vs_better": {m: compare_cell(scores, key, m) for m in ("ndcg@10", "hit@5")},
            }
    return rows


def table(report: dict, half: str) -> list[str]:
    def ci(c: dict, scale: float, digits: int) -> str:
        flag = " **below**" if c["below"] else ""
        return (
            f"{c['delta'] * scale:+.{digits}f} [{c['ci'][0] * scale:+.{digits}f}, "
            f"{c['ci'][1] * scale:+.{digits}f}] ({c['better']}){flag}"
        )

    out = [
        f"**{half}**: nDCG@10 / hit@5 of each search; served hybrid - better of BM25 and "
        "dense, 95% paired bootstrap (nDCG@10 x100; hit@5 in points x100)",
        "",
        "| corpus | class | n | bm25 | dense | served | served - better, nDCG@10 | "
        "served - better, hit@5 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, row in report["corpora"].items():
        for key, r in row["rows"].items():
            cls, h = key.split("|")
            if h != half:
                continue
            cells = [
                f"{r['means'][s]['ndcg@10']:.3f} / {r['means'][s]['hit@5']:.2f}" for s in SHOWN
            ]
            out.append(
                f"| {name} | {cls} | {r['n']} | "
                + " | ".join(cells)
                + f" | {ci(r['vs_better']['ndcg@10'], 100, 1)} | {ci(r['vs_better']['hit@5'], 100, 1)} |"
            )
    return [*out, ""]


def run_protocol(args) -> None:
    from _protocol_corpora import CLASS_CORPORA
    from _protocol_corpora import load_corpus as load_eval_corpus
    from bench_protocol import CORPORA as PROTOCOL_CORPORA

    from rag_app import index
    from rag_app.config import load_settings
    from rag_app.fusion import FusionChoice
    from rag_app.retrieve import exact_rule, load_corpus

    CORPORA = (*PROTOCOL_CORPORA, *CLASS_CORPORA)
    names = CORPORA if args.protocol == "all" else [c.strip() for c in args.protocol.split(",")]
    unknown = [c for c in names if c not in CORPORA]
    if unknown:
        raise SystemExit(f"unknown corpora {unknown}; known: {', '.join(CORPORA)}")
    root = Path(args.workspace or REPO / "workspace" / "bench-protocol")
    base = load_settings(workspace=root / "ws" / "_", seed=args.seed)
    began = time.perf_counter()
    report: dict = {
        "date": str(datetime.now(UTC).date()),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.system()}",
        "command": "python bench/bench_query_classes.py " + " ".join(sys.argv[1:]),
        "served": {
            "fusion": f"weighted {base.retrieval.dense_weight:g}",
            "exact_rule": repr(exact_rule(base)),
            "acronyms": base.retrieval.acronyms,
        },
        "corpora": {},
    }
    for name in names:
        t0 = time.perf_counter()
        corpus = load_eval_corpus(name, root, base, args.seed, args.max_queries)
        ns = corpus.settings
        index.run(ns, progress=False)
        t_index = time.perf_counter() - t0
        chunks = load_corpus(ns).chunks
        queries, left_out = protocol_queries(corpus, chunks, args.per_class)
        search = Searches(ns, load_corpus(ns))
        systems = {
            "bm25": search.bm25,
            "dense": search.dense,
            "served": search.hybrid(
                FusionChoice("weighted", ns.retrieval.dense_weight),
                exact_rule(ns),
                ns.retrieval.acronyms,
                ns.retrieval.clipped,
            ),
            "weighted, no rule": search.hybrid(
                FusionChoice("weighted", ns.retrieval.dense_weight), None
            ),
        }
        scores = score(systems, queries, corpus.granularity)
        report["corpora"][name] = {
            "structure": corpus.structure,
            "granularity": corpus.granularity,
            "left_out": left_out,
            "seconds": {
                "load+index": round(t_index, 1),
                "total": round(time.perf_counter() - t0, 1),
            },
            "rows": corpus_rows(name, scores, queries),
        }
        print(
            f"[{name}] {len(queries)} queries, {time.perf_counter() - t0:.0f} s "
            f"(load + index {t_index:.0f} s); left out {left_out}",
            file=sys.stderr,
            flush=True,
        )
    report["seconds"] = round(time.perf_counter() - began, 1)
    md = [
        f"Query classes on the protocol's corpora, base model, {report['date']}, "
        f"{report['machine']}, {report['seconds']:.0f} s. Served: "
        f"{report['served']['fusion']} + {report['served']['exact_rule']}.",
        "",
        *table(report, "test"),
        *table(report, "dev"),
        "Cells: nDCG@10 / hit@5. '(x)': the better single retriever on that half and metric; "
        "**below**: the served hybrid significantly below it (CI wholly under 0).",
    ]
    tag = f"-{args.tag}" if args.tag else ""
    write_results(f"query-classes-protocol{tag}", report, md)
