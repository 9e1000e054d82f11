"""Answer-level grounding scores that run offline, without an LLM judge.

Why a proxy
-----------
The honest way to check that an answer sentence is supported by a passage is an NLI /
entailment model. None can be had offline here: no PyPI package ships NLI or cross-encoder
weights (see ``../shared/MODELS.md``), and a cross-encoder built on the bundled MiniLM has a
random head until trained. ``nli_model_available()`` checks for a local one anyway (a
sentence-transformers ``CrossEncoder`` directory given as ``RAG_APP_NLI_MODEL``), but the default
scorer is a transparent proxy whose every rule is listed here and in the report.

The proxy, per answer sentence and per context passage
-----------------------------------------------------
1. **Semantic similarity** ``sim``: the highest cosine similarity between the sentence and any
   sentence of the passage, both embedded with the bundled all-MiniLM-L6-v2 (unit vectors).
2. **Lexical overlap** ``overlap``: the share of the sentence's content words (lower-cased,
   stop words removed, light suffix stemming) that occur anywhere in the passage.
3. **Numbers**: every number in the sentence (digits, or the words one..twenty) must occur in
   the passage. A sentence that invents "six months" is not supported by "nine months".
4. **Negation**: the sentence and its most similar passage sentence must agree on negation
   (both or neither contain not/no/never/without/...). Catches "X is not caused by Y".

A passage *supports* the sentence when ``sim >= SIM_MIN`` and ``overlap >= OVERLAP_MIN`` and
checks 3 and 4 pass, or, for close paraphrases, ``sim >= SIM_PARAPHRASE`` and
``overlap >= OVERLAP_PARAPHRASE`` with the same checks. The thresholds were set by looking at
MiniLM scores of hand-written supported / unsupported sentence pairs (tests/test_grounding.py):
supported paraphrases score sim 0.6-0.95 with overlap >= 0.65; on-topic but unsupported
claims reach sim 0.6-0.8 (MiniLM measures topicality, not truth), which is why overlap and the
number / negation checks are required as well.

Sentences with fewer than ``MIN_CONTENT_WORDS`` content words, and abstentions ("I don't
know", "the context does not say"), are not claims and are not scored.

Scores of one answer
--------------------
* ``faithfulness``: supported claim sentences / claim sentences (None without claims).
* ``citation_precision``: of all (sentence, cited passage) pairs, the share where that passage
  supports the sentence on its own. Citations are ``[n]`` markers, 1-based into the context.
* ``citation_recall``: the share of claim sentences that cite at least one passage and are
  supported by one of the passages they cite.
* ``answer_relevance``: cosine similarity of question and answer embeddings.
* ``correctness_f1`` / ``correctness_sim``: SQuAD-style token F1 and embedding cosine against a
  reference answer, when the dataset has one.

Known limits (the report repeats them)
--------------------------------------
* It is a *proxy*: high word overlap with a topical passage passes even when the sentence
  recombines facts wrongly (swapped subjects, wrong causal direction, altered quantities
  written in words beyond twenty). Paraphrases with few shared words can fail.
* Negation is a word list, not a parse: "rarely" or "fails to" are not seen as negations.
* Thresholds are calibrated on MiniLM and short English sentences; another embedder or language
  needs new thresholds.
* Scores are comparable between retriever configurations run through the same scorer, which
  is how the harness uses them; they are not absolute truth rates.
"""

from __future__ import annotations

import math
import os
import re
import statistics
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

# The text rules live in eval.claim_text; re-exported here, where callers import them.
from eval.claim_text import (  # noqa: F401 (re-exports)
    ABSTENTION_PATTERNS,
    CITATION_RE,
    NEGATIONS,
    NUMBER_WORDS,
    STOP_WORDS,
    citations_in,
    content_words,
    has_negation,
    is_abstention,
    numbers_in,
    split_sentences,
    strip_citations,
    token_f1,
    words,
)

