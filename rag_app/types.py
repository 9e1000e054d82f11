"""Plain data records passed between pipeline stages.

They are dataclasses rather than framework objects so that every stage (and the
LlamaIndex / LangChain adapters) can convert them without pulling in the others.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any


@dataclass(frozen=True)
class Chunk:
    """One retrievable passage of a source document.

    `id` is a content hash of (doc_id, text), so re-ingesting unchanged text yields the
    same ids and indexes never need rebuilding for files that did not change.
    `doc_id` is the source path relative to the corpus root, with forward slashes.
    `start_char` / `end_char` locate the text in the document's extracted text.
    """

    id: str
    doc_id: str
    text: str
    title: str = ""
    heading_path: str = ""
    start_char: int = 0
    end_char: int = 0
    metadata: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Chunk:
        return cls(**data)

    def embedding_text(self) -> str:
        """Text given to embedders and BM25: title and heading path give short chunks context."""
        head = " > ".join(p for p in (self.title, self.heading_path) if p)
        return f"{head}\n{self.text}" if head else self.text


@dataclass
class Hit:
    """A chunk with the score and rank it got at every retrieval stage it passed.

    Stages: "bm25", "dense", "fused", "rerank". Keeping all of them lets the UI and the
    eval report show *why* a passage ranked where it did.
    """

    chunk: Chunk
    scores: dict[str, float] = field(default_factory=dict)
    ranks: dict[str, int] = field(default_factory=dict)

    @property
    def score(self) -> float:
        """Score of the last stage that ran (rerank > fused > dense > bm25)."""
        for stage in ("rerank", "fused", "dense", "bm25"):
            if stage in self.scores:
                return self.scores[stage]
        return 0.0


class SearchMode(StrEnum):
    """How a question is searched: BM25 and dense fused, or one of them alone. Defined once
    and parsed once (`parse`) where a mode enters from outside (CLI, UI, API, eval specs);
    a member is also its string ("hybrid"), so JSON, logs and caches see plain text."""

    HYBRID = "hybrid"
    DENSE = "dense"
    BM25 = "bm25"

    @classmethod
    def parse(cls, value: str) -> SearchMode:
        """The mode named by `value`, or a ValueError listing the modes."""
        try:
            return cls(str(value).strip().lower())
        except ValueError:
            names = ", ".join(m.value for m in cls)
            raise ValueError(f"unknown search mode {value!r}; use {names}") from None
