"""Choose the extractive answer's weights, keep-ratio and abstain threshold on dev questions.

    .venv/bin/python bench/tune_extractive.py                 # the chat's top 5 passages
    .venv/bin/python bench/tune_extractive.py --passages 3,5,8 # more passages to quote from

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
import statistics

import numpy as np
from _common import DEFAULT_DATASET, REPO


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--passages", default="5", help="Passages quoted from, e.g. 3,5,8.")
    parser.add_argument("--sections", default="0,1", help="Score with the section heading: 0,1.")
    args = parser.parse_args()
    from eval.answer_quality import key_facts, score_answer
    from eval.feedback_play import split_by_document
    from eval.sets import _references_from
    from rag_app import extractive
    from rag_app.chat import BASELINE, ChatService, RetrieverChoice
    from rag_app.config import load_settings
    from rag_app.ir.beir import load_beir
    from rag_app.retrieve import load_corpus

    PLAIN = RetrieverChoice.of(BASELINE, "hybrid", False)  # the served hybrid, no reranker

    settings = load_settings(workspace=REPO / "workspace", corpus=REPO / "corpus")
    dataset = load_beir(REPO / "corpus" / "eval", split="test")
    dev = split_by_document(dataset.qrels, 0.5, seed=settings.seed).feedback
    refs, _ = _references_from(dataset)
    service = ChatService(settings, load_llm=False)
    embedder = service.embedder_for(PLAIN)
    index = load_corpus(settings).bm25

    searched = {q: service.search(dataset.queries[q], PLAIN, k=8) for q in dev}
    ood = load_beir(DEFAULT_DATASET, split="dev", on_duplicate_query="drop")
    ood_texts = list(ood.queries.values())[:40]
    ood_hits = [service.search(t, PLAIN, k=8) for t in ood_texts]

    def prepared(text: str, hits, passages: int):
        units = [
            u
            for n, h in enumerate(hits[:passages], 1)
            for u in extractive.units_of(h.chunk.text, n, extractive.section_of(h))
        ]
        return units, extractive.features(text, units, embedder, index)

    results = []
    for section, passages in itertools.product(
        [bool(int(x)) for x in args.sections.split(",")],
        [int(x) for x in args.passages.split(",")],
    ):
        extractive.SCORE_SECTION = section
        items = [
            (qid, *prepared(dataset.queries[qid], searched[qid], passages))
            for qid in dev
            if qid in refs and key_facts(refs[qid])
        ]
        ood_items = [prepared(t, h, passages) for t, h in zip(ood_texts, ood_hits, strict=True)]
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
                recalls.append(
                    score_answer(body, refs[qid], abstained=False).key_fact_recall or 0.0
                )
                bests.append(float(scores.max()) if len(scores) else 0.0)
            ood_bests = [float((f @ weights).max()) if len(f) else 0.0 for _, f in ood_items]
            params = (section, passages, wd, wl, wr, wq, keep)
            results.append((statistics.fmean(recalls), params, min(bests), ood_bests))
    results.sort(key=lambda r: -r[0])
    for recall, params, lowest, ood_bests in results[:10]:
        turned = sum(b < lowest for b in ood_bests) / len(ood_bests)
        print(
            f"dev key-fact recall {recall:.3f}  section/passages/dense/lexical/rank/quantity/keep "
            f"{params}  lowest dev best {lowest:.3f} (OOD highest {max(ood_bests):.3f}, "
            f"{turned:.0%} below it)"
        )
    print(f"{len(items)} dev questions with key facts, {len(ood_items)} out-of-domain")


if __name__ == "__main__":
    main()
