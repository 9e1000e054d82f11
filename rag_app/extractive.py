"""Extractive answers: the sentences of the retrieved passages that answer the question, quoted.

A 135M generator cannot turn the right passages into a right answer (issue 27: eight of
eight `corpus/eval` questions answered wrongly, one "Yes" where the documents say "No"),
but the right facts are usually in the top passages. Quoting them verbatim is faithful by
construction and takes milliseconds.

Each passage is cut into *units* that can stand alone: a sentence of running text, a list
item with its lead-in ("Before the run:" + "- chocks in place"), a table row with its header
row. Units are scored against the question by

- the selected retriever's embedder (base or fine-tuned, so the chat's toggle changes the
  answer too): cosine of the question's vector and the unit's passage-side vector;
- the question's terms found in the unit, weighted by their IDF in the BM25 index (a rare
  term or an identifier such as "NW-F-117" counts for much, "the" for nothing);
- the passage's retrieval rank (the fused list already weighed the whole passage);
- a number with a unit ("270 Nm", "500 FH") when the question asks for a quantity
  ("torque", "how often", "pressure", "limit").

The best unit is quoted, and the next best when they are close, up to `MAX_UNITS` units and
`MAX_WORDS` words, in reading order (by passage, then position). Units are never cut, so
numbers, units and negations stay whole. When even the best unit scores below
`ABSTAIN_BELOW`, the answer is "not found" with the closest sources: a wrong quote from an
off-topic passage is worse than none. The weights and the threshold were chosen on the dev
half of `corpus/eval` and out-of-domain questions (docs/BENCHMARKS.md, "Answer modes").
"""

from __future__ import annotations

import math
import re
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from rag_app.text import split_sentences
from rag_app.types import Hit

if TYPE_CHECKING:
    from rag_app.embedder import Embedder
    from rag_app.store.bm25 import BM25Index

MAX_UNITS = 3
MAX_WORDS = 80
KEEP_RATIO = 0.5  # a further unit is quoted when it scores at least this share of the best
WEIGHT_DENSE = 0.7
WEIGHT_LEXICAL = 0.6
WEIGHT_RANK = 0.1
WEIGHT_QUANTITY = 0.2
WEIGHTS = np.array([WEIGHT_DENSE, WEIGHT_LEXICAL, WEIGHT_RANK, WEIGHT_QUANTITY])
ABSTAIN_BELOW = 0.45
PASSAGES = 5  # units come from the top passages only (the chat shows 5)
SCORE_SECTION = False  # scoring with the section heading did not help on dev (top 5)
# Units the embedder scores: the best by the cheap features (terms, rank, quantity). Encoding
# is most of an answer's time; on dev, 12 lost no key fact against all (median 23, max 39).
DENSE_UNITS = 12

_UNIT_WORDS = (
    r"nm|n·m|bar|psi|kpa|mpa|fh|fc|hrs?|hours?|minutes?|mins?|days?|weeks?|months?|years?|"
    r"°c|°f|c|mm|cm|m|kg|g|l|ml|%|percent|v|a|amps?|volts?|ohms?|cycles?|litres?|liters?"
)
_QUANTITY = re.compile(rf"\d(?:[\d.,]*\d)?\s*(?:{_UNIT_WORDS})\b", re.IGNORECASE)
_QUANTITY_CUE = re.compile(
    r"\b(?:how (?:often|long|many|much|far|hot|cold)|torque|pressure|precharge|interval|"
    r"limit|max(?:imum)?|min(?:imum)?|temperature|deadline|life|time|when|frequency|"
    r"tolerance|accuracy|size|length|weight|capacity|setting|value|psi|bar|nm)\b",
    re.IGNORECASE,
)
_LIST_ITEM = re.compile(r"^\s*(?:[-*•+]|\d+[.)]|\([a-z0-9]+\)|[a-z][.)])\s+")
_TABLE_RULE = re.compile(r"^\s*\|?\s*:?-{2,}")


