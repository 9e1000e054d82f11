"""Choose how the chat fuses BM25 and dense results, per model, on held-out real questions.

Which fusion is best depends on the corpus and the model (issue 19; docs/BENCHMARKS.md,
"Cross-corpus protocol"). After training, when the labelled training data has enough
held-out real questions (documents of `finetune.train_data` kept out of training, at
least `finetune.labelled_guard_min_queries`), `rag-app finetune` runs both retrievers of
the product (BM25 and the model's Chroma collection, `retrieval.candidates` each) on them
(at most `MAX_QUERIES`), scores every way of `rag_app.fusion` by nDCG@10 and records the
best for the base model and for the new run in ``<workspace>/fusion.json``, where
`retrieval.fusion = "auto"` finds it.

Synthetic queries never choose: they are written from the passages' own words (title and
distinctive terms), so BM25 wins on them wherever it is measured (0.97 nDCG@10 on GARD's
synthetic validation, where it loses to dense by 7 points on real questions), and a fusion
chosen on them was significantly worse than dense alone there. Without real questions
the fixed default of `retrieval.dense_weight` serves, chosen on the protocol's corpora.
`finetune.labelled_eval` never chooses either: it is the set a user evaluates on.
"""

from __future__ import annotations

import logging
import random
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from finetune.publish import now_iso
from finetune.split import Pair
from rag_app.config import Settings
from rag_app.fusion import (
    FusionChoice,
    Measured,
    corpus_fingerprint,
    fuse,
    model_key,
    record_choice,
)
from rag_app.ir.metrics import ndcg_at_k

log = logging.getLogger(__name__)

MAX_QUERIES = 1000
WEIGHTS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
# in order of preference on ties: one retriever alone, then the parameter-free fusion
CHOICES = (
    FusionChoice("dense"),
    FusionChoice("bm25"),
    FusionChoice("rrf"),
    *(FusionChoice("weighted", w) for w in WEIGHTS),
)


def choose(ndcg: dict[str, float], rrf_k: int = 60) -> FusionChoice:
    """The way with the best mean nDCG@10; ties go to the earlier of `CHOICES`."""
    order = {c.key: i for i, c in enumerate(CHOICES)}
    best = max(ndcg, key=lambda key: (round(ndcg[key], 6), -order.get(key, len(order))))
    return FusionChoice.parse(best, rrf_k)


def _questions(pairs: Sequence[Pair], seed: int) -> dict[str, set[str]]:
    relevant: dict[str, set[str]] = defaultdict(set)
    for pair in pairs:
        relevant[pair.query].add(pair.passage_id)
    if len(relevant) > MAX_QUERIES:
        keep = random.Random(seed).sample(sorted(relevant), MAX_QUERIES)
        relevant = defaultdict(set, {q: relevant[q] for q in keep})
    return dict(relevant)


def bm25_candidates(
    settings: Settings, questions: dict[str, set[str]]
) -> dict[str, list[tuple[str, float]]]:
    """BM25's candidates for every question: the same for every model, so found once."""
    from rag_app.retrieve import BM25Retriever, load_corpus

    bm25 = BM25Retriever(load_corpus(settings))
    n = settings.retrieval.candidates
    return {q: [(h.chunk.id, h.scores["bm25"]) for h in bm25.retrieve(q, n)] for q in questions}


def measure(
    settings: Settings,
    model: str,
    questions: dict[str, set[str]],
    lexical: dict[str, list[tuple[str, float]]],
    source: str,
) -> Measured:
    """Every way of fusing `lexical` (BM25's candidates) with `model`'s dense candidates,
    scored by nDCG@10 on `questions` (query -> relevant chunk ids)."""
    from rag_app.retrieve import build_dense, load_corpus

    dense = build_dense(settings, load_corpus(settings), model)
    n = settings.retrieval.candidates
    totals: dict[str, float] = dict.fromkeys((c.key for c in CHOICES), 0.0)
    for query, relevant in questions.items():
        vectors = [(h.chunk.id, h.scores["dense"]) for h in dense.retrieve(query, n)]
        for choice in CHOICES:
            ranking = fuse(lexical[query], vectors, choice, 10)
            totals[choice.key] += ndcg_at_k(dict.fromkeys(relevant, 1), ranking, 10)
    means = {key: round(total / len(questions), 4) for key, total in totals.items()}
    return Measured(
        choose(means, settings.retrieval.rrf_k),
        len(questions),
        source,
        means,
        corpus_fingerprint(settings.manifest_path),
        now_iso(),
    )


def select_fusion(
    settings: Settings, run_spec: str, run_key: str, real: Sequence[Pair]
) -> tuple[dict[str, Any], list[tuple[str, Measured]]]:
    """Measure the fusion of the base model and of the run (loaded from `run_spec`, recorded
    as `run_key`) on the held-out real pairs `real`: what run.json keeps, and the choices
    for `record_choices`. Too few questions: nothing is measured and run.json says why.

    Never fails a training run: a model that cannot be searched yet (a full fine-tune
    before `rag-app index --model`) is left to the default fusion and said so.
    """
    questions = len({p.query for p in real})
    needed = settings.finetune.labelled_guard_min_queries
    if questions < needed:
        return {
            "source": None,
            "note": (
                f"{questions} held-out real questions (needs {needed}): hybrid search keeps "
                f"the default fusion; synthetic queries never choose it (they favour BM25)"
            ),
        }, []
    source = "held-out real"
    out: dict[str, Any] = {"source": source}
    found: list[tuple[str, Measured]] = []
    relevant = _questions(real, settings.seed)
    lexical: dict[str, list[tuple[str, float]]] | None = None
    base = settings.models.embedder
    for role, spec, key in (("base", base, model_key(base)), ("finetuned", run_spec, run_key)):
        try:
            if lexical is None:  # the same for both models: found once
                lexical = bm25_candidates(settings, relevant)
            measured = measure(settings, spec, relevant, lexical, source)
        except Exception as exc:  # an unindexed run, a Chroma server that is down, ...
            log.warning("fusion not measured for %s: %s", key, exc)
            out[role] = {"model": key, "error": str(exc).splitlines()[0]}
            continue
        found.append((key, measured))
        out[role] = {"model": key, **measured.to_json()}
    return out, found


def record_choices(settings: Settings, found: Sequence[tuple[str, Measured]]) -> None:
    """Write the measured choices to the workspace's fusion.json (after the run is published)."""
    for key, measured in found:
        record_choice(settings.workspace, key, measured)
