"""What every trainer shares about a run: its start, its report, and its reuse.

`open_run` resolves the base model and a free run name; `run_record` writes the fields of
``run.json`` every trainer shares, `publish` writes the run folder atomically and `report`
is what a trainer returns (`existing_run` rebuilds it for a finished run of the same job,
so an identical job is reused, not retrained).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from finetune import model_card, run_store
from finetune.data import GUARD_METRIC, TrainData, settings_record, write_pairs
from rag_app.config import Settings
from rag_app.models import resolve_device, resolve_embedder, weights_fingerprint

log = logging.getLogger(__name__)

TRAIN_FILE = "train.jsonl"  # a run's training pairs (the eval's leak guard reads them)
VAL_FILE = "val.jsonl"


@dataclass
class TrainReport:
    name: str
    kind: str
    path: Path
    metrics: dict[str, float]
    recommended: bool
    verified: bool
    train_pairs: int
    val_pairs: int
    seconds: float
    train_seconds: float
    steps: int

    batch_size: int = 16
    reused: bool = False  # an identical earlier run was found; nothing was trained
    eval_seconds: float = 0.0  # of train_seconds, spent validating inside the training loop

    @property
    def pairs_per_s(self) -> float:
        """Training examples processed a second of training steps (validation excluded)."""
        return throughput(self.steps * self.batch_size, self.train_seconds, self.eval_seconds)

    def summary(self) -> str:
        def pair(key: str) -> str:
            if key not in self.metrics:
                return ""
            base = self.metrics.get(f"{key}_base")
            return f"{key} {base:.3f} -> {self.metrics[key]:.3f}" if base is not None else ""

        keys = (f"val_{GUARD_METRIC}", f"labelled_{GUARD_METRIC}", "val_rerank_ndcg@10")
        parts = [p for p in map(pair, keys) if p]
        verdict = (
            "recommended"
            if self.recommended and self.verified
            else "unverified (synthetic validation only)"
            if self.recommended
            else "NOT recommended (no gain on the labelled set)"
            if self.verified
            else "NOT recommended (no gain on validation)"
        )
        if self.reused:
            return (
                f"{self.kind} {self.name}: already trained on the same data and settings "
                f"(use --force to retrain); {'; '.join(parts)}; {verdict} -> {self.path}"
            )
        # Only trainers that time their in-loop validation apart report it (not the adapter).
        validating = f", {self.eval_seconds:.0f}s of it validation" if self.eval_seconds else ""
        return (
            f"{self.kind} {self.name}: {self.train_pairs} train / {self.val_pairs} val pairs, "
            f"{self.steps} steps in {self.train_seconds:.0f}s{validating} "
            f"({self.pairs_per_s:.1f} pairs/s); "
            f"{'; '.join(parts)}; {verdict} -> {self.path}"
        )


def open_run(settings: Settings, name: str | None, job: str):
    """(resolved base model, device, a free run name, the base `Embedder` as the app serves
    it): what every embedder trainer starts from. Raises FileExistsError for a taken name."""
    from rag_app.embedder import Embedder

    resolved = resolve_embedder(settings.models.embedder)
    device = resolve_device(settings.models.device)
    name = run_store.check_name(name or run_store.new_run_name(resolved.spec, job))
    if (settings.models_dir / name).exists():
        raise FileExistsError(f"a run named {name!r} already exists in {settings.models_dir}")
    base = Embedder.load(
        settings.models.embedder,
        device=device,
        trust_remote_code=settings.models.trust_remote_code,
    )
    return resolved, device, name, base


def existing_run(settings: Settings, fingerprint: str, kind: str) -> TrainReport | None:
    """The report of a finished run of the same job, so re-running does not retrain."""
    for found in reversed(run_store.list_runs(settings, kind=kind)):
        record = found.record
        if record.get("data_fingerprint") == fingerprint:
            return TrainReport(
                name=found.name,
                kind=kind,
                path=found.path,
                metrics=dict(found.metrics),
                recommended=bool(record.get("recommended")),
                verified=bool(record.get("verified")),
                train_pairs=int(record.get("train_pairs", 0)),
                val_pairs=int(record.get("val_pairs", 0)),
                seconds=0.0,
                train_seconds=float(record.get("train_seconds", 0.0)),
                steps=int(record.get("steps", 0)),
                batch_size=int((record.get("settings") or {}).get("batch_size", 16)),
                reused=True,
                eval_seconds=float(record.get("eval_seconds", 0.0)),
            )
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
    kind: str,
    base: Any,
    resolved: Any,
    fingerprint: str,
    device: str,
    metrics: dict[str, float],
    recommended: bool,
    verified: bool,
    validation: str,
    train_pairs: int,
    **fields: Any,
) -> dict[str, Any]:
    """``run.json`` as every trainer writes it: the shared fields, then the trainer's own.

    `resolved` is the base model as `rag_app.models.resolve_embedder` found it and `base`
    the `Embedder` loaded from it; `fingerprint` identifies the training job
    (`finetune.data.data_fingerprint`); the eval's leak guard reads ``train_file``.
    """
    return {
        "name": name,
        "run_id": name,
        "kind": kind,
        "base_model": settings.models.embedder,
        "base_fingerprint": base.fingerprint,
        "base_weights": weights_fingerprint(resolved),
        "created": run_store.now_iso(),
        "corpus": str(settings.corpus),
        "metrics": metrics,
        "recommended": recommended,
        "verified": verified,
        "validation": validation,
        "train_pairs": train_pairs,
        "val_pairs": len(data.val),
        "train_file": TRAIN_FILE,
        "val_file": VAL_FILE,
        "llm": data.synth_meta.get("llm"),
        "prompt_version": data.synth_meta.get("prompt_version"),
        "data_fingerprint": fingerprint,
        "device": device,
        "seed": settings.seed,
        "settings": settings_record(settings),
        **fields,
    }


def publish(
    settings: Settings,
    record: dict[str, Any],
    data: TrainData,
    save: Callable[[Path], None],
    *,
    workspace_split: bool = True,
) -> Path:
    """Write a run atomically: `save(folder)` writes the model, then the training and
    validation pairs, the model card and ``run.json`` (last). With `workspace_split`, the
    pairs are also copied to the synth folder, where the eval looks for the latest split."""
    name = record["name"]
    with run_store.staged_run(settings, name) as folder:
        save(folder)
        write_pairs(folder / TRAIN_FILE, data.train)
        write_pairs(folder / VAL_FILE, data.val)
        model_card.write(folder, record)
        run_store.write_record(folder, record)
    if workspace_split:
        write_pairs(settings.synth_dir / TRAIN_FILE, data.train)
        write_pairs(settings.synth_dir / VAL_FILE, data.val)
    return settings.models_dir / name


def report(
    record: dict[str, Any],
    path: Path,
    *,
    kind: str,
    began: float,
    train_seconds: float,
    batch_size: int,
    eval_seconds: float = 0.0,
) -> TrainReport:
    """What a trainer returns for the run it just published."""
    return TrainReport(
        name=record["name"],
        kind=kind,
        path=path,
        metrics=record["metrics"],
        recommended=bool(record["recommended"]),
        verified=bool(record["verified"]),
        train_pairs=int(record["train_pairs"]),
        val_pairs=int(record["val_pairs"]),
        seconds=time.perf_counter() - began,
        train_seconds=train_seconds,
        steps=int(record.get("steps", 0)),
        batch_size=batch_size,
        eval_seconds=eval_seconds,
    )
