"""Choose the extractive answer's weights, keep-ratio and abstain threshold on dev questions.

    .venv/bin/python bench/tune_extractive.py

Dev = the half of `corpus/eval` that `rag-app demo` uses as the users' questions (split by
document, seeded); test questions are never read here. Each question's units and their four
features (`rag_app.extractive.features`) are computed once from the served hybrid top 5;
every weight combination then re-scores them, quoting as the product does
(`rag_app.extractive.select`), and is judged by key-fact recall (`eval.answer_quality`).
The abstain threshold is the largest that keeps every dev question answered, compared with
the share of out-of-domain questions (MedQuAD's, asked of this library) it turns away.
"""

from __future__ import annotations

import itertools
import json
import statistics

import numpy as np
from _common import DEFAULT_DATASET, REPO


def main() -> None:
    from eval.answer_quality import key_facts, score_answer
    from eval.feedback_play import split_by_document
    from rag_app import extractive
    from rag_app.chat import BASELINE, ChatService
    from rag_app.config import load_settings
    from rag_app.ir.beir import load_beir
    from rag_app.retrieve import load_corpus

    settings = load_settings(workspace=REPO / "workspace", corpus=REPO / "corpus")
    dataset = load_beir(REPO / "corpus" / "eval", split="test")
    dev = split_by_document(dataset.qrels, 0.5, seed=settings.seed).feedback
    refs = {}
    for line in (REPO / "corpus/eval/queries.jsonl").read_text().splitlines():
        row = json.loads(line)
        if row["metadata"].get("answer"):
            refs[row["_id"]] = row["metadata"]["answer"]
    service = ChatService(settings, load_llm=False)
    embedder = service.embedder_for(BASELINE, "hybrid", False)
    index = load_corpus(settings).bm25

    def prepared(text: str):
        hits = service.search(text, BASELINE, "hybrid", False)
        units = [
            u
            for n, h in enumerate(hits[: extractive.PASSAGES], 1)
            for u in extractive.units_of(h.chunk.text, n)
        ]
        return units, extractive.features(text, units, embedder, index)

    items = [
        (qid, *prepared(dataset.queries[qid]))
        for qid in dev
        if qid in refs and key_facts(refs[qid])
    ]
    ood = load_beir(DEFAULT_DATASET, split="dev", on_duplicate_query="drop")
    ood_items = [prepared(t) for t in list(ood.queries.values())[:40]]

    results = []
    for wd, wl, wr, wq, keep in itertools.product(
        (0.3, 0.5, 0.7),
        (0.2, 0.4, 0.6),
        (0.0, 0.1, 0.2),
        (0.0, 0.1, 0.2, 0.3),
        (0.4, 0.5, 0.6, 0.7),
    ):
        weights = np.array([wd, wl, wr, wq])
        extractive.KEEP_RATIO = keep
        recalls = []
        bests = []
        for qid, units, feats in items:
            scores = feats @ weights
            quotes = extractive.select(units, scores)
            body = "\n".join(q.unit.text for q in quotes)
            recalls.append(score_answer(body, refs[qid], abstained=False).key_fact_recall or 0.0)
            bests.append(float(scores.max()) if len(scores) else 0.0)
        ood_bests = [float((f @ weights).max()) if len(f) else 0.0 for _, f in ood_items]
        results.append((statistics.fmean(recalls), (wd, wl, wr, wq, keep), min(bests), ood_bests))
    results.sort(key=lambda r: -r[0])
    for recall, params, lowest, ood_bests in results[:8]:
        threshold = lowest * 0.98
        turned = sum(b < threshold for b in ood_bests) / len(ood_bests)
        print(
            f"dev key-fact recall {recall:.3f}  weights dense/lexical/rank/quantity + keep "
            f"{params}  abstain below {threshold:.3f} keeps all dev, turns away {turned:.0%} OOD"
        )
    print(f"{len(items)} dev questions with key facts, {len(ood_items)} out-of-domain")


if __name__ == "__main__":
    main()
