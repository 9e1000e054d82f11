"""Publishing trained runs: what every trainer shares, and the one writer of ``run.json``.

A run is ``models_dir/<name>/``: the saved model (sentence-transformers or CrossEncoder
layout, so `rag-app index --model <dir>` and the reranker load it as is), ``run.json``
(`rag_app.runs.RunRecord`), the training and validation pairs and a model card
``README.md``. `staged_run` builds all of it in a temporary folder beside the workspace's
cache and renames it into place only once complete: a killed training leaves no folder
that looks like a model (and `rag_app.runs`, which the UI reads, never lists a
half-written run). `write_record` is the one writer of ``run.json``;
`rag_app.runs.read_record` its one reader.

For the trainers: `open_run` resolves the base model and a free run name; `run_record`
fills the fields every trainer shares, `publish` writes the run folder and `report` is
what a trainer returns (`existing_run` rebuilds it for a finished run of the same job, so
an identical job is reused, not retrained).
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from finetune import model_card
from finetune.data import GUARD_METRIC, TrainData, settings_record, write_pairs
from rag_app.config import Settings
from rag_app.fsutil import atomic_write_text
from rag_app.models import ResolvedModel, resolve_device, resolve_embedder, weights_fingerprint
from rag_app.runs import RUN_FILE, RunKind, RunRecord, list_runs

if TYPE_CHECKING:
    from rag_app.embedder import Embedder

log = logging.getLogger(__name__)


def now_iso() -> str:
    return datetime.now(UTC).replace(microsecond=0).isoformat()


def new_run_name(base: str, kind: str) -> str:
    """`<base>-ft-<UTC timestamp>` for embedders, `<base>-reranker-<stamp>` for rerankers."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", Path(base).name).strip("-.") or "model"
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    return f"{slug}-{'ft' if kind == 'embedder' else kind}-{stamp}"


def check_name(name: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,120}", name):
        raise ValueError(f"run name {name!r}: use letters, digits, '.', '_' and '-' only")
    return name


@contextmanager
def staged_run(settings: Settings, name: str) -> Iterator[Path]:
    """A temporary folder that becomes ``models_dir/<name>`` when the block succeeds.

    The folder is removed when the block raises. An existing run of that name is an error
    (runs are immutable: the fingerprint of their weights names their Chroma collection).
    """
    check_name(name)
    target = settings.models_dir / name
    if target.exists():
        raise FileExistsError(f"a run named {name!r} already exists in {settings.models_dir}")
    staging = settings.workspace / "tmp" / f"{name}-{uuid.uuid4().hex[:8]}"
    staging.mkdir(parents=True)
    try:
        yield staging
        if not (staging / RUN_FILE).is_file():
            raise RuntimeError(f"run {name}: no {RUN_FILE} written; not publishing it")
        target.parent.mkdir(parents=True, exist_ok=True)
        _fsync_tree(staging)
        os.rename(staging, target)  # atomic on one filesystem; fails if target appeared
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _fsync_tree(root: Path) -> None:
    for path in root.rglob("*"):
        if path.is_file():
            with path.open("rb") as handle:
                os.fsync(handle.fileno())


def write_record(folder: Path, record: RunRecord) -> None:
    """Write ``run.json`` (the last file of a staged run)."""
    record = record.model_copy(
        update={"created": record.created or now_iso(), "run_id": record.run_id or record.name}
    )
    atomic_write_text(Path(folder) / RUN_FILE, record.model_dump_json(indent=2) + "\n")


TRAIN_FILE = "train.jsonl"  # a run's training pairs (the eval's leak guard reads them)
VAL_FILE = "val.jsonl"


@dataclass
class TrainReport:
    """What a trainer returns: the published run's record, where it is, and the timing of
    this invocation (zero when an identical earlier run was reused)."""

    record: RunRecord
    path: Path
    seconds: float
    batch_size: int = 16
    reused: bool = False  # an identical earlier run was found; nothing was trained

    @property
    def name(self) -> str:
        return self.record.name

    @property
    def kind(self) -> RunKind:
        return self.record.kind

    @property
    def metrics(self) -> dict[str, Any]:
        return self.record.metrics

    @property
    def recommended(self) -> bool:
        return self.record.recommended

    @property
    def verified(self) -> bool:
        return self.record.verified

    @property
    def train_pairs(self) -> int:
        return self.record.train_pairs

    @property
    def train_seconds(self) -> float:
        return self.record.train_seconds

    def summary(self) -> str:
        def pair(key: str) -> str:
            if key not in self.metrics:
                return ""
            base = self.metrics.get(f"{key}_base")
            return f"{key} {base:.3f} -> {self.metrics[key]:.3f}" if base is not None else ""

        keys = (f"val_{GUARD_METRIC}", f"labelled_{GUARD_METRIC}", "val_rerank_ndcg@10")
        parts = [p for p in map(pair, keys) if p]
        what = f"{self.record.label} {self.name}"
        verdict = self.record.verdict_text
        if self.reused:
            return (
                f"{what}: already trained on the same data and settings "
                f"(use --force to retrain); {'; '.join(parts)}; {verdict} -> {self.path}"
            )
        r = self.record
        # Only trainers that time their in-loop validation apart report it (not the adapter).
        validating = f", {r.eval_seconds:.0f}s of it validation" if r.eval_seconds else ""
        # examples a second of training steps, validation excluded
        pairs_per_s = throughput(r.steps * self.batch_size, r.train_seconds, r.eval_seconds)
        return (
            f"{what}: {r.train_pairs} train / {r.val_pairs} val pairs, "
            f"{r.steps} steps in {r.train_seconds:.0f}s{validating} "
            f"({pairs_per_s:.1f} pairs/s); "
            f"{'; '.join(parts)}; {verdict} -> {self.path}"
        )


