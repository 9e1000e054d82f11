"""Cross-encoder reranking, only ever with a trained head.

No reranker weights ship offline (see MODELS.md), so the reranker is either
`settings.models.reranker` (a local CrossEncoder directory or a hub id), or `"auto"`: the
newest trained reranker in the workspace (`settings.models_dir/<run>/` whose `run.json`
says `"kind": "reranker"`, written by the finetune stage). With none, `load_reranker`
returns `None` and a reason the CLI and UI show ("reranking off: ...").

A CrossEncoder built on a bi-encoder such as the bundled MiniLM loads fine but scores with
a randomly initialised classifier. `check_trained` refuses such a directory: its weights must
contain a classification head, and that head must have moved away from its initial
state (BERT-style heads start with an all-zero bias).
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from rag_app.config import Settings
from rag_app.errors import RagAppError
from rag_app.models import (
    ModelNotFoundError,
    model_display_name,
    offline_env_for,
    resolve_device,
    resolve_embedder,
)
from rag_app.types import Hit

log = logging.getLogger(__name__)

DEFAULT_MAX_LENGTH = 256
_CACHE: dict[tuple, Reranker] = {}
_LOCK = threading.Lock()


class UntrainedRerankerError(RagAppError, ValueError):
    """The model directory has no trained classification head."""


class Reranker:
    """Scores (query, passage) pairs with a sentence-transformers `CrossEncoder`.

    Example:
        >>> reranker = Reranker.load("workspace/models/reranker-2026-01-01")
        >>> reranker.score("pump torque", ["Torque the pump bolts to 25 Nm.", "Lunch menu"])
        array([ 3.1, -4.2], dtype=float32)
    """

    def __init__(self, model, *, name: str, batch_size: int = 32) -> None:
        self.model = model
        self.name = name
        self.batch_size = batch_size

    def __repr__(self) -> str:
        return f"Reranker({self.name}, max_length={self.model.max_length})"

    @classmethod
    def load(
        cls,
        spec: str,
        *,
        device: str = "auto",
        max_length: int = DEFAULT_MAX_LENGTH,
        batch_size: int = 32,
        trust_remote_code: bool = False,
    ) -> Reranker:
        """Load (once per process) a trained CrossEncoder; refuses an untrained head."""
        resolved = resolve_embedder(spec)
        offline_env_for(resolved)
        if not resolved.is_hub:
            check_trained(resolved.path)
        device = resolve_device(device)
        key = (resolved.location, device, max_length, trust_remote_code)
        with _LOCK:
            cached = _CACHE.get(key)
            if cached is None:
                from sentence_transformers import CrossEncoder

                model = CrossEncoder(
                    resolved.location,
                    device=device,
                    max_length=max_length,
                    trust_remote_code=trust_remote_code,
                )
                model.eval()
                cached = cls(model, name=model_display_name(resolved), batch_size=batch_size)
                _CACHE[key] = cached
        if cached.batch_size != batch_size:
            return cls(cached.model, name=cached.name, batch_size=batch_size)
        return cached

    def score(self, query: str, passages: Sequence[str]) -> np.ndarray:
        """One relevance score per passage (higher is more relevant)."""
        if not passages:
            return np.zeros(0, dtype=np.float32)
        scores = self.model.predict(
            [(query, p) for p in passages],
            batch_size=self.batch_size,
            show_progress_bar=False,
            convert_to_numpy=True,
        )
        return np.asarray(scores, dtype=np.float32).reshape(len(passages), -1)[:, -1]

    def rerank(self, query: str, hits: list[Hit]) -> list[Hit]:
        """`hits` re-sorted by cross-encoder score, with scores/ranks under "rerank"."""
        scores = self.score(query, [h.chunk.embedding_text() for h in hits])
        order = sorted(range(len(hits)), key=lambda i: (-float(scores[i]), i))
        out = []
        for rank, i in enumerate(order, start=1):
            hit = hits[i]
            hit.scores["rerank"] = float(scores[i])
            hit.ranks["rerank"] = rank
            out.append(hit)
        return out


def check_trained(path: Path) -> None:
    """Raise `UntrainedRerankerError` unless `path` holds a trained classification head."""
    path = Path(path)
    config_file = path / "config.json"
    if not config_file.is_file():
        raise UntrainedRerankerError(f"{path} is not a model directory (no config.json)")
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise UntrainedRerankerError(f"{config_file} is not valid JSON: {exc}") from exc
    architectures = config.get("architectures") or []
    if not any(a.endswith("ForSequenceClassification") for a in architectures):
        raise UntrainedRerankerError(
            f"{path} is not a cross-encoder (architectures: {architectures or 'none'}); "
            "a bi-encoder loaded as a CrossEncoder would score with a random head"
        )
    head = _classifier_tensors(path)
    if head is None:
        raise UntrainedRerankerError(
            f"{path} has no classification head in its weights; train one first "
            "(rag-app finetune's reranker stage)"
        )
    bias = head.get("bias")
    if bias is not None and not np.any(bias):
        raise UntrainedRerankerError(
            f"{path} has an untrained classification head (bias still at its initial zeros); "
            "train it before reranking with it"
        )


def _classifier_tensors(path: Path) -> dict[str, np.ndarray] | None:
    """The classifier's weight/bias from safetensors files (None when there is none)."""
    files = sorted(path.glob("*.safetensors"))
    if not files:
        # .bin weights cannot be inspected without unpickling; trust only a run record.
        from rag_app.runs import RunKind, read_record

        record = read_record(path)
        return {} if record is not None and record.kind is RunKind.RERANKER else None
    from safetensors import safe_open

    found: dict[str, np.ndarray] = {}
    for file in files:
        with safe_open(str(file), framework="np") as handle:
            for key in handle.keys():  # noqa: SIM118 (safe_open is not a mapping)
                if key.startswith(("classifier.", "score.")) or ".classifier." in key:
                    found[key.rsplit(".", 1)[-1]] = handle.get_tensor(key)
    return found or None


