"""The workspace's trained runs: writing them atomically, listing and resolving them.

A run is ``models_dir/<name>/``: the saved model (sentence-transformers or CrossEncoder
layout, so `rag-app index --model <dir>` and the reranker load it as is), ``run.json``
and a model card ``README.md``. `staged_run` builds all of it in a temporary folder beside
the workspace's cache and renames it into place only once complete: a killed training
leaves no folder that looks like a model (and `rag_app.registry`, which the UI reads, never
lists a half-written run).

Example:
    >>> with staged_run(settings, "minilm-ft-20261125") as tmp:
    ...     model.save(str(tmp))
    ...     write_record(tmp, {...})
    >>> resolve_run(settings, "latest").path
"""

from __future__ import annotations

import os
import re
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rag_app.config import Settings
from rag_app.fsutil import atomic_write_json
from rag_app.registry import Run, find_run, latest, list_runs

__all__ = [
    "Run",
    "latest",
    "list_runs",
    "new_run_name",
    "resolve_run",
    "staged_run",
    "write_record",
]

RUN_FILE = "run.json"


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


def write_record(folder: Path, record: dict[str, Any]) -> None:
    """Write ``run.json`` (the last file of a staged run)."""
    record = dict(record)
    record.setdefault("created", now_iso())
    record.setdefault("run_id", record.get("name"))
    atomic_write_json(Path(folder) / RUN_FILE, record)


def resolve_run(settings: Settings, name: str, kind: str | None = None) -> Run:
    """A run by name or folder name; "latest" / "newest" picks the newest (of `kind`)."""
    if name in ("latest", "newest"):
        run = latest(settings, kind)
        if run is None:
            what = f"{kind} runs" if kind else "runs"
            raise KeyError(f"no {what} in {settings.models_dir}; train one with `rag-app finetune`")
        return run
    run = find_run(settings, name)
    if kind is not None and run.kind != kind:
        raise KeyError(f"run {name!r} is a {run.kind}, not a {kind}")
    return run
