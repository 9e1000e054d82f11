"""The training data of a run: pairs, their split, the guard, and what identifies them.

`prepare` loads the synthetic queries and any real labelled pairs (`finetune.train_data`),
holds real pairs of whole documents out as the guard, and splits the rest into training
and validation by document (or chunk), seeded. `guard_for` adds the labelled eval set,
`verdict` decides "recommended", and `data_fingerprint` names a training job so an
identical one is reused instead of retrained. Every trainer starts here.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from finetune import synth
from finetune.split import (
    Origin,
    Pair,
    Passages,
    check_no_leak,
    load_general_pairs,
    load_labelled,
    split_pairs,
    split_real,
)
from rag_app.chunkstore import load_chunks
from rag_app.config import FinetuneSettings, Settings
from rag_app.errors import RagAppError
from rag_app.feedback.export import normalise_query
from rag_app.fsutil import atomic_write_text
from rag_app.models import resolve_embedder, weights_fingerprint
from rag_app.types import Chunk

log = logging.getLogger(__name__)


GUARD_METRIC = "mrr@10"


class NoTrainingDataError(RagAppError, RuntimeError):
    """Nothing to train on: no synthetic queries and no labelled pairs."""


@dataclass
class TrainData:
    """Everything a training run needs, prepared once (and reused by the reranker)."""

    chunks: list[Chunk]
    passages: Passages
    train: list[Pair]
    val: list[Pair]
    general: list[tuple[str, str]] = field(default_factory=list)
    sources: dict[str, int] = field(default_factory=dict)
    synth_meta: dict[str, Any] = field(default_factory=dict)
    # real labelled pairs of held-out documents: the guard that decides "recommended"
    guard: list[Pair] = field(default_factory=list)


def prepare(settings: Settings) -> TrainData:
    """Load chunks, synthetic queries and labelled pairs; split by document/chunk, seeded."""
    cfg = settings.finetune
    chunks = load_chunks(settings.chunks_path, settings.manifest_path)
    passages = Passages.from_chunks(chunks)
    pairs: list[Pair] = []
    sources: dict[str, int] = defaultdict(int)
    synth_meta: dict[str, Any] = {}
    if cfg.use_synthetic:
        known = {c.id: c.doc_id for c in chunks}
        stale = 0
        for cand in synth.load_queries(settings):
            if cand.chunk_id not in known:
                stale += 1
                continue
            pairs.append(Pair(cand.query, cand.chunk_id, known[cand.chunk_id], cand.source))
            sources[cand.source] += 1
        if stale:
            log.warning("%d synthetic queries name chunks no longer ingested; skipped", stale)
        report_file = settings.synth_dir / synth.REPORT_FILE
        if report_file.is_file():
            try:
                synth_meta = json.loads(report_file.read_text(encoding="utf-8"))
            except ValueError:
                synth_meta = {}
    real: list[Pair] = []
    for path in cfg.train_data:
        labelled = load_labelled(Path(path), passages, chunks, split=cfg.train_data_split)
        real.extend(labelled)
        sources[f"labelled:{Path(path).name}"] += len(labelled)
    # whole documents on one side: the guard asks about passages training never saw
    real, guard = split_real(real, guard_fraction=cfg.labelled_guard_fraction, seed=settings.seed)
    if guard:
        sources["labelled guard (held out)"] = len(guard)
    pairs.extend(real)
    if not pairs:
        raise NoTrainingDataError(
            f"no training pairs: run `rag-app synth` first (nothing in {settings.synth_dir}) "
            "or give labelled pairs with finetune.train_data"
        )
    train, val = split_pairs(
        pairs, val_fraction=cfg.val_fraction, by=cfg.split_by, seed=settings.seed
    )
    check_no_leak(train, val, cfg.split_by)
    if not val:
        raise NoTrainingDataError(
            f"{len(pairs)} pairs from one {cfg.split_by}: too few to hold any out for validation"
        )
    general: list[tuple[str, str]] = []
    if cfg.general_pairs and cfg.general_share > 0:
        everything = load_general_pairs(cfg.general_pairs)
        share = min(cfg.general_share, 0.9)
        want = round(share / (1 - share) * len(train))
        rng = random.Random(settings.seed)
        general = rng.sample(everything, min(want, len(everything)))
        sources["general"] = len(general)
    return TrainData(chunks, passages, train, val, general, dict(sources), synth_meta, guard)


@dataclass
class Guard:
    """The real questions that decide whether a run is "recommended"."""

    pairs: list[Pair]
    path: Path | None  # the labelled_eval folder, when one was used
    held_out: int = 0  # pairs from train_data's held-out documents
    dropped_training: int = 0  # guard pairs whose question is also a training question

    @property
    def queries(self) -> int:
        return len({p.query for p in self.pairs})

    def describe(self) -> str:
        parts = []
        if self.held_out:
            parts.append(f"{self.held_out} pairs of held-out documents of the labelled data")
        if self.path is not None:
            parts.append(str(self.path))
        return " + ".join(parts) or "none"


def guard_for(settings: Settings, data: TrainData) -> Guard:
    """The guard of a run: the held-out documents of the real training pairs, plus
    `finetune.labelled_eval` when set (without real pairs: `<corpus>/eval` by default).

    With real pairs the default `<corpus>/eval` is left out on purpose: the user's own
    questions are the better judge, and a demo or bench that trains on part of that set
    must not be guarded by the rest, which it reports as its test. Guard questions that
    are also training questions (same text, any source) are dropped and counted.
    """
    explicit = settings.finetune.labelled_eval is not None
    pairs: list[Pair] = list(data.guard)
    path: Path | None = None
    if explicit or not data.guard:
        extra, path = labelled_pairs_for_guard(settings, data.chunks, data.passages)
        pairs.extend(extra)
    seen = {normalise_query(p.query) for p in (*data.train, *data.val)}
    kept = [p for p in pairs if normalise_query(p.query) not in seen]
    return Guard(kept, path, held_out=len(data.guard), dropped_training=len(pairs) - len(kept))


def verdict(settings: Settings, metrics: dict[str, float], guard: Guard) -> tuple[bool, bool]:
    """(verified, recommended): a guard with enough queries decides; else synthetic val."""
    verified = guard.queries >= settings.finetune.labelled_guard_min_queries
    prefix = "labelled" if verified else "val"
    after = metrics.get(f"{prefix}_{GUARD_METRIC}", 0.0)
    return verified, after > metrics.get(f"{prefix}_{GUARD_METRIC}_base", 0.0)


def guard_record(guard: Guard) -> dict[str, Any]:
    """What run.json says about the guard (the eval and the model card read it)."""
    return {
        "labelled_eval": str(guard.path) if guard.path else None,
        "guard": {
            "source": guard.describe(),
            "queries": guard.queries,
            "pairs": len(guard.pairs),
            "held_out_pairs": guard.held_out,
            "dropped_training_overlap": guard.dropped_training,
        },
    }


def real_weight(n_real: int, n_synthetic: int, cfg: FinetuneSettings) -> int:
    """How many times each real pair counts: `labelled_weight`, or with `labelled_share`
    the repeat that brings real pairs closest to that share of all examples.

    Why a share: a fixed weight is right for one amount of feedback only. With few real
    questions among thousands of synthetic ones, weight 4 leaves them a sliver; with
    hundreds it drowns the synthetic pairs (the dev sweeps of docs/BENCHMARKS.md).
    """
    share = cfg.labelled_share
    if share is None or n_real == 0 or n_synthetic == 0:
        return cfg.labelled_weight
    return max(1, round(share / (1 - share) * n_synthetic / n_real))


def weighted(pairs: Sequence[Pair], cfg: FinetuneSettings) -> list[Pair]:
    """Real labelled pairs repeated `real_weight` times (synthetic ones once), for trainers
    that sample pairs; the adapter weights its examples the same way."""
    n_real = sum(p.kind == "real" for p in pairs)
    weight = real_weight(n_real, len(pairs) - n_real, cfg)
    return [p for p in pairs for _ in range(weight if p.kind == "real" else 1)]


def labelled_pairs_for_guard(
    settings: Settings, chunks: Sequence[Chunk], passages: Passages
) -> tuple[list[Pair], Path | None]:
    """Pairs of the labelled guardrail set (every chunk of a relevant document counts)."""
    path = settings.finetune.labelled_eval
    if path is None:
        default = Path(settings.corpus) / "eval"
        if (default / "queries.jsonl").is_file() and (default / "qrels").is_dir():
            path = default
    if path is None:
        return [], None
    path = Path(path)
    if any(Path(p).resolve() == path.resolve() for p in settings.finetune.train_data):
        log.warning("labelled guardrail %s is also training data: not used as a guardrail", path)
        return [], None
    from rag_app.ir.beir import DatasetError, available_splits, load_beir

    split = next((s for s in ("test", "dev") if s in available_splits(path)), None)
    if split is None:
        return [], None
    try:  # read as the eval reads it: reused query ids disambiguated, never merged
        dataset = load_beir(path, split=split, on_duplicate_query="disambiguate")
    except (OSError, DatasetError) as exc:
        log.warning("labelled guardrail %s unreadable (%s); skipped", path, exc)
        return [], None
    by_doc: dict[str, list[str]] = defaultdict(list)
    for chunk in chunks:
        by_doc[chunk.doc_id].append(chunk.id)
    pairs: list[Pair] = []
    missing = 0
    for qid, judged in dataset.qrels.items():
        for cid, grade in judged.items():
            if grade <= 0:
                continue
            ids = [cid] if cid in passages else by_doc.get(cid, [])
            if not ids:
                missing += 1
            for pid in ids:
                pairs.append(Pair(dataset.queries[qid], pid, passages.doc[pid], Origin.LABELLED))
    if missing:
        log.warning("labelled guardrail: %d qrels name passages not in this workspace", missing)
    return pairs, path


def write_pairs(path: Path, pairs: Sequence[Pair]) -> None:
    atomic_write_text(
        path,
        "".join(
            json.dumps(
                {
                    "query": p.query,
                    "chunk_id": p.passage_id,
                    "doc_id": p.doc_id,
                    "source": p.source,
                },
                ensure_ascii=False,
            )
            + "\n"
            for p in pairs
        ),
    )


def settings_record(settings: Settings) -> dict[str, Any]:
    data = settings.finetune.model_dump(mode="json")
    data["seed"] = settings.seed
    data["base_model"] = settings.models.embedder
    return data


def data_fingerprint(settings: Settings, data: TrainData, kind: str) -> str:
    """Identifies a training job: base weights, pairs, split and hyper-parameters."""

    digest = hashlib.sha256(kind.encode())
    digest.update(weights_fingerprint(resolve_embedder(settings.models.embedder)).encode())
    digest.update(json.dumps(settings_record(settings), sort_keys=True, default=str).encode())
    for side in (data.train, data.val, data.guard):
        for pair in side:
            digest.update(f"{pair.query}\0{pair.passage_id}\n".encode())
        digest.update(b"--")
    for query, passage in data.general:
        digest.update(f"{query}\0{passage}\n".encode())
    return digest.hexdigest()[:16]