def open_run(settings: Settings, name: str | None, job: str):
    """(resolved base model, device, a free run name, the base `Embedder` as the app serves
    it): what every embedder trainer starts from. Raises FileExistsError for a taken name."""
    from rag_app.embedder import Embedder

    resolved = resolve_embedder(settings.models.embedder)
    device = resolve_device(settings.models.device)
    name = check_name(name or new_run_name(resolved.spec, job))
    if (settings.models_dir / name).exists():
        raise FileExistsError(f"a run named {name!r} already exists in {settings.models_dir}")
    base = Embedder.load(
        settings.models.embedder,
        device=device,
        trust_remote_code=settings.models.trust_remote_code,
    )
    return resolved, device, name, base


def existing_run(settings: Settings, fingerprint: str, kind: RunKind) -> TrainReport | None:
    """The report of a finished run of the same job, so re-running does not retrain."""
    for found in reversed(list_runs(settings, kind=kind)):
        if found.record.data_fingerprint == fingerprint:
            batch_size = int(found.record.settings.get("batch_size", 16))
            return TrainReport(found.record, found.path, 0.0, batch_size, reused=True)
    return None


def throughput(examples: int, seconds: float, eval_seconds: float = 0.0) -> float:
    """Examples a second of training steps: validation time inside the loop excluded."""
    steps_seconds = seconds - eval_seconds
    return examples / steps_seconds if steps_seconds > 0 else 0.0


def run_record(
    settings: Settings,
    data: TrainData,
    /,
    *,
    name: str,
    kind: RunKind,
    base: Embedder,
    resolved: ResolvedModel,
    fingerprint: str,
    device: str,
    metrics: dict[str, float],
    recommended: bool,
    verified: bool,
    validation: str,
    train_pairs: int,
    **fields: Any,
) -> RunRecord:
    """``run.json`` as every trainer writes it: the shared fields, then the trainer's own.

    `resolved` is the base model as `rag_app.models.resolve_embedder` found it and `base`
    the `Embedder` loaded from it; `fingerprint` identifies the training job
    (`finetune.data.data_fingerprint`); the eval's leak guard reads ``train_file``.
    """
    return RunRecord(
        name=name,
        run_id=name,
        kind=kind,
        base_model=settings.models.embedder,
        base_fingerprint=base.fingerprint,
        base_weights=weights_fingerprint(resolved),
        created=now_iso(),
        corpus=str(settings.corpus),
        metrics=metrics,
        recommended=recommended,
        verified=verified,
        validation=validation,
        train_pairs=train_pairs,
        val_pairs=len(data.val),
        train_file=TRAIN_FILE,
        val_file=VAL_FILE,
        llm=data.synth_meta.get("llm"),
        prompt_version=data.synth_meta.get("prompt_version"),
        data_fingerprint=fingerprint,
        device=device,
        seed=settings.seed,
        settings=settings_record(settings),
        **fields,
    )


def publish(
    settings: Settings,
    record: RunRecord,
    data: TrainData,
    save: Callable[[Path], None],
    *,
    workspace_split: bool = True,
) -> Path:
    """Write a run atomically: `save(folder)` writes the model, then the training and
    validation pairs, the model card and ``run.json`` (last). With `workspace_split`, the
    pairs are also copied to the synth folder, where the eval looks for the latest split."""
    name = record.name
    with staged_run(settings, name) as folder:
        save(folder)
        write_pairs(folder / TRAIN_FILE, data.train)
        write_pairs(folder / VAL_FILE, data.val)
        model_card.write(folder, record)
        write_record(folder, record)
    if workspace_split:
        write_pairs(settings.synth_dir / TRAIN_FILE, data.train)
        write_pairs(settings.synth_dir / VAL_FILE, data.val)
    return settings.models_dir / name


def report(record: RunRecord, path: Path, *, began: float, batch_size: int) -> TrainReport:
    """What a trainer returns for the run it just published."""
    return TrainReport(record, path, time.perf_counter() - began, batch_size)
