"""What every trainer shares about a run: its start, its report, and its reuse.

`open_run` resolves the base model and a free run name, `TrainReport` is what a trainer
returns (and `existing_run` rebuilds it for a finished run of the same job), and
`throughput` fills the fields of ``run.json`` the same way everywhere.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from finetune import registry
from finetune.data import GUARD_METRIC
from rag_app.config import Settings
from rag_app.models import resolve_device, resolve_embedder

log = logging.getLogger(__name__)


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
    name = registry.check_name(name or registry.new_run_name(resolved.spec, job))
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
    for found in reversed(registry.list_runs(settings, kind=kind)):
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
