"""Play labelled questions through the chat's feedback path, as users would mark them.

The demo and the learning-curve bench need "users' feedback" they can measure against
held-out questions. This module takes a labelled set (BEIR queries + qrels), splits it by
*document* into a feedback part and a test part, and plays the feedback part through the
same code the chat uses: `ChatService.search` shows the top k passages, and every shown
passage is marked relevant when the qrels judge it (its chunk, or its document for
document-level qrels) and not relevant otherwise, appended by `FeedbackRecorder` to the
workspace's feedback file. `rag-app feedback export` then reads that file like any other.

A user can only mark what the chat showed: a question whose relevant passage is not in
the top k yields "not relevant" marks only. That is the honest simulation of the loop,
and why feedback teaches less than the full qrels would.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass

from rag_app.chat import BASELINE, ChatService, Mode, RetrieverChoice
from rag_app.config import Settings
from rag_app.types import SearchMode


@dataclass
class Split:
    """Query ids of a labelled set, split by the documents their qrels judge."""

    feedback: list[str]
    test: list[str]
    straddling: int  # queries judging documents on both sides: used by neither


def split_by_document(
    qrels: Mapping[str, Mapping[str, int]],
    share: float,
    *,
    seed: int = 42,
    group: Mapping[str, str] | None = None,
) -> Split:
    """About `share` of the judged documents (seeded) go to feedback, the rest to test.

    `group` maps a judged id to its document when qrels judge passages (e.g. passage ->
    title for MedQuAD, chunk -> doc_id); by default each judged id is its own document.
    """
    docs_of = {
        q: {(group or {}).get(d, d) for d, g in judged.items() if g > 0}
        for q, judged in qrels.items()
    }
    docs = sorted({d for ds in docs_of.values() for d in ds})
    random.Random(seed).shuffle(docs)
    chosen = set(docs[: round(share * len(docs))])
    feedback, test, straddling = [], [], 0
    for qid, ds in docs_of.items():
        if not ds:
            continue
        if ds <= chosen:
            feedback.append(qid)
        elif not ds & chosen:
            test.append(qid)
        else:
            straddling += 1
    return Split(feedback, test, straddling)


@dataclass
class PlayReport:
    questions: int = 0
    relevant: int = 0
    not_relevant: int = 0
    found: int = 0  # questions with a relevant passage among those shown


def play_feedback(
    settings: Settings,
    queries: Mapping[str, str],
    qrels: Mapping[str, Mapping[str, int]],
    *,
    key: str = BASELINE,
    mode: Mode = SearchMode.HYBRID,
    k: int | None = None,
    user: str = "simulated",
    service: ChatService | None = None,
) -> PlayReport:
    """Ask each question through the chat service and mark what it shows (module docstring)."""
    service = service or ChatService(settings, load_llm=False)
    report = PlayReport()
    choice = RetrieverChoice.of(key, mode, rerank=False)
    for qid, text in queries.items():
        judged = {d for d, g in qrels.get(qid, {}).items() if g > 0}
        hits = service.search(text, choice, k=k)
        turn = service.record_turn(text, choice, hits, user=user, endpoint="play")
        report.questions += 1
        hit_any = False
        for record in turn["hits"]:
            relevant = record["chunk_id"] in judged or record["doc_id"] in judged
            hit_any |= relevant
            service.feedback.mark_source(
                "relevant" if relevant else "not_relevant",
                turn=turn["turn"],
                query=text,
                retriever=turn["retriever"],
                hit=record,
                user=user,
            )
            if relevant:
                report.relevant += 1
            else:
                report.not_relevant += 1
        report.found += hit_any
    return report