if TYPE_CHECKING:
    from rag_app.embedder import Embedder
    from rag_app.llm.base import LLM

SIM_MIN = 0.5
OVERLAP_MIN = 0.6
SIM_PARAPHRASE = 0.8
OVERLAP_PARAPHRASE = 0.34
MIN_CONTENT_WORDS = 2

THRESHOLDS = {
    "sim_min": SIM_MIN,
    "overlap_min": OVERLAP_MIN,
    "sim_paraphrase": SIM_PARAPHRASE,
    "overlap_paraphrase": OVERLAP_PARAPHRASE,
    "min_content_words": MIN_CONTENT_WORDS,
}

PROXY_LIMITS = (
    "Faithfulness and citation scores come from a transparent proxy, not an entailment model "
    "(none is available offline): a passage supports an answer sentence when MiniLM cosine "
    f"similarity to one of its sentences is >= {SIM_MIN} and >= {OVERLAP_MIN:.0%} of the "
    "sentence's content words occur in it (or similarity >= "
    f"{SIM_PARAPHRASE} with overlap >= {OVERLAP_PARAPHRASE:.0%}), every number in the sentence "
    "occurs in the passage, and negation agrees. Limits: it measures topical and lexical "
    "support, not logical entailment, so recombined or subtly altered facts that reuse the "
    "passage's words can pass, and paraphrases with few shared words can fail; negation is a "
    "word list; thresholds are calibrated for MiniLM on English. Use the scores to compare "
    "retriever configurations scored the same way, not as absolute truth rates."
)


# --- scoring ---------------------------------------------------------------------------------
@dataclass
class PassageSupport:
    """How one passage relates to one answer sentence."""

    passage: int  # 0-based index into the context
    sim: float
    overlap: float
    numbers_ok: bool
    negation_ok: bool
    supported: bool


@dataclass
class SentenceScore:
    sentence: str
    is_claim: bool
    cited: list[int]  # 1-based, as written in the answer
    best_passage: int | None = None  # 0-based
    best_sim: float = 0.0
    best_overlap: float = 0.0
    supported: bool = False
    supported_by: list[int] = field(default_factory=list)  # 0-based passages
    reason: str = ""


@dataclass
class AnswerScores:
    faithfulness: float | None
    citation_precision: float | None
    citation_recall: float | None
    answer_relevance: float | None
    correctness_f1: float | None = None
    correctness_sim: float | None = None
    n_claims: int = 0
    abstained: bool = False
    sentences: list[SentenceScore] = field(default_factory=list)
    judge: dict[str, Any] | None = None

    METRICS = (
        "faithfulness",
        "citation_precision",
        "citation_recall",
        "answer_relevance",
        "correctness_f1",
        "correctness_sim",
    )

    def metrics(self) -> dict[str, float | None]:
        out = {name: getattr(self, name) for name in self.METRICS}
        if self.judge is not None:
            out["judge_faithfulness"] = self.judge.get("mean")
        return out

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def nli_model_available() -> Path | None:
    """A local NLI cross-encoder directory named by ``RAG_APP_NLI_MODEL``, if it exists.

    Nothing on PyPI ships one (MODELS.md), so this is None unless a user provides one; the
    harness then still uses the proxy and records that no NLI model was found.
    """
    spec = os.environ.get("RAG_APP_NLI_MODEL")
    if spec and (Path(spec) / "config.json").is_file():
        return Path(spec)
    return None


