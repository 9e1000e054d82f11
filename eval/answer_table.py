"""The answer table `rag-app demo` prints beside its retrieval table: is the chat's answer right?

For each retriever (base, and each fine-tuned run), every held-out question with a reference
answer is retrieved and answered exactly as the chat does (`ChatService.answer`, the served
answer mode), then scored by `eval.answer_quality`: key-fact recall, token F1, abstention,
yes/no polarity errors, latency after retrieval. A fine-tuned retriever changes the answer
twice: the passages it retrieves, and the embedder that scores the sentences to quote. The
paired bootstrap compares each fine-tuned row with the base row on key-fact recall.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from eval.answer_quality import answer_body, score_answer
from rag_app import extractive
from rag_app.ir.stats import compare
from rag_app.types import SearchMode

if TYPE_CHECKING:
    from rag_app.config import Settings


@dataclass
class AnswerRow:
    label: str
    mode: str
    recall: dict[str, float]  # question id -> key-fact recall (questions with key facts)
    f1: list[float] = field(default_factory=list)
    abstained: int = 0
    polarity_errors: list[str] = field(default_factory=list)
    ms: list[float] = field(default_factory=list)


def answer_rows(
    settings: Settings,
    questions: dict[str, str],
    references: dict[str, str],
    retrievers: dict[str, str],
) -> list[AnswerRow]:
    """One row per retriever (label -> key as the chat lists it: "baseline" or a run name)."""
    from rag_app.chat import ChatService, RetrieverChoice

    service = ChatService(settings)
    rows = []
    for label, key in retrievers.items():
        extractive.clear_cache()  # each row's times from a cold sentence-vector cache
        row = AnswerRow(label, "", {})
        choice = RetrieverChoice(key, SearchMode.HYBRID, True)
        for qid, text in questions.items():
            reference = references.get(qid)
            if not reference:
                continue
            hits = service.search(text, choice)
            started = time.perf_counter()
            answer = service.answer(text, hits, choice=choice)
            row.ms.append((time.perf_counter() - started) * 1000)
            row.mode = answer.mode
            score = score_answer(answer_body(answer), reference, abstained=answer.abstained)
            if score.key_fact_recall is not None:
                row.recall[qid] = score.key_fact_recall
            row.f1.append(score.token_f1)
            row.abstained += answer.abstained
            if score.polarity_error:
                row.polarity_errors.append(qid)
        rows.append(row)
    return rows


def table_lines(rows: list[AnswerRow]) -> list[str]:
    """The rows as aligned text, with the paired gain of each row over the first."""
    if not rows:
        return []
    base = rows[0]
    lines = [
        f"  {'':22s} {'mode':10s} {'key-fact recall':28s} token F1  abstained  polarity errors  ms p50"
    ]
    for row in rows:
        gain = ""
        if row is not base:
            shared = sorted(base.recall.keys() & row.recall.keys())
            if shared:
                c = compare(
                    {q: base.recall[q] for q in shared},
                    {q: row.recall[q] for q in shared},
                    n_resamples=2000,
                )
                gain = f" {c.delta:+.2f} [{c.ci_low:+.2f}, {c.ci_high:+.2f}]"
        recall = statistics.fmean(row.recall.values()) if row.recall else float("nan")
        f1 = statistics.fmean(row.f1) if row.f1 else float("nan")
        ms = statistics.median(row.ms) if row.ms else float("nan")
        lines.append(
            f"  {row.label:22s} {row.mode:10s} {recall:.2f}{gain:24s} {f1:.2f}      "
            f"{row.abstained:3d}/{len(row.f1):<5d} {len(row.polarity_errors):3d}"
            f"              {ms:.0f}"
        )
    return lines
