"""IR metrics: hand-computed values, conventions, and agreement with ranx on random runs."""

from __future__ import annotations

import math
import random

import pytest

from rag_app.ir import metrics
from rag_app.ir.metrics import evaluate, parse_metric, ranked_list

# ranx (numba) warns about a hash cast inside its own code
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

QREL = {"d1": 3, "d2": 1, "d3": 0, "d4": 2}  # three relevant docs, d3 judged not relevant
RANKING = ["d5", "d1", "d3", "d2", "d6"]  # relevant at ranks 2 and 4


def test_hand_computed_values():
    assert metrics.recall_at_k(QREL, RANKING, 3) == pytest.approx(1 / 3)
    assert metrics.recall_at_k(QREL, RANKING, 5) == pytest.approx(2 / 3)
    assert metrics.precision_at_k(QREL, RANKING, 2) == pytest.approx(1 / 2)
    # divides by k even when fewer docs were retrieved
    assert metrics.precision_at_k(QREL, RANKING, 10) == pytest.approx(2 / 10)
    assert metrics.mrr_at_k(QREL, RANKING, 10) == pytest.approx(1 / 2)
    assert metrics.mrr_at_k(QREL, RANKING, 1) == 0.0
    assert metrics.hit_rate_at_k(QREL, RANKING, 1) == 0.0
    assert metrics.hit_rate_at_k(QREL, RANKING, 2) == 1.0
    # AP: (1/2 + 2/4) / 3 relevant docs in the qrels
    assert metrics.average_precision(QREL, RANKING) == pytest.approx((1 / 2 + 2 / 4) / 3)
    # nDCG@5, linear gain: DCG = 3/log2(3) + 1/log2(5); IDCG = 3/1 + 2/log2(3) + 1/log2(4)
    dcg = 3 / math.log2(3) + 1 / math.log2(5)
    idcg = 3 + 2 / math.log2(3) + 1 / 2
    assert metrics.ndcg_at_k(QREL, RANKING, 5) == pytest.approx(dcg / idcg)
    # ideal ranking scores 1.0; ideal cut at k
    assert metrics.ndcg_at_k(QREL, ["d1", "d4", "d2"], 3) == pytest.approx(1.0)
    assert metrics.ndcg_at_k(QREL, ["d1"], 1) == pytest.approx(1.0)
    assert metrics.ndcg_at_k(QREL, ["d4", "d1"], 2) < 1.0


def test_duplicates_keep_first_position():
    # a document retrieved through several chunks counts once, at its best rank
    ranking = ["d1", "d1", "d2", "d1"]
    assert ranked_list(ranking) == ["d1", "d2"]
    assert metrics.precision_at_k({"d1": 1}, ranking, 2) == pytest.approx(0.5)
    assert metrics.recall_at_k({"d1": 1, "d2": 1}, ranking, 2) == pytest.approx(1.0)


def test_score_mapping_ties_are_deterministic():
    # trec_eval order: score descending, ties by doc id descending, whatever the dict order
    a = {"b": 1.0, "a": 1.0, "c": 2.0, "d": 1.0}
    b = dict(reversed(list(a.items())))
    assert ranked_list(a) == ranked_list(b) == ["c", "d", "b", "a"]


def test_parse_metric_names_and_errors():
    assert parse_metric("NDCG@10").name == "ndcg@10"
    assert parse_metric("P@5").name == "precision@5"
    assert parse_metric("success@3").name == "hit_rate@3"
    assert parse_metric("map").name == "map"
    with pytest.raises(ValueError, match="unknown metric"):
        parse_metric("bleu@4")
    with pytest.raises(ValueError, match="k must be"):
        parse_metric("ndcg@0")


def test_evaluate_conventions():
    qrels = {"q1": {"d1": 1}, "q2": {"d2": 0}, "q3": {"d3": 2}}
    run = {"q1": ["d1"], "q4": ["x"]}
    result = evaluate(qrels, run, ["ndcg@10", "recall@10"])
    assert result.skipped_queries == ["q2"]  # no relevant doc: excluded
    assert result.missing_queries == ["q3"]  # not in run: counts as 0
    assert result.n_queries == 2
    assert result.mean["ndcg@10"] == pytest.approx(0.5)
    assert result.metric("recall@10") == {"q1": 1.0, "q3": 0.0}
    with pytest.raises(KeyError):
        result.metric("map")
    with pytest.raises(ValueError, match="no query to evaluate"):
        evaluate({"q": {"d": 0}}, {"q": ["d"]})


def test_relevance_threshold_binary_metrics():
    qrel = {"d1": 1, "d2": 2}
    assert metrics.recall_at_k(qrel, ["d1", "d2"], 1, relevance_threshold=2) == 0.0
    assert metrics.recall_at_k(qrel, ["d1", "d2"], 2, relevance_threshold=2) == 1.0
    assert metrics.mrr_at_k(qrel, ["d1", "d2"], 10, relevance_threshold=2) == 0.5


def _random_case(rng: random.Random, n_queries: int = 40):
    docs = [f"d{i:03d}" for i in range(60)]
    qrels, run = {}, {}
    for q in range(n_queries):
        qid = f"q{q:02d}"
        judged = rng.sample(docs, rng.randint(1, 8))
        qrels[qid] = {d: rng.choice([0, 1, 1, 2, 3]) for d in judged}
        if not any(v > 0 for v in qrels[qid].values()):
            qrels[qid][judged[0]] = 1
        retrieved = rng.sample(docs, rng.randint(1, 25))
        # coarse scores: plenty of ties
        run[qid] = {d: float(rng.randint(0, 5)) for d in retrieved}
    return qrels, run


RANX_NAMES = {
    "ndcg@10": "ndcg@10",
    "ndcg@3": "ndcg@3",
    "recall@10": "recall@10",
    "recall@5": "recall@5",
    "precision@10": "precision@10",
    "precision@1": "precision@1",
    "mrr@10": "mrr@10",
    "map": "map",
    "map@10": "map@10",
    "hit_rate@10": "hit_rate@10",
    "hit_rate@1": "hit_rate@1",
}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_agrees_with_ranx_on_random_runs_with_ties(seed):
    ranx = pytest.importorskip("ranx")
    rng = random.Random(seed)
    qrels, run = _random_case(rng)
    ours = evaluate(qrels, run, list(RANX_NAMES))

    # ranx breaks score ties by its own (hash/insertion) order, not trec_eval's; hand it the
    # ranking our deterministic tie rule produced, as strictly decreasing scores.
    resolved = {
        qid: {doc: float(100 - i) for i, doc in enumerate(ranked_list(ranking))}
        for qid, ranking in run.items()
    }
    ranx_qrels = ranx.Qrels({q: {d: r for d, r in docs.items()} for q, docs in qrels.items()})
    ranx_run = ranx.Run(resolved)
    for name, ranx_name in RANX_NAMES.items():
        ranx.evaluate(ranx_qrels, ranx_run, ranx_name, return_mean=False)
        reference = ranx_run.scores[ranx_name]
        for qid in qrels:
            assert ours.per_query[qid][name] == pytest.approx(reference[qid], abs=1e-9), (
                name,
                qid,
            )
        assert ours.mean[name] == pytest.approx(sum(reference.values()) / len(reference), abs=1e-9)


def test_insertion_order_does_not_change_scores():
    rng = random.Random(7)
    qrels, run = _random_case(rng, 10)
    shuffled = {}
    for qid, scores in run.items():
        items = list(scores.items())
        rng.shuffle(items)
        shuffled[qid] = dict(items)
    assert evaluate(qrels, run).per_query == evaluate(qrels, shuffled).per_query
