"""Query classes built from a corpus's documents, and the searches bench_query_classes scores
on them (bench_query_classes.py: the shipped corpus, a BEIR dataset, the protocol's corpora).

A query is ``(text, {judged id: 1}, class, split)``; judged ids are chunk ids or document ids
(the corpus's granularity). Every search is the product's: BM25, the base model's Chroma
collection, and `rag_app.retrieve.HybridRetriever` for any fusion (50 candidates each).
"""

from __future__ import annotations

import hashlib
import random
import re
import statistics
from collections import defaultdict
from collections.abc import Callable, Iterable

CODE_IN_TITLE = re.compile(r"(?:\b(?:SB|AD|SN|MSN)\s)?\b[A-Z0-9]*\d?[A-Z0-9]*(?:[-/][A-Z0-9]+)+\b")
PHRASINGS = ("{c}", "what does {c} say", "{c} requirements", "tell me about {c}")
K = 10
CANDIDATES = 50

Query = tuple[str, dict[str, int], str, str]  # text, {judged id: 1}, class, split


def split_of(key: str) -> str:
    """dev or test by a hash of `key` (a judged document, a title, a word)."""
    return "dev" if int(hashlib.sha1(key.encode()).hexdigest(), 16) % 2 == 0 else "test"


def identifier_queries(
    chunks, doc: Callable = lambda chunk: chunk.doc_id, pattern: str | None = None
) -> list[tuple[str, str, str]]:
    """(query, owning doc, code) for every code that exactly one document's title holds
    (`doc`: a chunk's document).

    A code is a run with a digit and an inner dash or slash ("SB 72-61-009", "CP-04"), or a
    match of `pattern` where a corpus names its codes otherwise ("F401"); a match that
    starts at the dash ("-1" of "type-1") is a suffix, not a code."""
    codes = re.compile(pattern) if pattern else CODE_IN_TITLE
    owners: dict[str, set[str]] = defaultdict(set)
    for chunk in chunks:
        for code in codes.findall(chunk.title or ""):
            code = code.strip()
            if code[:1].isalnum() and any(ch.isdigit() for ch in code):
                owners[code].add(doc(chunk))
    out = []
    for code, docs in sorted(owners.items()):
        if len(docs) == 1:
            doc = next(iter(docs))
            out.extend((p.format(c=code), doc, code) for p in PHRASINGS)
    return out


def keyword_queries(
    chunks,
    n: int = 150,
    seed: int = 0,
    unit: Callable = lambda chunk: chunk.id,
    split: Callable[[str, set[str]], str | None] | None = None,
    names: tuple[str, str] = ("keyword: a title (BEIR)", "keyword: a rare word (BEIR)"),
) -> list[Query]:
    """Two keyword classes for a corpus of natural-language passages: a document's title
    typed alone (judged by every unit of that title), and a rare word typed alone (in 2-5
    units, judged by the units holding it). A unit is what the corpus is judged by (`unit`:
    a chunk's id, or its document's). `split(query, judged)` gives the query's half, or None
    to leave it out (default: a hash of the query); `n` of each class are drawn from the
    rest."""
    rng = random.Random(seed)
    split = split or (lambda text, _judged: split_of(text))
    by_title: dict[str, set[str]] = defaultdict(set)
    holders: dict[str, set[str]] = defaultdict(set)
    for chunk in chunks:
        if chunk.title:
            by_title[chunk.title].add(unit(chunk))
        for word in set(re.findall(r"[a-z]{7,}", chunk.text.lower())):
            holders[word].add(unit(chunk))
    out: list[Query] = []
    for name, sets, ok in (
        (names[0], by_title, lambda ids: len(ids) <= 20),
        (names[1], holders, lambda ids: 2 <= len(ids) <= 5),
    ):
        pool = [(t, split(t, ids)) for t, ids in sorted(sets.items()) if ok(ids)]
        pool = [(t, s) for t, s in pool if s is not None]
        for text, half in rng.sample(pool, min(n, len(pool))):
            out.append((text, dict.fromkeys(sets[text], 1), name, half))
    return out


