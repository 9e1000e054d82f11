"""What chat users tell the app: which cited passages were right, and every question asked.

Real questions are the strongest training signal this product has (docs/BENCHMARKS.md:
on a held-out MedQuAD subset, real questions gained +21.9 nDCG@10 where the best synthetic
recipe gained +4.9). The chat records them here; `rag-app feedback export` turns the marks
into a BEIR folder that `rag-app finetune --train-data` and `rag-app eval retrieval` read.

Two files under ``<workspace>/feedback/`` (`FEEDBACK_FILE`, `QUERY_LOG_FILE`), one JSON
object a line, appended through `JsonlLog` (whole lines, safe under concurrent clients
and crashes). Every record names the question, who asked (the login name when auth is on,
never a password), the browser session, the retriever that answered (base or run, search
mode, dimension, reranking) and the passages by chunk id *and content hash*, so a mark
can be matched again after a re-ingest changes ids. docs/SECURITY.md says what is stored
and how to delete it; `feedback.log_queries = false` turns the query log off and
`feedback.enabled = false` the marks.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Any, Literal

from rag_app.config import Settings
from rag_app.feedback.log import JsonlLog, LogFormatError, ReadResult
from rag_app.types import Hit

FEEDBACK_FILE = "feedback.jsonl"
QUERY_LOG_FILE = "queries.jsonl"
SCHEMA = 1

SourceMark = Literal["relevant", "not_relevant"]
AnswerMark = Literal["up", "down"]
SOURCE_MARKS: tuple[str, ...] = ("relevant", "not_relevant")
ANSWER_MARKS: tuple[str, ...] = ("up", "down")

__all__ = [
    "ANSWER_MARKS",
    "FEEDBACK_FILE",
    "QUERY_LOG_FILE",
    "SOURCE_MARKS",
    "FeedbackRecorder",
    "JsonlLog",
    "LogFormatError",
    "ReadResult",
    "content_hash",
    "hit_record",
]


def content_hash(text: str) -> str:
    """A short, stable hash of a passage's text: matches a mark to its passage after the
    chunk's id changed (a re-ingest of a moved file) or tells that the text changed."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def hit_record(hit: Hit, position: int) -> dict[str, Any]:
    """What a log keeps of one shown passage: ids, hash and why it ranked, not its text."""
    chunk = hit.chunk
    return {
        "position": position,
        "chunk_id": chunk.id,
        "doc_id": chunk.doc_id,
        "title": chunk.title,
        "content_hash": content_hash(chunk.text),
        "ranks": dict(hit.ranks),
        "scores": {k: round(float(v), 6) for k, v in hit.scores.items()},
    }


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


class FeedbackRecorder:
    """Appends the chat's marks and query log for one workspace (shared by all sessions)."""

    def __init__(self, settings: Settings) -> None:
        cfg = settings.feedback
        self.enabled = cfg.enabled
        self.log_queries = cfg.log_queries
        self.marks = JsonlLog(settings.feedback_dir / FEEDBACK_FILE)
        self.queries = JsonlLog(settings.feedback_dir / QUERY_LOG_FILE)

    def _base(
        self,
        kind: str,
        *,
        turn: str,
        query: str,
        retriever: dict[str, Any],
        user: str | None,
        session: str | None,
    ) -> dict[str, Any]:
        return {
            "v": SCHEMA,
            "type": kind,
            "time": _now(),
            "turn": turn,
            "user": user,
            "session": session,
            "query": query,
            "retriever": retriever,
        }

    def log_query(
        self,
        *,
        turn: str,
        query: str,
        retriever: dict[str, Any],
        hits: list[dict[str, Any]],
        user: str | None = None,
        session: str | None = None,
        endpoint: str = "ask",
    ) -> bool:
        """One line in the query log for a question asked; False when the log is off."""
        if not self.log_queries:
            return False
        record = self._base(
            "query", turn=turn, query=query, retriever=retriever, user=user, session=session
        )
        record.update({"endpoint": endpoint, "hits": hits})
        self.queries.append(record)
        return True

    def mark_source(
        self,
        mark: str,
        *,
        turn: str,
        query: str,
        retriever: dict[str, Any],
        hit: dict[str, Any],
        user: str | None = None,
        session: str | None = None,
    ) -> dict[str, Any]:
        """Record "relevant" / "not_relevant" for one cited passage; returns the record."""
        if mark not in SOURCE_MARKS:
            raise ValueError(f"a source mark is one of {SOURCE_MARKS}, not {mark!r}")
        return self._mark(
            "source", mark, turn, query, retriever, user, session, {"chunk": dict(hit)}
        )

    def mark_answer(
        self,
        mark: str,
        *,
        turn: str,
        query: str,
        retriever: dict[str, Any],
        answer: str,
        hits: list[dict[str, Any]],
        user: str | None = None,
        session: str | None = None,
    ) -> dict[str, Any]:
        """Record 👍 ("up") / 👎 ("down") for an answer, with the passages it was given."""
        if mark not in ANSWER_MARKS:
            raise ValueError(f"an answer mark is one of {ANSWER_MARKS}, not {mark!r}")
        extra = {"answer": answer, "chunks": [dict(h) for h in hits]}
        return self._mark("answer", mark, turn, query, retriever, user, session, extra)

    def _mark(self, target, mark, turn, query, retriever, user, session, extra) -> dict[str, Any]:
        if not self.enabled:
            raise PermissionError("feedback is off (feedback.enabled = false)")
        record = self._base(
            "mark", turn=turn, query=query, retriever=retriever, user=user, session=session
        )
        record.update({"target": target, "mark": mark, **extra})
        self.marks.append(record)
        return record
