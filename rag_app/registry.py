"""Read-only view of the trained runs in a workspace, for the UI, CLI and eval.

A run is a directory `models_dir/<name>/` holding the saved model beside a `run.json`
(`name`, `kind`: embedder | reranker | adapter, `base_model`, `created`, `metrics`, ...).
`finetune` writes runs (atomically: a run directory only appears once complete); this
module only reads them, so `rag_app` never depends on `finetune`.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rag_app.config import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Run:
    """One trained model in the workspace."""

    name: str
    kind: str
    path: Path
    base_model: str = ""
    created: str = ""
    metrics: dict[str, Any] = field(default_factory=dict)
    record: dict[str, Any] = field(default_factory=dict)


def read_run(path: Path) -> Run | None:
    """The run in `path`, or None when it has no readable run.json."""
    record_path = path / "run.json"
    try:
        record = json.loads(record_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        log.warning("ignoring run %s: unreadable run.json (%s)", path, exc)
        return None
    if not isinstance(record, dict) or "kind" not in record:
        log.warning("ignoring run %s: run.json has no 'kind'", path)
        return None
    return Run(
        name=str(record.get("name") or path.name),
        kind=str(record["kind"]),
        path=path,
        base_model=str(record.get("base_model", "")),
        created=str(record.get("created", "")),
        metrics=dict(record.get("metrics") or {}),
        record=record,
    )


def list_runs(settings: Settings, kind: str | None = None) -> list[Run]:
    """Complete runs, oldest first (so the last one is the newest), optionally of one kind."""
    root = settings.models_dir
    if not root.is_dir():
        return []
    runs = [r for p in sorted(root.iterdir()) if p.is_dir() and (r := read_run(p))]
    if kind is not None:
        runs = [r for r in runs if r.kind == kind]
    return sorted(runs, key=lambda r: (r.created, r.name))


def is_usable(run: Run) -> bool:
    """Whether "auto" / "latest" may pick `run`: a loadable model folder, and for a
    reranker one that beat no reranking on its validation (auto must never make results
    worse; a user can still name any run by its path)."""
    if run.kind == "reranker":
        return run.record.get("beats_no_rerank") is not False
    return (run.path / "modules.json").is_file() or (run.path / "adapter.json").is_file()


def latest(settings: Settings, kind: str | None = None, *, usable: bool = True) -> Run | None:
    """The newest run (of `kind`); with `usable`, the newest that `is_usable` accepts.

    The one definition of "the newest run" for every "auto" and "latest" in the product:
    `models.reranker = "auto"`, `finetune.negatives.cross_encoder = "auto"`, the eval's
    fine-tuned default and the demo all ask here, so they cannot disagree.
    """
    runs = list_runs(settings, kind=kind)
    if usable:
        runs = [r for r in runs if is_usable(r)]
    return runs[-1] if runs else None


def find_run(settings: Settings, name: str) -> Run:
    """The run called `name`; KeyError listing the available runs otherwise."""
    runs = list_runs(settings)
    for run in runs:
        if run.name == name or run.path.name == name:
            return run
    available = ", ".join(r.name for r in runs) or "none"
    raise KeyError(f"no run named {name!r} in {settings.models_dir} (available: {available})")