def doc_ranking(hits) -> list[str]:
    seen: list[str] = []
    for hit in hits:
        if hit.chunk.doc_id not in seen:
            seen.append(hit.chunk.doc_id)
    return seen


def chunk_ranking(hits) -> list[str]:
    return [h.chunk.id for h in hits]


class Cached:
    """One retriever's candidates per query, computed once for every fusion tried."""

    def __init__(self, name: str, inner, cache: dict) -> None:
        self.name, self.inner, self.cache, self.notes = name, inner, cache, []

    def describe(self) -> str:
        return self.inner.describe()

    def retrieve(self, query: str, k: int = 5, filters=None):
        from rag_app.types import Hit

        key = (self.name, query)
        if key not in self.cache:
            self.cache[key] = self.inner.retrieve(query, CANDIDATES, filters)
        return [Hit(h.chunk, dict(h.scores), dict(h.ranks)) for h in self.cache[key][:k]]


class Searches:
    """BM25, dense (the base model's collection) and any fusion of them, over one corpus;
    each query's candidates are retrieved once."""

    def __init__(self, settings, corpus) -> None:
        from rag_app.retrieve import BM25Retriever, build_dense

        self.corpus = corpus
        cache: dict = {}
        self.bm25 = Cached("bm25", BM25Retriever(corpus), cache)
        self.bm25.corpus = corpus  # HybridRetriever reads the BM25 index through it
        self.dense = Cached("dense", build_dense(settings, corpus), cache)

    def hybrid(self, choice, rule, acronyms: str = "off", clipped: str = "off"):
        """`rag_app.retrieve.HybridRetriever` (fusion `choice`, exact-match `rule`, reading
        `acronyms`) over the cached candidates."""
        from rag_app.retrieve import BM25Retriever, HybridRetriever

        h = HybridRetriever(
            BM25Retriever(self.corpus),
            self.dense,
            fusion=choice,
            exact=rule,
            acronyms=acronyms,
            clipped=clipped,
        )
        h.bm25 = self.bm25  # type: ignore[assignment]
        return h


def score(
    systems: dict[str, object], queries: list[Query], granularity: str, log=None
) -> dict[str, dict[str, dict[str, dict[int, float]]]]:
    """scores[system][f"{class}|{split}"][metric][query index]: nDCG@10, hit@5, hit@1.

    Document-level judgements rank the documents of the top 50 chunks."""
    from rag_app.ir.metrics import hit_rate_at_k, ndcg_at_k

    ranking = doc_ranking if granularity == "doc" else chunk_ranking
    depth = CANDIDATES if granularity == "doc" else K
    scores: dict[str, dict[str, dict[str, dict[int, float]]]] = {}
    for name, system in systems.items():
        per: dict[str, dict[str, dict[int, float]]] = defaultdict(lambda: defaultdict(dict))
        for i, (text, judged, cls, split) in enumerate(queries):
            ranked = ranking(system.retrieve(text, depth))  # type: ignore[attr-defined]
            key = f"{cls}|{split}"
            per[key]["ndcg@10"][i] = ndcg_at_k(judged, ranked, K)
            per[key]["hit@5"][i] = hit_rate_at_k(judged, ranked, 5)
            per[key]["hit@1"][i] = hit_rate_at_k(judged, ranked, 1)
        scores[name] = per
        if log:
            log(f"scored {name}")
    return scores


def mean_of(values: dict[int, float]) -> float:
    return statistics.fmean(values.values()) if values else float("nan")


def classes_of(queries: Iterable[Query]) -> list[str]:
    return sorted({q[2] for q in queries})


ACRONYM_DEFINED = re.compile(r"((?:[A-Za-z][\w'-]*\s+){1,8})\(([A-Z][A-Za-z]{1,7})\)")
CLIP_MIN = 6  # a word of at least this many letters may be clipped ("accumulator" -> "acc")


