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
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from rag_app.ir.stopwords import ENGLISH

if TYPE_CHECKING:
    from rag_app.store.bm25 import BM25Index

CLIP = re.compile(r"(?<![\w-])[a-z]{2,5}(?![\w-])")  # a lower-case word of 2-5 letters
WORD = re.compile(r"[a-z]{5,}")  # the corpus words a clipped one may stand for
CANDIDATES = 20  # the most frequent completions weighed
CLEAR = 2.0  # the reading's support over the runner-up's


@dataclass(frozen=True)
class Reading:
    clipped: str
    word: str


class Vocabulary:
    """The corpus's words of five or more letters with their passage counts, sorted for
    prefix lookups."""

    def __init__(self, texts: Iterable[str]) -> None:
        counts: Counter[str] = Counter()
        for text in texts:
            counts.update(set(WORD.findall(text.lower())))
        self.counts = counts
        self.words = sorted(counts)

    def completions(self, prefix: str, limit: int = CANDIDATES) -> list[str]:
        """The most frequent words starting with `prefix`, at least two letters longer."""
        i = bisect.bisect_left(self.words, prefix)
        found = []
        while i < len(self.words) and self.words[i].startswith(prefix):
            if len(self.words[i]) >= len(prefix) + 2:
                found.append(self.words[i])
            i += 1
        return sorted(found, key=lambda w: (-self.counts[w], w))[:limit]


def read_clipped(query: str, vocabulary: Vocabulary, index: BM25Index) -> tuple[str, list[Reading]]:
    """`query` with each clipped word followed by its reading in brackets ("acc
    (accumulator)"), and the readings; the query unchanged when there are none.

    A word is clipped when it is 2-5 lower-case letters, not a stop word, and BM25 has no
    passage with it."""
    from rag_app.store.bm25 import tokenize

    readings: list[Reading] = []

    def read(match: re.Match[str]) -> str:
        word = match.group()
        own = tokenize(word)
        if word in ENGLISH or not own or index.doc_freq(own[0]) > 0:
            return word
        rest = query[: match.start()] + " " + query[match.end() :]
        near: set[str] = set()
        for term in set(tokenize(rest)):
            near |= index.ids_with(term)
        if not near:
            return word
        support: dict[str, int] = {}
        shown: dict[str, str] = {}  # a stem's most frequent word
        for candidate in vocabulary.completions(word):
            stem = tokenize(candidate)
            if not stem:
                continue
            if stem[0] not in support:
                support[stem[0]] = len(index.ids_with(stem[0]) & near)
                shown[stem[0]] = candidate
        ranked = sorted(support.items(), key=lambda kv: -kv[1])
        if not ranked or ranked[0][1] == 0:
            return word
        if len(ranked) > 1 and ranked[0][1] < CLEAR * ranked[1][1]:
            return word
        reading = shown[ranked[0][0]]
        readings.append(Reading(word, reading))
        return f"{word} ({reading})"

    text = CLIP.sub(read, query)
    return (text, readings) if readings else (query, [])
