"""Structural pseudo-queries: training queries from the corpus's own structure, no LLM.

For every chunk: the section heading with the document's title, and the document's title
with the terms that set the chunk apart from its *sibling* chunks (the chunks under the
same title; `contrast_terms`, codes such as ``NW-F-142`` kept whole) as a glossary-style
keyword query. Siblings are where a base embedder goes wrong, and on the cross-corpus
protocol (docs/BENCHMARKS.md) these queries carry the synthetic recipe's gain.
`finetune.synth` mixes them with the LLM's questions and filters both.
"""

from __future__ import annotations

import math
import re
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from finetune import query_filters
from finetune.split import Origin
from rag_app.ir import stopwords
from rag_app.types import Chunk


@dataclass(frozen=True)
class Candidate:
    """One synthetic query for one chunk, before or after filtering."""

    query: str
    chunk_id: str
    doc_id: str
    source: str  # an `Origin`: the LLM's (per style) or the corpus's structure
    rank: int | None = None  # the source chunk's rank under the base retriever

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


_NUMBERING = re.compile(r"^\s*(?:[#\d.()]+|[A-Z][.)]|section|chapter|part)\s+", re.IGNORECASE)


_CODE = re.compile(r"\b[A-Z0-9]{1,6}(?:[-/][A-Z0-9]{1,8})+\b")


def clean_heading(text: str) -> str:
    return _NUMBERING.sub("", text.strip()).strip(" :-–—")


@dataclass(frozen=True)
class TermStats:
    """Word document frequencies over all chunks and within each group of sibling chunks."""

    df: Counter
    n_chunks: int
    group_df: dict[str, Counter]
    group_size: Counter

    def siblings(self, chunk: Chunk) -> int:
        """How many chunks share `chunk`'s sibling group (itself included)."""
        return self.group_size.get(sibling_key(chunk), 1)


def sibling_key(chunk: Chunk) -> str:
    """Chunks under one document title (or of one untitled document) are siblings."""
    title = query_filters.normalise(clean_heading(chunk.title))
    return f"title:{title}" if title else f"doc:{chunk.doc_id}"


def _codes(text: str) -> list[str]:
    """Part numbers and references ("NW-F-142", "EDP-3"), kept whole as search terms."""
    return [c for c in _CODE.findall(text) if any(ch.isalpha() for ch in c)]


def term_statistics(chunks: Sequence[Chunk]) -> TermStats:
    df: Counter = Counter()
    group_df: dict[str, Counter] = defaultdict(Counter)
    group_size: Counter = Counter()
    for chunk in chunks:
        present = set(query_filters.words(chunk.text)) | {c.lower() for c in _codes(chunk.text)}
        df.update(present)
        key = sibling_key(chunk)
        group_df[key].update(present)
        group_size[key] += 1
    return TermStats(df, len(chunks), dict(group_df), group_size)


def contrast_terms(chunk: Chunk, stats: TermStats, n: int) -> list[str]:
    """The chunk's `n` terms that best set it apart from its sibling chunks.

    Why: chunks of one document share its subject and differ in aspect (symptoms vs
    treatment, removal vs installation), and that is where a base embedder goes wrong:
    on medquad-small 146 of the 157 test questions it misses rank a sibling of the right
    passage first. Plain corpus tf-idf terms name the subject again ("acromegaly growth
    hormone") and teach nothing about the aspect; weighting each word by how few siblings
    contain it (tf x log((1+G)/g) x idf, G siblings, g of them with the word) picks the
    aspect words instead ("scan mri", "surgery radiation"). Words in the title and words
    every sibling shares are left out. A chunk without siblings gets its plain tf-idf terms.
    """
    size = stats.siblings(chunk)
    group_df = stats.group_df.get(sibling_key(chunk), Counter())
    title_words = set(query_filters.words(chunk.title))

    def distinctive(word: str) -> bool:
        return size == 1 or group_df.get(word, 0) < size

    tf = Counter(
        w
        for w in query_filters.words(chunk.text)
        if w not in stopwords.KEYWORDS and len(w) > 2 and not w.isdigit() and w not in title_words
    )
    codes: dict[str, str] = {}  # lower case -> as written
    for code in _codes(chunk.text):
        codes.setdefault(code.lower(), code)
        tf[code.lower()] += 1

    def weight(word: str) -> float:
        inside = max(group_df.get(word, 1), 1)
        idf = math.log((1 + stats.n_chunks) / (1 + stats.df.get(word, 0)))
        return tf[word] * math.log((1 + size) / inside) * idf

    # codes no sibling shares first, then everything by contrast weight
    ranked = sorted((w for w in tf if distinctive(w)), key=lambda w: (-weight(w), w))
    first = [w for w in ranked if w in codes and (size == 1 or group_df.get(w, 0) <= 1)][:2]
    ordered = first + [w for w in ranked if w not in first]
    return [codes.get(w, w) for w in ordered[:n]]


def structural_queries(chunk: Chunk, stats: TermStats, limit: int = 2) -> list[Candidate]:
    """Pseudo-queries from the chunk's title, heading path and distinctive terms."""
    out: list[Candidate] = []
    heads = [h for h in (p.strip() for p in chunk.heading_path.split(">")) if h]
    title = clean_heading(chunk.title)
    short_title = " ".join(title.split(":")[0].split()[:6])
    section = clean_heading(heads[-1]) if heads else ""
    if section and title and query_filters.normalise(section) != query_filters.normalise(title):
        out.append(Candidate(f"{section} {short_title}", chunk.id, chunk.doc_id, Origin.HEADING))
    elif (title or section) and stats.siblings(chunk) == 1:
        # a bare title names every sibling equally well, so only a lone chunk gets it
        out.append(Candidate(section or title, chunk.id, chunk.doc_id, Origin.HEADING))
    # Glossary-style keywords: the document's subject plus what sets this chunk apart.
    terms = contrast_terms(chunk, stats, 2 if short_title else 3)
    if len(terms) >= 2 or (short_title and terms):
        query = " ".join([short_title, *terms] if short_title else terms)
        out.append(Candidate(query, chunk.id, chunk.doc_id, Origin.TERMS))
    return out[:limit]
