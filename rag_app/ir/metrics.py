"""Information-retrieval metrics: Recall, Precision, MRR, nDCG, MAP and hit rate at k.

Pure Python plus numpy, with no dependency on the rest of the project, so the numbers can be
checked against a reference implementation (the tests compare with ``ranx`` to 1e-9) and
trusted independently of the retrieval code they judge.

Inputs
------
``qrels``: ``{query_id: {doc_id: relevance}}``, graded integer relevance, 0 = judged not
relevant. Negative grades (some TREC collections use them) are treated like 0.

``run``: ``{query_id: ranking}`` where a ranking is either

* a sequence of doc ids, best first (used as given), or
* a mapping ``{doc_id: score}``, sorted by score descending with ties broken by doc id
  *descending*. That is trec_eval's rule (``comp_sim_docno``), so a tied run scores the same here
  as under trec_eval, pytrec_eval or ir_measures. Sorting on a key rather than relying on the
  mapping's order keeps the result independent of how the retriever happened to build the dict.

A doc id repeated in a ranking keeps only its first (best) position: a retriever that returns
several chunks of one document must not be credited for finding the document twice, and the
document's rank is the rank of its best chunk.

Conventions (the same as trec_eval run with ``-c``)
-------------------------------------------------
* A doc is relevant for the binary metrics (recall, precision, MRR, MAP, hit rate) when its grade
  is ``>= relevance_threshold`` (default 1).
* nDCG uses the *linear* gain ``rel`` (Järvelin & Kekäläinen), as trec_eval's ``ndcg_cut`` does,
  not Burges' ``2**rel - 1``: with the 0-3 grades of typical qrels the exponential form lets one
  highly relevant doc swamp everything else, and linear gain is what published BEIR/MTEB numbers
  use. Gains come from every positive grade, whatever ``relevance_threshold`` is (trec_eval's rule;
  ``relevance_threshold`` only decides which queries are evaluated and the binary metrics). The
  ideal DCG ranks the query's own qrels by grade, so nDCG is 1.0 exactly when the top k are the
  k best-graded judged docs.
* Queries in ``qrels`` with no relevant doc are skipped: every metric would be 0 (or undefined)
  whatever the system did, so they would only dilute the mean. They are listed in
  ``EvalResult.skipped_queries``.
* Queries in ``qrels`` (with a relevant doc) but absent from ``run`` score 0 on every metric and
  count in the mean: a system that silently drops a query must not look better for it (trec_eval
  ``-c``). They are listed in ``EvalResult.missing_queries``.
* Queries in ``run`` but not in ``qrels`` are ignored.
* Precision@k divides by k even when fewer than k docs were retrieved (trec_eval ``P_k``).
* MAP is AP over the retrieved list (or its top k for ``map@k``) divided by the number of
  relevant docs in the qrels, not by the number retrieved (trec_eval ``map``/``map_cut``), so
  relevant docs that were never retrieved count as precision 0.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

Qrels = Mapping[str, Mapping[str, int]]
Ranking = Sequence[str] | Mapping[str, float]
Run = Mapping[str, Ranking]

DEFAULT_METRICS: tuple[str, ...] = (
    "ndcg@10",
    "recall@10",
    "mrr@10",
    "map",
    "precision@10",
    "hit_rate@10",
)

# family -> short description, for error messages and docs. ``k`` is optional for every family:
# without it the whole retrieved list is used.
KNOWN_METRICS: dict[str, str] = {
    "ndcg": "ndcg@k: normalised DCG of the top k, linear gain",
    "recall": "recall@k: share of the relevant docs found in the top k",
    "precision": "precision@k: share of the top k that is relevant (divides by k)",
    "mrr": "mrr@k: 1/rank of the first relevant doc within the top k, else 0",
    "map": "map or map@k: average precision, divided by the number of relevant docs",
    "hit_rate": "hit_rate@k: 1 if any relevant doc is in the top k (trec_eval success@k)",
}

_ALIASES = {
    "p": "precision",
    "success": "hit_rate",
    "hitrate": "hit_rate",
    "hit": "hit_rate",
    "recip_rank": "mrr",
    "ap": "map",
}

_METRIC_RE = re.compile(r"^\s*([a-z_]+)\s*(?:@\s*(\d+))?\s*$")


@dataclass(frozen=True)
class MetricSpec:
    """A parsed metric name: ``family`` is a key of ``KNOWN_METRICS``; ``k`` None = whole list."""

    family: str
    k: int | None = None

    @property
    def name(self) -> str:
        """Canonical name, e.g. ``ndcg@10`` or ``map``."""
        return self.family if self.k is None else f"{self.family}@{self.k}"


def parse_metric(name: str) -> MetricSpec:
    """Parse ``"ndcg@10"``, ``"recall@100"``, ``"map"``, ``"map@100"``, ``"P@5"`` ...

    Case-insensitive; ``p``/``success``/``recip_rank`` are accepted as aliases of
    precision/hit_rate/mrr. Raises ValueError naming the known metrics otherwise.
    """
    if not isinstance(name, str):
        raise ValueError(f"metric name must be a string, got {name!r}")
    match = _METRIC_RE.match(name.lower())
    family = match.group(1) if match else None
    if family is not None:
        family = _ALIASES.get(family, family)
    if match is None or family not in KNOWN_METRICS:
        known = "; ".join(KNOWN_METRICS.values())
        raise ValueError(f"unknown metric {name!r}; known metrics: {known}")
    k = int(match.group(2)) if match.group(2) is not None else None
    if k is not None and k < 1:
        raise ValueError(f"metric {name!r}: k must be >= 1")
    return MetricSpec(family, k)


def ranked_list(ranking: Ranking) -> list[str]:
    """Doc ids best first, duplicates dropped (first occurrence kept).

    A mapping ``{doc_id: score}`` is sorted by score descending, ties by doc id descending
    (trec_eval's order); a sequence is taken as already ranked.
    """
    if isinstance(ranking, Mapping):
        # Two stable sorts: first the tie-breaker (doc id descending), then the score.
        by_id = sorted(ranking.items(), key=lambda item: item[0], reverse=True)
        ordered: Iterable[str] = (
            doc for doc, _ in sorted(by_id, key=lambda item: float(item[1]), reverse=True)
        )
    elif isinstance(ranking, str):
        raise TypeError("a ranking must be a sequence of doc ids or a {doc_id: score} mapping")
    else:
        ordered = ranking
    seen: set[str] = set()
    out: list[str] = []
    for doc in ordered:
        if doc not in seen:
            seen.add(doc)
            out.append(doc)
    return out


def _cut(ranking: Ranking, k: int | None) -> list[str]:
    docs = ranked_list(ranking)
    if k is None:
        return docs
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    return docs[:k]


def _relevant(qrel: Mapping[str, int], relevance_threshold: int) -> set[str]:
    return {doc for doc, rel in qrel.items() if rel >= relevance_threshold}


def recall_at_k(
    qrel: Mapping[str, int],
    ranking: Ranking,
    k: int | None = None,
    relevance_threshold: int = 1,
) -> float:
    """Relevant docs in the top k / all relevant docs of the query (0.0 if it has none)."""
    relevant = _relevant(qrel, relevance_threshold)
    if not relevant:
        return 0.0
    return sum(doc in relevant for doc in _cut(ranking, k)) / len(relevant)


def precision_at_k(
    qrel: Mapping[str, int],
    ranking: Ranking,
    k: int | None = None,
    relevance_threshold: int = 1,
) -> float:
    """Relevant docs in the top k / k.

    Divides by k even when fewer than k docs were retrieved (trec_eval ``P_k``): a retriever
    that returns 3 docs for ``precision@10`` is not rewarded for abstaining. Without k, divides
    by the number of docs retrieved (0.0 for an empty ranking).
    """
    relevant = _relevant(qrel, relevance_threshold)
    docs = _cut(ranking, k)
    denominator = k if k is not None else len(docs)
    if denominator == 0:
        return 0.0
    return sum(doc in relevant for doc in docs) / denominator


def mrr_at_k(
    qrel: Mapping[str, int],
    ranking: Ranking,
    k: int | None = None,
    relevance_threshold: int = 1,
) -> float:
    """Reciprocal rank (1-based) of the first relevant doc within the top k; 0.0 if none."""
    relevant = _relevant(qrel, relevance_threshold)
    for rank, doc in enumerate(_cut(ranking, k), start=1):
        if doc in relevant:
            return 1.0 / rank
    return 0.0


def hit_rate_at_k(
    qrel: Mapping[str, int],
    ranking: Ranking,
    k: int | None = None,
    relevance_threshold: int = 1,
) -> float:
    """1.0 if any relevant doc is in the top k, else 0.0 (trec_eval ``success_k``)."""
    relevant = _relevant(qrel, relevance_threshold)
    return float(any(doc in relevant for doc in _cut(ranking, k)))


def _discounts(n: int) -> np.ndarray:
    # position i (1-based) is discounted by log2(i + 1)
    return np.log2(np.arange(2, n + 2, dtype=np.float64))


def ndcg_at_k(
    qrel: Mapping[str, int],
    ranking: Ranking,
    k: int | None = None,
    relevance_threshold: int = 1,
) -> float:
    """nDCG of the top k with linear gain: sum(rel_i / log2(i + 1)) / ideal.

    Gain is the doc's grade (0 for unjudged or non-positive grades), whatever
    ``relevance_threshold`` is; the threshold is accepted for a uniform signature and only
    matters in that a query with no doc at or above it is skipped by ``evaluate``. The ideal DCG
    sorts the query's positive grades descending and cuts at k (uses all of them when k is None,
    as trec_eval's ``ndcg`` does). Returns 0.0 when the ideal DCG is 0.
    """
    del relevance_threshold  # gains use every positive grade, as trec_eval does
    docs = _cut(ranking, k)
    gains = np.array([max(qrel.get(doc, 0), 0) for doc in docs], dtype=np.float64)
    ideal = sorted((rel for rel in qrel.values() if rel > 0), reverse=True)
    if k is not None:
        ideal = ideal[:k]
    ideal_gains = np.array(ideal, dtype=np.float64)
    idcg = float(np.sum(ideal_gains / _discounts(len(ideal_gains))))
    if idcg == 0.0:
        return 0.0
    dcg = float(np.sum(gains / _discounts(len(gains))))
    return dcg / idcg


def average_precision(
    qrel: Mapping[str, int],
    ranking: Ranking,
    k: int | None = None,
    relevance_threshold: int = 1,
) -> float:
    """AP over the retrieved list (its top k if k is given): the sum of precision@rank at each
    relevant doc retrieved, divided by the number of relevant docs in the qrels (trec_eval
    ``map``; ``map_cut_k`` for k). 0.0 if the query has no relevant doc."""
    relevant = _relevant(qrel, relevance_threshold)
    if not relevant:
        return 0.0
    hits = 0
    total = 0.0
    for rank, doc in enumerate(_cut(ranking, k), start=1):
        if doc in relevant:
            hits += 1
            total += hits / rank
    return total / len(relevant)


_FUNCTIONS = {
    "ndcg": ndcg_at_k,
    "recall": recall_at_k,
    "precision": precision_at_k,
    "mrr": mrr_at_k,
    "map": average_precision,
    "hit_rate": hit_rate_at_k,
}


def score_query(
    qrel: Mapping[str, int],
    ranking: Ranking,
    metric: str | MetricSpec,
    relevance_threshold: int = 1,
) -> float:
    """One metric (by name, e.g. ``"ndcg@10"``) for one query."""
    spec = metric if isinstance(metric, MetricSpec) else parse_metric(metric)
    return _FUNCTIONS[spec.family](qrel, ranking, spec.k, relevance_threshold)


@dataclass
class EvalResult:
    """Scores of one run.

    ``mean[metric]`` is the mean over the ``n_queries`` evaluated queries (qrels queries with a
    relevant doc, including ``missing_queries``, which score 0). ``per_query[qid][metric]`` keeps
    every evaluated query, for paired significance tests (see ``rag_app.ir.stats``).
    """

    mean: dict[str, float]
    per_query: dict[str, dict[str, float]]
    n_queries: int
    metrics: tuple[str, ...] = ()
    relevance_threshold: int = 1
    skipped_queries: list[str] = field(default_factory=list)
    missing_queries: list[str] = field(default_factory=list)

    def metric(self, name: str) -> dict[str, float]:
        """Per-query scores of one metric, ``{qid: score}`` (input to ``rag_app.ir.stats.compare``)."""
        canonical = parse_metric(name).name
        if canonical not in self.mean:
            raise KeyError(f"metric {canonical!r} was not computed; have {list(self.mean)}")
        return {qid: scores[canonical] for qid, scores in self.per_query.items()}

    def to_dict(self) -> dict:
        """JSON-friendly summary (without per-query scores)."""
        return {
            "mean": dict(self.mean),
            "n_queries": self.n_queries,
            "metrics": list(self.metrics),
            "relevance_threshold": self.relevance_threshold,
            "n_skipped_queries": len(self.skipped_queries),
            "n_missing_queries": len(self.missing_queries),
        }


def evaluate(
    qrels: Qrels,
    run: Run,
    metrics: str | Sequence[str] = DEFAULT_METRICS,
    relevance_threshold: int = 1,
) -> EvalResult:
    """Score ``run`` against ``qrels`` on ``metrics`` (names such as ``"ndcg@10"``, ``"map"``).

    See the module docstring for the conventions: queries without a relevant doc are skipped
    (``skipped_queries``), queries missing from the run score 0 (``missing_queries``), queries
    only in the run are ignored. Metric keys in the result are canonical (``"P@5"`` ->
    ``"precision@5"``). Raises ValueError for an unknown metric or when no query can be
    evaluated.
    """
    if isinstance(metrics, str):
        metrics = (metrics,)
    specs: list[MetricSpec] = []
    for name in metrics:
        spec = parse_metric(name)
        if spec not in specs:
            specs.append(spec)
    if not specs:
        raise ValueError("no metrics requested")
    names = tuple(spec.name for spec in specs)

    per_query: dict[str, dict[str, float]] = {}
    skipped: list[str] = []
    missing: list[str] = []
    for qid, qrel in qrels.items():
        if not any(rel >= relevance_threshold for rel in qrel.values()):
            skipped.append(qid)
            continue
        if qid not in run:
            missing.append(qid)
            per_query[qid] = dict.fromkeys(names, 0.0)
            continue
        docs = ranked_list(run[qid])  # sort/dedupe once, reuse for every metric
        per_query[qid] = {
            spec.name: _FUNCTIONS[spec.family](qrel, docs, spec.k, relevance_threshold)
            for spec in specs
        }
    if not per_query:
        raise ValueError(
            f"no query to evaluate: {len(qrels)} queries in qrels, none with a doc of relevance "
            f">= {relevance_threshold}"
        )
    mean = {
        name: math.fsum(scores[name] for scores in per_query.values()) / len(per_query)
        for name in names
    }
    return EvalResult(
        mean=mean,
        per_query=per_query,
        n_queries=len(per_query),
        metrics=names,
        relevance_threshold=relevance_threshold,
        skipped_queries=skipped,
        missing_queries=missing,
    )


__all__ = [
    "DEFAULT_METRICS",
    "KNOWN_METRICS",
    "EvalResult",
    "MetricSpec",
    "average_precision",
    "evaluate",
    "hit_rate_at_k",
    "mrr_at_k",
    "ndcg_at_k",
    "parse_metric",
    "precision_at_k",
    "ranked_list",
    "recall_at_k",
    "score_query",
]