class GroundingScorer:
    """Scores answers against their retrieved context with the documented proxy.

    ``embedder`` is a ``rag_app.embedder.Embedder`` (default: the bundled MiniLM). Sentence
    embeddings are cached by text, since the same passages come back for many queries and
    configurations.
    """

    def __init__(self, embedder: Embedder | None = None, *, cache_size: int = 50_000) -> None:
        if embedder is None:
            from rag_app.embedder import Embedder

            embedder = Embedder.load("all-MiniLM-L6-v2")
        self.embedder = embedder
        self._cache: dict[str, np.ndarray] = {}
        self._cache_size = cache_size

    # embeddings -------------------------------------------------------------------------
    def embed(self, texts: Sequence[str]) -> np.ndarray:
        missing = [t for t in dict.fromkeys(texts) if t not in self._cache]
        if missing:
            if len(self._cache) + len(missing) > self._cache_size:
                self._cache.clear()
            vectors = self.embedder.encode_documents(missing, batch_size=64)
            for text, vec in zip(missing, vectors, strict=True):
                self._cache[text] = vec
        if not texts:
            return np.zeros((0, self.embedder.dim), dtype=np.float32)
        return np.stack([self._cache[t] for t in texts])

    def similarity(self, a: str, b: str) -> float:
        va, vb = self.embed([a, b])
        return float(np.dot(va, vb))

    # support ----------------------------------------------------------------------------
    def passage_support(self, sentence: str, passages: Sequence[str]) -> list[PassageSupport]:
        """How each passage supports ``sentence`` (citation markers ignored)."""
        claim = strip_citations(sentence)
        claim_words = content_words(claim)
        claim_numbers = numbers_in(claim)
        claim_negated = has_negation(claim)
        passage_sents = [split_sentences(p) or [p] for p in passages]
        flat = [s for sents in passage_sents for s in sents]
        if not flat:
            return []
        vectors = self.embed([claim, *flat])
        sims = vectors[1:] @ vectors[0]
        out: list[PassageSupport] = []
        start = 0
        for index, (passage, sents) in enumerate(zip(passages, passage_sents, strict=True)):
            local = sims[start : start + len(sents)]
            start += len(sents)
            best = int(np.argmax(local))
            sim = float(local[best])
            passage_words = content_words(passage)
            overlap = len(claim_words & passage_words) / len(claim_words) if claim_words else 0.0
            numbers_ok = claim_numbers <= numbers_in(passage)
            negation_ok = has_negation(sents[best]) == claim_negated
            supported = (
                numbers_ok
                and negation_ok
                and (
                    (sim >= SIM_MIN and overlap >= OVERLAP_MIN)
                    or (sim >= SIM_PARAPHRASE and overlap >= OVERLAP_PARAPHRASE)
                )
            )
            out.append(PassageSupport(index, sim, overlap, numbers_ok, negation_ok, supported))
        return out

    def score(
        self,
        question: str,
        answer: str,
        passages: Sequence[str],
        reference: str | None = None,
    ) -> AnswerScores:
        """Score one answer given the passages it was generated from (in citation order)."""
        sentences: list[SentenceScore] = []
        abstained = is_abstention(answer)
        for raw in split_sentences(answer):
            text = strip_citations(raw)
            cited = citations_in(raw)
            claim = len(content_words(text)) >= MIN_CONTENT_WORDS and not is_abstention(text)
            item = SentenceScore(sentence=raw, is_claim=claim, cited=cited)
            if claim and passages:
                support = self.passage_support(text, passages)
                best = max(support, key=lambda s: (s.supported, s.sim + s.overlap))
                item.best_passage = best.passage
                item.best_sim = round(best.sim, 4)
                item.best_overlap = round(best.overlap, 4)
                item.supported_by = [s.passage for s in support if s.supported]
                item.supported = bool(item.supported_by)
                item.reason = _reason(best)
            elif claim:
                item.reason = "no context"
            sentences.append(item)

        claims = [s for s in sentences if s.is_claim]
        faithfulness = sum(s.supported for s in claims) / len(claims) if claims else None

        pairs = 0
        good_pairs = 0
        recalled = 0
        for s in claims:
            valid = [n for n in s.cited if 1 <= n <= len(passages)]
            pairs += len(s.cited)  # a citation to a passage that does not exist is wrong
            good_pairs += sum((n - 1) in s.supported_by for n in valid)
            recalled += any((n - 1) in s.supported_by for n in valid)
        citation_precision = good_pairs / pairs if pairs else None
        citation_recall = recalled / len(claims) if claims else None

        clean_answer = strip_citations(answer)
        relevance = self.similarity(question, clean_answer) if clean_answer.strip() else 0.0
        correctness_f1 = correctness_sim = None
        if reference:
            correctness_f1 = token_f1(clean_answer, reference)
            correctness_sim = self.similarity(clean_answer, reference) if clean_answer else 0.0
        return AnswerScores(
            faithfulness=faithfulness,
            citation_precision=citation_precision,
            citation_recall=citation_recall,
            answer_relevance=relevance,
            correctness_f1=correctness_f1,
            correctness_sim=correctness_sim,
            n_claims=len(claims),
            abstained=abstained,
            sentences=sentences,
        )