@dataclass(frozen=True)
class Unit:
    """A quotable piece of one passage: `text` is what is shown (with its lead-in or table
    header), `core` the sentence, item or row itself (scored and highlighted)."""

    passage: int  # 1-based position of the passage in the hits
    position: int  # order within the passage
    text: str
    core: str
    section: str = ""  # the passage's last heading ("5. Procedure"), scored with the unit

    @property
    def scored(self) -> str:
        """What the unit is scored as: its section heading gives a bare step its topic
        ("3. Timescales: closure within 60 days")."""
        return f"{self.section}: {self.text}" if self.section and SCORE_SECTION else self.text


@dataclass(frozen=True)
class Quote:
    """A unit chosen for the answer, with its score."""

    unit: Unit
    score: float


def units_of(text: str, passage: int, section: str = "") -> list[Unit]:
    """The quotable units of one passage, in reading order (see the module docstring)."""
    units: list[Unit] = []
    lead_in = ""
    header: str | None = None
    paragraph: list[str] = []

    def add(shown: str, core: str) -> None:
        if shown.rstrip().endswith(":"):  # a lead-in alone answers nothing
            return
        units.append(Unit(passage, len(units), shown.strip(), core.strip(), section))

    items: list[str] = []  # the list under the current lead-in

    def close_list() -> None:
        # the lead-in with its items is a unit too: "in two stages:" + the two torques
        if lead_in and items:
            block = "\n".join([lead_in, *items])
            if len(block.split()) <= MAX_WORDS:
                add(block, block)
        items.clear()

    def flush() -> None:
        nonlocal lead_in
        close_list()
        if paragraph:
            sentences = split_sentences(" ".join(paragraph))
            for sentence in sentences:
                add(sentence, sentence)
            lead_in = sentences[-1] if sentences and sentences[-1].endswith(":") else ""
            paragraph.clear()

    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            flush()
            header = None
            continue
        if line.startswith("#"):  # headings are context (the source path), not answers
            flush()
            lead_in = ""
            continue
        if line.startswith("|"):
            flush()
            if _TABLE_RULE.match(line.strip("|").strip()):
                continue
            if header is None:
                header = line
                continue
            rule = "|" + "---|" * max(1, line.count("|") - 1)
            add(f"{header}\n{rule}\n{line}", line)
            continue
        header = None
        if _LIST_ITEM.match(line):
            if paragraph:
                flush()
            add(f"{lead_in}\n{line}" if lead_in else line, line)
            items.append(line)
            continue
        paragraph.append(line)
    flush()
    close_list()
    return units


def _idf(index: BM25Index, term: str) -> float:
    n = max(len(index), 1)
    df = index.doc_freq(term)
    return max(math.log((n - df + 0.5) / (df + 0.5) + 1.0), 0.0)


def lexical_scores(question: str, cores: Sequence[str], index: BM25Index | None) -> np.ndarray:
    """Share of the question's IDF mass (BM25's tokens: stems and whole codes) in each unit."""
    from rag_app.store.bm25 import tokenize

    terms = list(dict.fromkeys(tokenize(question)))
    if not terms or not cores:
        return np.zeros(len(cores))
    weights = {t: (_idf(index, t) if index is not None else 1.0) for t in terms}
    total = sum(weights.values()) or 1.0
    out = np.zeros(len(cores))
    for i, core in enumerate(cores):
        found = set(tokenize(core))
        out[i] = sum(w for t, w in weights.items() if t in found) / total
    return out


def asks_quantity(question: str) -> bool:
    """Whether the question asks for a number (a torque, a pressure, an interval, a limit)."""
    return bool(_QUANTITY_CUE.search(question))


def has_quantity(text: str) -> bool:
    """Whether the text states a number with a unit ("270 Nm", "500 FH", "30 days")."""
    return bool(_QUANTITY.search(text))