def find_trained_reranker(settings: Settings) -> Path | None:
    """The newest usable reranker run (`rag_app.runs.latest`): runs recorded as not
    beating the unreranked order (`"beats_no_rerank": false`) are skipped, so 'auto' never
    makes results worse. A path in `models.reranker` still uses such a run when asked."""
    from rag_app.runs import RunKind, latest

    run = latest(settings, RunKind.RERANKER)
    return run.path if run is not None else None


def load_reranker(settings: Settings) -> tuple[Reranker | None, str]:
    """The configured reranker, or None with the reason reranking is off.

    `models.reranker`: unset -> off; "auto" -> the newest trained reranker in the
    workspace; anything else -> that CrossEncoder (path or hub id). The reason string
    describes what is used when a reranker is returned.
    """
    spec = settings.models.reranker
    if not spec:
        return None, (
            "reranking off: no reranker configured (set models.reranker to a trained "
            "CrossEncoder path, or to 'auto' to use one trained by `rag-app finetune`)"
        )
    if spec.strip().lower() == "auto":
        found = find_trained_reranker(settings)
        if found is None:
            from rag_app.runs import RunKind, list_runs

            rejected = [r.name for r in list_runs(settings, kind=RunKind.RERANKER)]
            if rejected:
                return None, (
                    "reranking off: the trained reranker(s) "
                    f"{', '.join(sorted(rejected))} did not beat the unreranked order on "
                    "validation (set models.reranker to a run's path to use one anyway)"
                )
            return None, (
                f"reranking off: models.reranker is 'auto' but no trained reranker is in "
                f"{settings.models_dir} (train one with `rag-app finetune`)"
            )
        spec = str(found)
    max_length = settings.retrieval.rerank_max_length
    try:
        reranker = Reranker.load(
            spec,
            device=settings.models.device,
            max_length=max_length,
            trust_remote_code=settings.models.trust_remote_code,
        )
    except (UntrainedRerankerError, ModelNotFoundError) as exc:
        return None, f"reranking off: {exc}"
    except OSError as exc:
        return None, f"reranking off: cannot load reranker {spec} ({exc})"
    return reranker, f"reranking with {reranker.name}"