def _reason(best: PassageSupport) -> str:
    if best.supported:
        return f"supported by passage {best.passage + 1}"
    if not best.numbers_ok:
        return "number not in context"
    if not best.negation_ok:
        return "negation differs from context"
    return f"weak support (sim {best.sim:.2f}, overlap {best.overlap:.0%})"


# --- optional LLM judge ---------------------------------------------------------------------
JUDGE_PROMPT = """You check whether an answer is supported by the context.
Context:
{context}

Question: {question}
Answer: {answer}

On a scale from 0 to 10, how much of the answer is directly supported by the context?
Reply with the number only."""


def _parse_judge(text: str) -> float | None:
    match = re.search(r"\b(10|[0-9])(?:\.\d+)?\b", text or "")
    if match is None:
        return None
    return float(match.group(0)) / 10.0


def llm_judge(
    question: str,
    answer: str,
    passages: Sequence[str],
    llm: LLM,
    *,
    runs: int = 3,
    temperature: float = 0.7,
    generate_kwargs: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Ask ``llm`` (a ``rag_app.llm.base.LLM``) ``runs`` times for a 0-10 support score.

    Judge scores drift between runs, so the result is the mean and the standard deviation of
    the parsed scores (0-1), with the raw replies and how many could not be parsed. Small
    local models are poor judges; this is optional and never replaces the offline proxy.
    """
    context = "\n\n".join(f"[{i}] {p}" for i, p in enumerate(passages, start=1))
    prompt = JUDGE_PROMPT.format(context=context, question=question, answer=answer)
    messages = [{"role": "user", "content": prompt}]
    scores: list[float] = []
    replies: list[str] = []
    kwargs = dict(generate_kwargs or {})
    for _ in range(max(1, runs)):
        try:
            kwargs.setdefault("max_new_tokens", 8)
            reply = _generate(llm, messages, temperature=temperature, **kwargs)
        except Exception as exc:  # a judge failure must not abort the eval
            reply = f"<error: {exc}>"
        replies.append(reply)
        value = _parse_judge(reply)
        if value is not None:
            scores.append(value)
    return {
        "mean": statistics.fmean(scores) if scores else None,
        "std": statistics.stdev(scores) if len(scores) > 1 else (0.0 if scores else None),
        "n": len(scores),
        "unparsed": len(replies) - len(scores),
        "replies": replies,
    }


def _generate(llm: LLM, messages: list[dict[str, str]], **kwargs: Any) -> str:
    generate: Callable[..., str] = llm.generate
    try:
        return generate(messages, **kwargs)
    except TypeError:  # a backend without a temperature / max_new_tokens keyword
        return generate(messages)


def mean_or_none(values: Sequence[float | None]) -> float | None:
    """Mean of the values that are not None/NaN (None if there are none)."""
    kept = [v for v in values if v is not None and not math.isnan(v)]
    return math.fsum(kept) / len(kept) if kept else None


__all__ = [
    "PROXY_LIMITS",
    "THRESHOLDS",
    "AnswerScores",
    "GroundingScorer",
    "SentenceScore",
    "citations_in",
    "content_words",
    "llm_judge",
    "mean_or_none",
    "nli_model_available",
    "split_sentences",
    "token_f1",
]
