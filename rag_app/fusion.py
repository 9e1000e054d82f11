"""How BM25 and dense candidates become one ranking, and which way a workspace uses.

No fusion is best on every corpus (docs/BENCHMARKS.md, "Cross-corpus protocol"): which
list to trust more depends on the corpus and the model. `rag-app finetune` scores every
way on held-out *real* questions when the labelled data has enough
(`finetune.fusion_select`) and records the best per model in
``<workspace>/fusion.json``; `retrieval.fusion = "auto"` (the default) serves that choice
for the model it was measured on, and the fixed default chosen on the protocol's corpora
(weighted fusion at `retrieval.dense_weight`) where nothing was measured.

A choice is one of:
- ``dense`` / ``bm25``: one retriever's order (the other's candidates follow, as in the
  weighted fusion at weight 1 / 0);
- ``rrf``: reciprocal rank fusion (Cormack et al., SIGIR 2009), sum of 1 / (rrf_k + rank);
- ``weighted:w``: each list's scores min-max normalised to [0, 1] (all-equal scores map
  to 1), then ``w * dense + (1 - w) * bm25``, 0 for a list that did not return the chunk.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rag_app.fsutil import atomic_write_text

log = logging.getLogger(__name__)

FUSION_FILE = "fusion.json"
KINDS = ("dense", "bm25", "rrf", "weighted")
Candidates = Sequence[tuple[str, float]]  # (chunk id, score), best first


@dataclass(frozen=True)
class FusionChoice:
    """One way to fuse; `dense_weight` only matters for ``weighted``."""

    kind: str = "rrf"
    dense_weight: float = 0.5
    rrf_k: int = 60

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown fusion {self.kind!r}; use one of {', '.join(KINDS)}")
        if not 0.0 <= self.dense_weight <= 1.0:
            raise ValueError(f"dense_weight must be in [0, 1], not {self.dense_weight}")
        if self.kind != "weighted":  # the weight means nothing here: equal choices compare equal
            object.__setattr__(
                self, "dense_weight", {"dense": 1.0, "bm25": 0.0}.get(self.kind, 0.5)
            )

    @property
    def key(self) -> str:
        return f"weighted:{self.dense_weight:g}" if self.kind == "weighted" else self.kind

    def describe(self) -> str:
        if self.kind == "weighted":
            return f"weighted, dense weight {self.dense_weight:g}"
        if self.kind == "rrf":
            return f"rrf k={self.rrf_k}"
        return f"{self.kind} order"

    @classmethod
    def parse(cls, key: str, rrf_k: int = 60) -> FusionChoice:
        kind, _, weight = key.partition(":")
        return cls(kind, float(weight) if weight else 0.5, rrf_k)


def rrf_scores(ranked_lists: Sequence[Sequence[str]], rrf_k: int = 60) -> dict[str, float]:
    """Reciprocal rank fusion: sum of 1 / (rrf_k + rank), ranks starting at 1."""
    fused: dict[str, float] = {}
    for ranking in ranked_lists:
        for rank, cid in enumerate(ranking, start=1):
            fused[cid] = fused.get(cid, 0.0) + 1.0 / (rrf_k + rank)
    return fused


def minmax(scores: dict[str, float]) -> dict[str, float]:
    """Scores scaled to [0, 1]; all-equal scores map to 1."""
    if not scores:
        return {}
    low, high = min(scores.values()), max(scores.values())
    if high == low:
        return dict.fromkeys(scores, 1.0)
    return {cid: (s - low) / (high - low) for cid, s in scores.items()}


def weighted_scores(
    bm25: dict[str, float], dense: dict[str, float], dense_weight: float = 0.5
) -> dict[str, float]:
    """dense_weight * minmax(dense) + (1 - dense_weight) * minmax(bm25), 0 when absent."""
    nb, nd = minmax(bm25), minmax(dense)
    return {
        cid: dense_weight * nd.get(cid, 0.0) + (1 - dense_weight) * nb.get(cid, 0.0)
        for cid in nb.keys() | nd.keys()
    }


def fused_scores(lexical: Candidates, dense: Candidates, choice: FusionChoice) -> dict[str, float]:
    """The fused score of every candidate of either list."""
    if choice.kind == "rrf":
        return rrf_scores([[c for c, _ in lexical], [c for c, _ in dense]], choice.rrf_k)
    weight = {"dense": 1.0, "bm25": 0.0}.get(choice.kind, choice.dense_weight)
    return weighted_scores(dict(lexical), dict(dense), weight)


def fuse_scored(
    lexical: Candidates, dense: Candidates, choice: FusionChoice, k: int
) -> list[tuple[str, float]]:
    """The top `k` (chunk id, fused score); ties go to the better rank in either list, then
    the id. The one ordering of hybrid search: the chat's retriever and the measurement
    that chooses the fusion both call it."""
    fused = fused_scores(lexical, dense, choice)
    best_rank: dict[str, int] = {}
    for ranking in (lexical, dense):
        for rank, (cid, _) in enumerate(ranking, start=1):
            best_rank[cid] = min(best_rank.get(cid, rank), rank)
    order = sorted(fused, key=lambda cid: (-fused[cid], best_rank[cid], cid))
    return [(cid, fused[cid]) for cid in order[:k]]


def fuse(lexical: Candidates, dense: Candidates, choice: FusionChoice, k: int) -> list[str]:
    """The top `k` chunk ids of `fuse_scored`."""
    return [cid for cid, _ in fuse_scored(lexical, dense, choice, k)]


@dataclass(frozen=True)
class ExactMatchRule:
    """Keyword-led fusion for queries that name an identifier or type a rare word alone.

    A query holding a code ("SB 72-61-009", "NW-F-117", "MSN 0436": `rag_app.store.bm25
    .is_code`), or a keyword query of at most `short_words` words, not phrased as a question
    ("mycosis", "McKusick Kaufman syndrome"), whose term at most `max_docs` documents
    contain is a lookup: BM25 is sure of its answer, and dense
    retrieval, which sees "72-61-009" as a few sub-word pieces and a lone word without
    context, is not. Min-max weighted fusion at a high dense weight caps a BM25-only hit
    below almost any dense candidate, so such a query lost the document that owns the term.
    The rule puts BM25's best `pin` hits that contain the term first, in BM25 order; the
    rest of the list follows the measured fusion. A keyword query whose every word is in
    the titles of at most `title_docs` documents (a title typed alone, however long) is a
    lookup of those documents the same way. Other queries are fused as before.
    Defaults chosen on the dev halves of the shipped corpus's identifier and hand-written
    classes and MedQuAD's natural, title and rare-word classes; `short_words` (first 1) on
    the dev halves of the protocol's ten corpora, where a title typed alone was not a
    lookup at 1 (docs/BENCHMARKS.md, "Query classes").
    """

    max_docs: int = 50
    pin: int = 10
    short_words: int = 3  # a keyword query of at most this many words: its rare words count too
    title_docs: int = 20  # a keyword query all of whose words are in the titles of at most
    # this many documents leads with their chunks (0: off)

    def describe(self, terms: Sequence[str]) -> str:
        return f"exact match on {', '.join(terms)}: keyword-led (BM25's top {self.pin} first)"


def keyword_led(
    ranked: Sequence[tuple[str, float]], lexical: Candidates, exact_ids: set[str], pin: int
) -> list[tuple[str, float]]:
    """`ranked` (a fused list) with the first `pin` of `lexical` (BM25's order) that are in
    `exact_ids` moved to the front, in BM25 order."""
    pinned = [cid for cid, _ in lexical if cid in exact_ids][:pin]
    if not pinned:
        return list(ranked)
    score = dict(ranked)
    front = [(cid, score.get(cid, 0.0)) for cid in pinned]
    chosen = set(pinned)
    return front + [(cid, s) for cid, s in ranked if cid not in chosen]


def corpus_fingerprint(manifest_path: Path) -> str:
    """The chunk set a choice is measured on (a re-ingest makes the choice stale)."""
    from rag_app import chunkstore

    manifest = chunkstore.load_manifest(manifest_path) or {}
    return str(manifest.get("chunks_sha256") or "")


# --- the workspace's recorded choices ----------------------------------------------------------
@dataclass(frozen=True)
class Measured:
    """A choice with the evidence behind it, as `rag-app finetune` records it."""

    choice: FusionChoice
    queries: int
    source: str  # "held-out real" or "synthetic validation"
    ndcg: dict[str, float]  # every way tried -> mean nDCG@10
    corpus: str  # the chunk set it was measured on (manifest fingerprint)
    created: str = ""

    def describe(self) -> str:
        return f"{self.choice.describe()}, chosen on {self.queries:,} {self.source} questions"

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["choice"] = self.choice.key
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Measured:
        return cls(
            FusionChoice.parse(str(data["choice"])),
            int(data["queries"]),
            str(data["source"]),
            {str(k): float(v) for k, v in (data.get("ndcg") or {}).items()},
            str(data.get("corpus") or ""),
            str(data.get("created") or ""),
        )


def model_key(spec: str) -> str:
    """How a model is named in fusion.json (`rag_app.models.model_name`)."""
    from rag_app.models import model_name

    return model_name(spec)


def load_choices(workspace: Path) -> dict[str, Measured]:
    """Every recorded choice of the workspace (empty when none; a broken file is logged)."""
    path = Path(workspace) / FUSION_FILE
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return {str(k): Measured.from_json(v) for k, v in data.get("models", {}).items()}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.warning("%s is unreadable (%s): hybrid search uses the default fusion", path, exc)
        return {}


def record_choice(workspace: Path, key: str, measured: Measured) -> None:
    """Add or replace the choice of the model named `key` (`model_key`) in
    ``<workspace>/fusion.json``, atomically."""
    choices = load_choices(workspace)
    choices[key] = measured
    payload = {"models": {k: v.to_json() for k, v in sorted(choices.items())}}
    atomic_write_text(Path(workspace) / FUSION_FILE, json.dumps(payload, indent=2) + "\n")


def resolve(
    workspace: Path, model: str, corpus: str, fallback: FusionChoice
) -> tuple[FusionChoice, str]:
    """The choice to serve for `model` and the sentence the chat shows about it."""
    measured = load_choices(workspace).get(model_key(model))
    if measured is None:
        return fallback, f"{fallback.describe()} (default; no fusion measured for this model)"
    if measured.corpus and corpus and measured.corpus != corpus:
        return fallback, (
            f"{fallback.describe()} (default; the fusion measured for this model predates the "
            "last ingest: re-run `rag-app finetune`)"
        )
    return measured.choice, measured.describe()
