"""Clipped words in a query ("green brake acc pressure", "cal interval") read as the corpus
word the rest of the query points to.

Engineers type "acc" for accumulator, "cal" for calibration, "insp" for inspection. BM25
has no such token and a small dense model reads "acc" as noise. Among the corpus's words
that start with the clipped one, the reading is the one whose passages share the most
with the query's other words, and only when it is clearly ahead (by `CLEAR` times the
runner-up): "acc" with brake and nitrogen is accumulator, "micr" with nothing to tell
microcephaly from microphthalmia is left alone. Nothing outside the corpus is consulted;
the sources panel says what was read.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from rag_app.ir.stopwords import ENGLISH

if TYPE_CHECKING:
    from rag_app.store.bm25 import BM25Index

CLIP = re.compile(r"[a-z]{2,5}")  # a whole token of 2-5 lower-case letters
MAX_READ = 3  # clipped words read in one query at most
CANDIDATES = 20  # the most frequent completions weighed
CLEAR = 2.0  # the reading's support over the runner-up's
SHOWN_FROM = 5  # passages searched for the reading's spelling


@dataclass(frozen=True)
class Reading:
    clipped: str
    word: str


class Vocabulary:
    """BM25's word stems, sorted for prefix lookups, and the passages to spell them from.

    Built from the index, not the texts: sorting the terms of a million passages takes
    about a second, reading their text again would take half a minute."""

    def __init__(self, index: BM25Index, text_of: Callable[[str], str]) -> None:
        self.index = index
        self.text_of = text_of  # a chunk id's text
        self.stems = sorted(t for t in index.terms() if t.isalpha() and len(t) >= 4)

    def completions(self, prefix: str, limit: int = CANDIDATES) -> list[str]:
        """The stems (most passages first) starting with `prefix`, two or more letters
        longer."""
        i = bisect.bisect_left(self.stems, prefix)
        found = []
        while i < len(self.stems) and self.stems[i].startswith(prefix):
            if len(self.stems[i]) >= len(prefix) + 2:
                found.append(self.stems[i])
            i += 1
        return sorted(found, key=lambda t: (-self.index.doc_freq(t), t))[:limit]

    def spelling(self, stem: str, prefix: str) -> str:
        """A word of the passages that BM25 stems to `stem` ("accumulator" for "accumul")."""
        from rag_app.store.bm25 import tokenize
        from rag_app.text import WORD

        for cid in sorted(self.index.ids_with(stem))[:SHOWN_FROM]:
            for word in WORD.findall(self.text_of(cid)):
                low = word.lower()
                if low.startswith(prefix) and tokenize(low) == [stem]:
                    return low
        return stem


def read_clipped(query: str, vocabulary: Vocabulary) -> tuple[str, list[Reading]]:
    """`query` with each clipped word followed by its reading in brackets ("acc
    (accumulator)"), and the readings; the query unchanged when there are none.

    A word is clipped when it is a whole token of 2-5 lower-case letters, not a stop word,
    and BM25 has no passage with it; `MAX_READ` at most."""
    from rag_app.store.bm25 import tokenize
    from rag_app.text import TOKEN

    index = vocabulary.index
    readings: list[Reading] = []
    near: set[str] | None = None  # passages of the query's known words, computed once

    def read(match: re.Match[str]) -> str:
        nonlocal near
        word = match.group()
        if len(readings) >= MAX_READ or not CLIP.fullmatch(word) or word in ENGLISH:
            return word
        own = tokenize(word)
        if not own or index.doc_freq(own[0]) > 0:
            return word
        if near is None:  # a clipped word has no passages: the rest of the query's are these
            near = set()
            for term in set(tokenize(query)):
                near |= index.ids_with(term)
        if not near:
            return word
        support = {stem: len(index.ids_with(stem) & near) for stem in vocabulary.completions(word)}
        ranked = sorted(support.items(), key=lambda kv: -kv[1])
        if not ranked or ranked[0][1] == 0:
            return word
        if len(ranked) > 1 and ranked[0][1] < CLEAR * ranked[1][1]:
            return word
        reading = vocabulary.spelling(ranked[0][0], word)
        readings.append(Reading(word, reading))
        return f"{word} ({reading})"

    text = TOKEN.sub(read, query)  # whole tokens: "ab" of "ab-12" is part of a code
    return (text, readings) if readings else (query, [])
