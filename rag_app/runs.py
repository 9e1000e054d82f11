"""The trained runs of a workspace: the `run.json` contract and its one reader.

A run is a directory `models_dir/<name>/` holding the saved model beside a `run.json`.
`RunRecord` is that file's schema; `read_record` is the only code that parses it (the UI,
CLI, eval, reranker loader and model names all go through `read_run` / `read_record`), and
`finetune.publish.write_record` the only code that writes it. `finetune` writes runs
atomically (a run directory only appears once complete); this module only reads them, so
`rag_app` never depends on `finetune`.

Trainers add their own details (recipe candidates, adapter history, ...) beside the shared
fields: the schema keeps unknown keys (`extra="allow"`) so a run written by a newer version
still lists, and `rag-app models --json` shows them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from rag_app.config import Settings

log = logging.getLogger(__name__)

RUN_FILE = "run.json"


class RunKind(StrEnum):
    """What a run serves: query/passage embeddings, or reranking scores."""

    EMBEDDER = "embedder"
    RERANKER = "reranker"


class Method(StrEnum):
    """How an embedder run was trained: all weights, or a small adapter on query vectors
    (served from the base model's index, so it needs no re-index)."""

    FULL = "full"
    ADAPTER = "adapter"


class Verdict(StrEnum):
    """Whether a run should be used, and on what evidence. One wording for the CLI, the
    chat's retriever labels and the model card."""

    RECOMMENDED = "recommended"  # beat the base model on held-out real questions
    UNVERIFIED = "unverified"  # beat it on synthetic validation only
    NOT_RECOMMENDED = "not recommended"


class RunRecord(BaseModel):
    """`run.json`: what every trainer writes (`finetune.publish.run_record`), typed.

    Fields default to "unknown" so a run written by hand or by an older version still reads;
    `kind` is the one field without which a folder is not a run.
    """

    model_config = ConfigDict(extra="allow")

    kind: RunKind
    name: str = ""
    run_id: str = ""
    method: Method = Method.FULL
    adapter_kind: str | None = None  # linear | mlp, for Method.ADAPTER
    base_model: str = ""
    base_fingerprint: str = ""
    base_weights: str = ""
    created: str = ""
    corpus: str = ""
    metrics: dict[str, Any] = {}
    recommended: bool = False
    verified: bool = False  # scored on real labelled questions, not only synthetic ones
    validation: str = "synthetic"
    train_pairs: int = 0
    val_pairs: int = 0
    train_file: str | None = None  # the eval's leak guard reads the run's own train split
    val_file: str | None = None
    llm: str | None = None
    prompt_version: str | int | None = None
    data_fingerprint: str | None = None  # the training job; an equal one is not retrained
    device: str = ""
    seed: int | None = None
    settings: dict[str, Any] = {}
    data: dict[str, Any] = {}
    guard: dict[str, Any] = {}
    labelled_eval: str | None = None
    fusion: dict[str, Any] = {}
    recipe: str | None = None
    selection: str | None = None
    candidates: list[dict[str, Any]] = []
    steps: int = 0
    train_seconds: float = 0.0
    eval_seconds: float = 0.0
    pairs_per_s: float = 0.0
    beats_no_rerank: bool | None = None  # rerankers: None when never measured

    @property
    def verdict(self) -> Verdict:
        if not self.recommended:
            return Verdict.NOT_RECOMMENDED
        return Verdict.RECOMMENDED if self.verified else Verdict.UNVERIFIED

    @property
    def verdict_text(self) -> str:
        """The verdict with its evidence, as one line."""
        if self.verdict is Verdict.RECOMMENDED:
            return "recommended (beats the base model on the labelled set)"
        if self.verdict is Verdict.UNVERIFIED:
            return "unverified (synthetic validation only)"
        return f"not recommended (no gain on {self.evidence})"

    @property
    def evidence(self) -> str:
        """What the verdict was decided on."""
        return "the labelled set" if self.verified else "validation"

    @property
    def label(self) -> str:
        """ "embedder", "embedder (linear query adapter)" or "reranker"."""
        if self.method is Method.ADAPTER:
            kind = f"{self.adapter_kind} " if self.adapter_kind else ""
            return f"{self.kind} ({kind}query adapter)"
        return str(self.kind)


def read_record(folder: Path) -> RunRecord | None:
    """The `run.json` of `folder`, or None when there is none or it is unreadable (logged:
    a damaged run is skipped, never half-read)."""
    path = Path(folder) / RUN_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as exc:
        log.warning("ignoring run %s: unreadable %s (%s)", folder, RUN_FILE, exc)
        return None
    try:
        return RunRecord.model_validate_json(text)
    except ValidationError as exc:
        problem = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'file'}: {e['msg']}" for e in exc.errors()[:3]
        )
        log.warning("ignoring run %s: %s does not hold a run (%s)", folder, RUN_FILE, problem)
        return None


@dataclass(frozen=True)
class Run:
    """One trained model in the workspace: its folder and its record."""

    path: Path
    record: RunRecord

    @property
    def name(self) -> str:
        return self.record.name or self.path.name

    @property
    def kind(self) -> RunKind:
        return self.record.kind

    @property
    def created(self) -> str:
        return self.record.created

    @property
    def metrics(self) -> dict[str, Any]:
        return self.record.metrics


def read_run(path: Path) -> Run | None:
    """The run in `path`, or None when it has no readable run.json."""
    record = read_record(path)
    return Run(path, record) if record is not None else None


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
    if run.kind is RunKind.RERANKER:
        return run.record.beats_no_rerank is not False
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