def acronyms(chunks) -> dict[str, str]:
    """{long form (lower case): acronym} for every "long form (ACR)" in the corpus whose
    words' initials spell the acronym ("main landing gear (MLG)"); the acronym a long form
    is given most often wins."""
    seen: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for chunk in chunks:
        for before, acr in ACRONYM_DEFINED.findall(chunk.text):
            words = before.split()[-len(acr) :]
            if len(words) == len(acr) and all(
                w[0].lower() == a.lower() for w, a in zip(words, acr, strict=True)
            ):
                seen[" ".join(w.lower() for w in words)][acr] += 1
    return {long: max(accs, key=accs.__getitem__) for long, accs in seen.items()}


def clip_one(text: str, rng: random.Random) -> str | None:
    """`text` with one word of `CLIP_MIN`+ letters cut to its first three or four letters,
    as people type "acc" for accumulator or "cal" for calibration (None: no such word,
    or every cut is a stop word)."""
    from rag_app.ir.stopwords import ENGLISH

    words = list(re.finditer(r"[A-Za-z]+", text))
    clippable = [m for m in words if len(m.group()) >= CLIP_MIN]
    rng.shuffle(clippable)
    for m in clippable:
        cut = m.group()[: rng.choice((3, 4))]
        if cut.lower() not in ENGLISH:
            return text[: m.start()] + cut.lower() + text[m.end() :]
    return None


def jargon_queries(
    chunks,
    natural: list[Query],
    n: int = 150,
    seed: int = 0,
    unit: Callable = lambda chunk: chunk.id,
    split: Callable[[str, set[str]], str | None] | None = None,
) -> list[Query]:
    """Three jargon classes, judged like the queries they are made from:

    - **jargon: acronym for a title**: a title holding a long form the corpus defines an
      acronym for, typed with the acronym ("COPD", "MLG axle nut");
    - **jargon: clipped title**: a title (2+ words) with one long word clipped to three or
      four letters ("brake acc precharge");
    - **jargon: clipped question**: a natural question (`natural`) with one clipped word,
      on the same half as the question.

    `split(query, judged)` as in `keyword_queries`; `n` of each class at most."""
    rng = random.Random(seed)
    split = split or (lambda text, _judged: split_of(text))
    by_title: dict[str, set[str]] = defaultdict(set)
    for chunk in chunks:
        if chunk.title:
            by_title[chunk.title].add(unit(chunk))
    titles = [(t, ids) for t, ids in sorted(by_title.items()) if len(ids) <= 20]
    defined = acronyms(chunks)
    longest_first = sorted(defined, key=len, reverse=True)
    out: list[Query] = []

    def add(name: str, pool: list[tuple[str, set[str], str | None]]) -> None:
        pool = [p for p in pool if p[2] is not None]
        for text, ids, half in rng.sample(pool, min(n, len(pool))):
            out.append((text, dict.fromkeys(ids, 1), name, half))  # type: ignore[arg-type]

    abbreviated = []
    for title, ids in titles:
        low = title.lower()
        for long in longest_first:
            at = low.find(long)
            if at >= 0 and (at == 0 or not low[at - 1].isalnum()):
                end = at + len(long)
                if end == len(low) or not low[end].isalnum():
                    text = title[:at] + defined[long] + title[end:]
                    abbreviated.append((text, ids, split(text, ids)))
                    break
    add("jargon: acronym for a title", abbreviated)
    clipped = []
    for title, ids in titles:
        text = clip_one(title, rng) if len(title.split()) >= 2 else None
        if text:
            clipped.append((text, ids, split(text, ids)))
    add("jargon: clipped title", clipped)
    questions = []
    for text, judged, _cls, half in natural:
        cut = clip_one(text, rng)
        if cut:
            questions.append((cut, set(judged), half))
    add("jargon: clipped question", questions)
    return out
