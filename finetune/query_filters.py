"""Parsing and filtering of LLM-written queries: keep few, keep good.

A 135M-parameter generator returns junk often: preambles ("Here is a query:"), echoed
headings, strings of part numbers, copies of a chunk sentence, copies of the prompt's own
examples. Issue 10 measured that training on lightly filtered synthetic queries makes the
retriever *worse* on real queries, so the defaults here are strict:

1. `parse_query` turns raw output into one clean line (or None);
2. `check_query` drops what is empty, too short/long, not a question when one was asked,
   garbage (codes and digits without words, repeated tokens), a near copy of one of the
   chunk's sentences or of a prompt example;
3. `dedupe` drops duplicates and near-duplicates;
4. `round_trip` keeps a query only when the base retriever already ranks its source chunk in
   the top k (Promptagator / GPL's consistency filter), optionally BM25 too.

Every drop has a reason; `FilterReport` counts them for the synth report.

Example:
    >>> parse_query('Sure! Here is a query: "hydraulic pump overhaul interval"')
    'hydraulic pump overhaul interval'
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from rag_app.ir import stopwords

# Reasons a candidate is dropped (the report lists them in this order).
EMPTY = "empty"
TOO_SHORT = "too_short"
TOO_LONG = "too_long"
NOT_QUESTION = "not_question"
GARBAGE = "garbage"
CHATTER = "meta_or_chatter"
COPIED = "copied_from_chunk"
EXAMPLE = "copied_prompt_example"
DUPLICATE = "duplicate"
INCONSISTENT = "round_trip_failed"
PER_CHUNK_CAP = "over_per_chunk_cap"
REASONS = (
    EMPTY,
    TOO_SHORT,
    TOO_LONG,
    NOT_QUESTION,
    GARBAGE,
    CHATTER,
    COPIED,
    EXAMPLE,
    DUPLICATE,
    INCONSISTENT,
    PER_CHUNK_CAP,
)

_WORD = re.compile(r"[^\W_]+(?:['’-][^\W_]+)*")
_PREFIX = re.compile(
    r"""^(?:
        (?:sure|okay|ok|certainly|here(?:'s|\s+is|\s+are)?)[^:\n]{0,60}:\s*   # "Sure! Here is a query:"
      | (?:search\s+)?(?:query|question|keywords?|search|answer|q|a)\s*\d*\s*[:=\-]\s*
      | (?:\d+[.)]|[-*•#>]+)\s+                                      # list markers, headings
    )""",
    re.IGNORECASE | re.VERBOSE,
)
_QUESTION_WORDS = frozenset(
    [
        "what",
        "which",
        "who",
        "whom",
        "whose",
        "when",
        "where",
        "why",
        "how",
        "is",
        "are",
        "was",
        "were",
        "do",
        "does",
        "did",
        "can",
        "could",
        "should",
        "would",
        "will",
        "shall",
        "may",
        "might",
        "must",
        "has",
        "have",
        "had",
    ]
)
# The model talking about the task instead of asking: "What does this passage contain?",
# "I'm ready to assist", "Here are some questions".
_CHATTER = re.compile(
    r"\b(?:this|the|given|above|following)\s+(?:passage|text|document|article|paragraph|excerpt)\b"
    r"|\b(?:assist|assistant|next question|the following|as an ai|language model)\b"
    r"|^(?:i'm|i am|i can|i will|let me|sure|here are|here is)\b",
    re.IGNORECASE,
)
_SENTENCE_SPLIT = re.compile(r"(?<=[.!?;:])\s+|\n+")


def words(text: str) -> list[str]:
    """Lower-cased word tokens (letters and digits)."""
    return [w.lower() for w in _WORD.findall(text)]


def normalise(text: str) -> str:
    """A key for exact-duplicate detection: lower case, words only."""
    return " ".join(words(text))


def parse_query(raw: str | None) -> str | None:
    """The first plausible query line of an LLM reply, cleaned; None when there is none.

    Strips chat preambles, list markers, "Query:" labels, quotes, Markdown emphasis and
    trailing explanations in parentheses. Never raises on odd input.
    """
    if not raw or not isinstance(raw, str):
        return None
    for line in raw.replace("\r", "\n").split("\n"):
        text = line.strip()
        for _ in range(3):  # "1. Query: "x"" needs more than one pass
            stripped = _PREFIX.sub("", text, count=1).strip()
            if stripped == text:
                break
            text = stripped
        text = text.strip("*_`").strip()
        text = text.strip("\"'“”‘’«»").strip()
        text = re.sub(r"\s*\([^)]*\)\s*$", "", text)  # "... (keyword query)"
        text = re.sub(r"\s+", " ", text).strip(" -–—:;,")
        if text and words(text):
            return text
    return None


def _is_question(text: str) -> bool:
    tokens = words(text)
    return text.rstrip().endswith("?") or bool(tokens and tokens[0] in _QUESTION_WORDS)


def _garbage(text: str) -> bool:
    tokens = words(text)
    if not tokens:
        return True
    alpha = [t for t in tokens if len(t) > 1 and sum(c.isalpha() for c in t) * 2 >= len(t)]
    if len(alpha) < max(1, len(tokens) // 2):  # mostly digits or single letters
        return True
    if any(len(t) > 30 for t in tokens):  # run-together junk
        return True
    if any(  # serial-number-like runs: "cnc101133458965"
        len(t) > 10 and not re.search(r"[-'’]", t) and sum(c.isdigit() for c in t) * 2 > len(t)
        for t in tokens
    ):
        return True
    content = [t for t in tokens if t not in stopwords.REPETITION]
    repeated = sum(c - 1 for c in Counter(content).values())
    return len(content) >= 4 and repeated / len(content) > 0.34


def overlap(query: str, sentence: str) -> float:
    """Share of the query's words that appear in `sentence` (1.0: a pure copy)."""
    q = words(query)
    if not q:
        return 0.0
    s = set(words(sentence))
    return sum(1 for w in q if w in s) / len(q)


def longest_common_run(query: Sequence[str], text: Sequence[str]) -> int:
    """Length of the longest run of consecutive words shared by `query` and `text`."""
    if not query or not text:
        return 0
    positions: dict[str, list[int]] = {}
    for i, w in enumerate(text):
        positions.setdefault(w, []).append(i)
    best = 0
    for start in range(len(query)):
        for pos in positions.get(query[start], ()):
            n = 0
            while (
                start + n < len(query) and pos + n < len(text) and query[start + n] == text[pos + n]
            ):
                n += 1
            best = max(best, n)
    return best


def jaccard(a: Iterable[str], b: Iterable[str]) -> float:
    sa, sb = set(a), set(b)
    if not sa and not sb:
        return 1.0
    return len(sa & sb) / len(sa | sb)


def sentences(text: str) -> list[str]:
    """Sentences and lines of a chunk (headings count as sentences)."""
    return [s for s in (p.strip() for p in _SENTENCE_SPLIT.split(text)) if s]


def check_query(
    query: str | None,
    chunk_text: str,
    *,
    question: bool = False,
    min_words: int = 2,
    max_words: int = 24,
    max_copy_overlap: float = 0.85,
    examples: Sequence[str] = (),
    copy_check: bool = True,
) -> str | None:
    """The reason to drop `query`, or None to keep it.

    A query is a *copy* when at least `max_copy_overlap` of its words come from a single
    sentence of the chunk and it is nearly as long as that sentence's content (so a short
    keyword query built from a sentence's key terms survives, a pasted sentence does not),
    when it repeats a whole line (an echoed heading), or when 5+ consecutive words make up
    most of it. `copy_check=False` skips this (structural queries are built from headings).
    """
    if query is None or not query.strip():
        return EMPTY
    tokens = words(query)
    if len(tokens) < min_words:
        return TOO_SHORT
    if len(tokens) > max_words:
        return TOO_LONG
    if _garbage(query):
        return GARBAGE
    if _CHATTER.search(query):
        return CHATTER
    if question and not _is_question(query):
        return NOT_QUESTION
    key = normalise(query)
    for example in examples:
        ex = words(example)
        if key == " ".join(ex) or jaccard(tokens, ex) >= 0.6:
            return EXAMPLE
    if not copy_check:
        return None
    run = longest_common_run(tokens, words(chunk_text))
    if run >= 5 and run >= 0.7 * len(tokens):  # a pasted fragment of the chunk
        return COPIED
    for sentence in sentences(chunk_text):
        sent_tokens = words(sentence)
        while sent_tokens and sent_tokens[0].isdigit():  # "## 4. Wheel nut torque"
            sent_tokens = sent_tokens[1:]
        if not sent_tokens:
            continue
        if tokens == sent_tokens[: len(tokens)] and len(tokens) >= 0.6 * len(sent_tokens):
            # an echoed heading or sentence, however short
            return COPIED
        if (
            overlap(query, sentence) >= max_copy_overlap
            and len(set(tokens)) >= 0.6 * len(set(sent_tokens))
            and len(tokens) >= 3
        ):
            return COPIED
    return None


def dedupe(
    queries: Sequence[str], *, threshold: float = 0.9, seen: list[list[str]] | None = None
) -> list[bool]:
    """Keep-flags: False for a duplicate or near-duplicate (token Jaccard >= threshold)
    of an earlier query in `queries` (or in `seen`, which is extended)."""
    seen = [] if seen is None else seen
    keys: set[str] = {" ".join(s) for s in seen}
    flags = []
    for query in queries:
        tokens = words(query)
        key = " ".join(tokens)
        dup = key in keys or any(jaccard(tokens, s) >= threshold for s in seen)
        flags.append(not dup)
        if not dup:
            keys.add(key)
            seen.append(tokens)
    return flags


def source_ranks(
    query_vectors, passage_vectors, source_rows: Sequence[int], *, limit: int = 100
) -> list[int]:
    """1-based rank of each query's source passage by dot product (limit + 1 if worse).

    Vectors are unit-length numpy arrays (queries x dim, passages x dim).
    """
    import numpy as np

    scores = np.asarray(query_vectors) @ np.asarray(passage_vectors).T
    ranks = []
    for i, row in enumerate(source_rows):
        own = scores[i, row]
        better = int(np.sum(scores[i] > own))
        ranks.append(better + 1 if better < limit else limit + 1)
    return ranks


def source_margins(query_vectors, passage_vectors, source_rows: Sequence[int]) -> list[float]:
    """Score of each query's source passage minus the best other passage's score."""
    import numpy as np

    scores = np.asarray(query_vectors) @ np.asarray(passage_vectors).T
    out = []
    for i, row in enumerate(source_rows):
        others = np.delete(scores[i], row)
        out.append(float(scores[i, row] - (others.max() if others.size else -1.0)))
    return out


def bm25_ranks(index, queries: Sequence[str], source_ids: Sequence[str]) -> list[int]:
    """1-based rank of each query's source chunk under a `rag_app.store.bm25.BM25Index`."""
    import numpy as np

    ranks = []
    for query, cid in zip(queries, source_ids, strict=True):
        scores = index.scores(query)
        row = index.ids.index(cid) if cid in index.ids else None
        if row is None or scores[row] <= 0:
            ranks.append(len(index.ids) + 1)
        else:
            ranks.append(int(np.sum(scores > scores[row])) + 1)
    return ranks


@dataclass
class FilterReport:
    """How many candidates were generated, kept, and dropped for which reason."""

    generated: int = 0
    kept: int = 0
    dropped: Counter = field(default_factory=Counter)
    by_source: Counter = field(default_factory=Counter)  # kept per source (llm:keyword, ...)

    def drop(self, reason: str, n: int = 1) -> None:
        self.dropped[reason] += n

    def as_dict(self) -> dict:
        return {
            "generated": self.generated,
            "kept": self.kept,
            "dropped": {r: self.dropped[r] for r in REASONS if self.dropped.get(r)},
            "kept_by_source": dict(sorted(self.by_source.items())),
        }

    def summary(self) -> str:
        reasons = ", ".join(f"{r} {n}" for r, n in self.as_dict()["dropped"].items()) or "none"
        return f"generated {self.generated}, kept {self.kept}; dropped: {reasons}"
