"""Never evaluate on training queries: which model is "fine-tuned", and what it trained on.

The eval drops (or refuses) every query whose normalised text the fine-tuned run trained
on; the run's record names its training pairs in a typed field (``train_file``), so a
renamed key cannot switch the guard off silently.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from eval.sets import norm_query, synth_file, synth_records
from rag_app.errors import RagAppError
from rag_app.runs import RunKind, latest, read_record

if TYPE_CHECKING:
    from rag_app.config import Settings

log = logging.getLogger(__name__)


class TrainingOverlapError(RagAppError, RuntimeError):
    """The eval set shares queries with the fine-tuned model's training data."""


def find_finetuned(settings: Settings) -> Path | None:
    """The newest usable fine-tuned embedder in the workspace (`rag_app.runs.latest`)."""
    run = latest(settings, RunKind.EMBEDDER)
    return run.path if run is not None else None


def training_queries(settings: Settings, model_dir: Path | None) -> tuple[set[str], list[str]]:
    """Normalised texts of the queries the fine-tuned model (or the workspace) trained on.

    Sources: the workspace's synth train split, and the run's own training pairs, the file
    its ``run.json`` names in ``train_file`` (every trainer writes one: synthetic and real
    pairs as they were trained on). Returns (texts, sources read).
    """
    texts: set[str] = set()
    sources: list[str] = []
    files = [synth_file(settings, ("train",))]
    record = read_record(model_dir) if model_dir is not None else None
    if model_dir is not None and record is not None and record.train_file:
        files.append(Path(model_dir) / record.train_file)
    elif model_dir is not None and record is not None:
        log.warning(
            "%s/run.json names no train_file: only the workspace's synth train split "
            "guards this eval against training queries",
            model_dir,
        )
    for path in files:
        if path is None or not path.is_file() or str(path) in sources:
            continue
        texts.update(norm_query(q) for q, _ in synth_records(path))
        sources.append(str(path))
    texts.discard("")
    return texts, sources
