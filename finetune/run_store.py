"""The workspace's trained runs: writing them atomically, listing and resolving them.

A run is ``models_dir/<name>/``: the saved model (sentence-transformers or CrossEncoder
layout, so `rag-app index --model <dir>` and the reranker load it as is), ``run.json``
and a model card ``README.md``. `staged_run` builds all of it in a temporary folder beside
the workspace's cache and renames it into place only once complete: a killed training
leaves no folder that looks like a model (and `rag_app.runs`, which the UI reads, never
lists a half-written run). `write_record` is the one writer of ``run.json``;
`rag_app.runs.read_record` its one reader.

Example:
    >>> with staged_run(settings, "minilm-ft-20261125") as tmp:
    ...     model.save(str(tmp))
    ...     write_record(tmp, RunRecord(kind=RunKind.EMBEDDER, name="minilm-ft-20261125"))
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

from rag_app.config import Settings
from rag_app.fsutil import atomic_write_text
from rag_app.runs import RUN_FILE, RunRecord


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