def features(
    question: str,
    units: Sequence[Unit],
    embedder: Embedder | None,
    index: BM25Index | None,
) -> np.ndarray:
    """Per unit: dense cosine, lexical IDF share, rank prior, and quantity match (a number
    with a unit, when the question asks for one), as columns in [0, 1]. Only the
    `DENSE_UNITS` best units by the other three are encoded; the rest get 0 dense."""
    texts = [u.scored for u in units]
    lexical = lexical_scores(question, texts, index)
    rank = np.array([1.0 / math.sqrt(u.passage) for u in units])
    wants = asks_quantity(question)
    quantity = np.array([float(wants and has_quantity(u.text)) for u in units])
    if embedder is None:
        dense = lexical
    else:
        cheap = np.column_stack([lexical, rank, quantity]) @ WEIGHTS[1:]
        best = np.sort(np.argsort(-cheap, kind="stable")[:DENSE_UNITS])
        q = embedder.encode_queries([question])[0]
        dense = np.zeros(len(units))
        dense[best] = np.clip(unit_vectors(embedder, [texts[i] for i in best]) @ q, 0.0, 1.0)
    return np.column_stack([dense, lexical, rank, quantity])


_VECTORS: OrderedDict[tuple[str, str], np.ndarray] = OrderedDict()
_VECTORS_LOCK = threading.Lock()
VECTOR_CACHE_SIZE = 50_000  # units; 384 floats each: about 75 MB when full


def unit_vectors(embedder: Embedder, texts: Sequence[str]) -> np.ndarray:
    """Passage-side vectors of `texts`, cached per embedder fingerprint: the same passages
    come back for related questions, and encoding is most of an extractive answer's time."""
    key = embedder.fingerprint
    with _VECTORS_LOCK:
        cached = {t: _VECTORS[(key, t)] for t in texts if (key, t) in _VECTORS}
    missing = list(dict.fromkeys(t for t in texts if t not in cached))
    if missing:
        vectors = embedder.encode_documents(missing, batch_size=64)
        with _VECTORS_LOCK:
            for text, vector in zip(missing, vectors, strict=True):
                cached[text] = vector
                _VECTORS[(key, text)] = vector
            while len(_VECTORS) > VECTOR_CACHE_SIZE:
                _VECTORS.popitem(last=False)
    return np.stack([cached[t] for t in texts]) if texts else np.zeros((0, embedder.dim))


def clear_cache() -> None:
    """Forget every cached unit vector (benchmarks time answers from cold)."""
    with _VECTORS_LOCK:
        _VECTORS.clear()


def score_units(
    question: str,
    units: Sequence[Unit],
    embedder: Embedder | None,
    index: BM25Index | None,
) -> np.ndarray:
    """Each unit's score (see the module docstring for its parts)."""
    if not units:
        return np.zeros(0)
    return features(question, units, embedder, index) @ WEIGHTS


def select(units: Sequence[Unit], scores: np.ndarray) -> list[Quote]:
    """The best unit and close runners-up within the length limits, in reading order."""
    if not len(units):
        return []
    order = np.argsort(-scores, kind="stable")
    best = float(scores[order[0]])
    chosen: list[Quote] = []
    words = 0
    for i in order[:12]:
        unit, score = units[int(i)], float(scores[int(i)])
        if chosen and score < KEEP_RATIO * best:
            break
        size = len(unit.text.split())
        if chosen and words + size > MAX_WORDS:
            continue
        if any(q.unit.core == unit.core for q in chosen):  # the same row in two passages
            continue
        chosen.append(Quote(unit, score))
        words += size
        if len(chosen) == MAX_UNITS:
            break
    return sorted(chosen, key=lambda q: (q.unit.passage, q.unit.position))


def section_of(hit: Hit) -> str:
    """The last heading of the passage's path ("5. Procedure"), or its title."""
    path = hit.chunk.heading_path or hit.chunk.title
    return path.replace("›", ">").split(">")[-1].strip()


def extract(
    question: str,
    hits: Sequence[Hit],
    embedder: Embedder | None,
    index: BM25Index | None,
    *,
    abstain_below: float = ABSTAIN_BELOW,
) -> tuple[list[Quote], float]:
    """The quotes that answer `question` from the top passages of `hits` (empty when the
    best unit scores below `abstain_below`), and the best unit's score."""
    units = [
        u
        for n, hit in enumerate(hits[:PASSAGES], 1)
        for u in units_of(hit.chunk.text, n, section_of(hit))
    ]
    scores = score_units(question, units, embedder, index)
    if not len(scores):
        return [], 0.0
    best = float(scores.max())
    if best < abstain_below:
        return [], best
    return select(units, scores), best
