"""Hard negatives: passages the base model likes for a query but that do not answer it.

Mined with `sentence_transformers.util.mine_hard_negatives` and the *base* embedder over
the whole passage table. Two guards against false negatives (a known failure: a sibling
chunk that says the same thing, e.g. two task cards of one family):

- skip the very top ranks (`finetune.negatives.range_min`), where unlabelled positives sit;
- a relative margin: a negative must score below ``(1 - margin) x`` the positive's score;
- optionally, a trained cross-encoder (`finetune.negatives.cross_encoder`) re-scores the
  candidates and the margin applies to its scores instead.

Passages from the query's own document are never used as its negatives. A query for which
nothing passes the guards gets a random passage of another document, so every training row
keeps the same shape (anchor, positive, negative_1..n) and no pair is lost.

Example:
    >>> rows = mine(train_pairs, passages, base_model, settings)
    >>> rows[0].keys()
    dict_keys(['anchor', 'positive', 'negative_1'])
"""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass

from finetune.split import Pair, Passages
from rag_app.config import Settings

log = logging.getLogger(__name__)


@dataclass
class MiningReport:
    queries: int
    mined: int  # queries with all their negatives from the miner
    random_fill: int  # negatives drawn at random because the miner had too few

    def as_dict(self) -> dict[str, int]:
        return {"queries": self.queries, "mined": self.mined, "random_fill": self.random_fill}


def mine(
    pairs: Sequence[Pair],
    passages: Passages,
    model,
    settings: Settings,
    *,
    num_negatives: int | None = None,
    cross_encoder=None,
    progress: bool = False,
) -> tuple[list[dict[str, str]], MiningReport]:
    """Rows ``{"anchor", "positive", "negative_1", ...}``, one per pair, in pair order.

    `model` is the base SentenceTransformer (never the one being trained).
    """
    from datasets import Dataset
    from sentence_transformers.util import mine_hard_negatives

    cfg = settings.finetune
    n = cfg.negatives.per_query if num_negatives is None else num_negatives
    if n <= 0 or not pairs:
        rows = [{"anchor": p.query, "positive": passages.text[p.passage_id]} for p in pairs]
        return rows, MiningReport(len(pairs), 0, 0)
    ids = passages.ids()
    corpus = [passages.text[i] for i in ids]
    doc_of_text: dict[str, set[str]] = {}
    for pid in ids:
        doc_of_text.setdefault(passages.text[pid], set()).add(passages.doc[pid])
    dataset = Dataset.from_dict(
        {
            "anchor": [p.query for p in pairs],
            "positive": [passages.text[p.passage_id] for p in pairs],
        }
    )
    # Ask for spare candidates: same-document ones are removed below.
    mined = mine_hard_negatives(
        dataset,
        model,
        corpus=corpus,
        cross_encoder=cross_encoder,
        range_min=cfg.negatives.range_min,
        range_max=max(cfg.negatives.range_max, cfg.negatives.range_min + 3 * n),
        relative_margin=cfg.negatives.relative_margin or None,
        num_negatives=min(3 * n, max(1, len(corpus) - 1)),
        sampling_strategy="top",
        output_format="labeled-list",
        batch_size=settings.models.embed_batch_size,
        verbose=progress,
    )
    found: dict[tuple[str, str], list[str]] = {}
    for row in mined:  # labeled-list: "positive" = [positive, negatives...], "labels"
        texts, labels = row.get("positive"), row.get("labels")
        if not isinstance(texts, list) or labels is None:
            continue
        negatives = [t for t, label in zip(texts, labels, strict=False) if not label]
        found[(row["anchor"], texts[0])] = negatives
    rng = random.Random(settings.seed)
    rows = []
    full = fill = 0
    for pair in pairs:
        positive = passages.text[pair.passage_id]
        own_doc = passages.doc[pair.passage_id]
        candidates = [
            t
            for t in found.get((pair.query, positive), [])
            if t != positive and own_doc not in doc_of_text.get(t, set())
        ][:n]
        if len(candidates) == n:
            full += 1
        others = [i for i in ids if passages.doc[i] != own_doc] if len(candidates) < n else []
        rng.shuffle(others)
        for pick in others:
            if len(candidates) >= n:
                break
            text = passages.text[pick]
            if text != positive and text not in candidates:
                candidates.append(text)
                fill += 1
        if len(candidates) < n:
            raise ValueError(
                f"not enough passages outside document {own_doc!r} for {n} negatives a query"
            )
        row = {"anchor": pair.query, "positive": positive}
        row.update({f"negative_{i + 1}": t for i, t in enumerate(candidates)})
        rows.append(row)
    report = MiningReport(len(pairs), full, fill)
    log.info("hard negatives: %s", report.as_dict())
    return rows, report
