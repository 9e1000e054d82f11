"""A query-side adapter: a small transform applied to query vectors only.

Adapter-only fine-tuning (`rag-app finetune --adapter`) freezes the embedder and learns a
map from the base model's query vectors to better ones. Document vectors stay exactly the
base model's, so an adapter run serves from the base model's existing Chroma collection: no
re-index, and switching to it in the chat is instant.

A run folder holds ``adapter.json`` (format, kind, base model and its weights fingerprint)
and ``adapter.safetensors`` (the weights; safetensors, never pickle, since runs get shared).
Serving needs numpy only; `finetune.adapter` trains the weights with torch.

Kinds (both start as the identity, so an untrained adapter changes nothing):
- ``linear``: ``q' = W q + b`` with ``W = I`` and ``b = 0`` at the start;
- ``mlp``: ``q' = q + W2 gelu(W1 q + b1) + b2`` with ``W2 = 0`` at the start.
The output is re-normalised to unit length, like every vector the app stores.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rag_app.errors import RagAppError

CONFIG_FILE = "adapter.json"
WEIGHTS_FILE = "adapter.safetensors"
FORMAT = 1
KINDS = {"linear": ("weight", "bias"), "mlp": ("w1", "b1", "w2", "b2")}


class AdapterError(RagAppError, ValueError):
    """An adapter folder that cannot be served (damaged, or for other base weights)."""


def is_adapter_dir(path: str | Path) -> bool:
    """True when `path` is a folder holding a query adapter (not a full model)."""
    p = Path(path).expanduser()
    return p.is_dir() and (p / CONFIG_FILE).is_file()


def _gelu(x: np.ndarray) -> np.ndarray:
    # the tanh form, as torch.nn.functional.gelu(approximate="tanh") computes it in training
    return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))


@dataclass(frozen=True)
class QueryAdapter:
    """Loaded adapter weights and what they were trained on top of."""

    kind: str
    dim: int
    base_model: str
    base_fingerprint: str
    weights: dict[str, np.ndarray]
    path: Path | None = None

    @classmethod
    def load(cls, path: str | Path) -> QueryAdapter:
        """Read and check an adapter folder; `AdapterError` says what is wrong with it."""
        from safetensors import SafetensorError
        from safetensors.numpy import load_file

        folder = Path(path).expanduser()
        try:
            config = json.loads((folder / CONFIG_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise AdapterError(
                f"{folder / CONFIG_FILE}: unreadable adapter config ({exc})"
            ) from exc
        if not isinstance(config, dict) or config.get("format") != FORMAT:
            raise AdapterError(
                f"{folder / CONFIG_FILE}: not an adapter of format {FORMAT} "
                f"(found {config.get('format') if isinstance(config, dict) else config!r})"
            )
        kind = config.get("kind")
        if kind not in KINDS:
            raise AdapterError(f"{folder}: unknown adapter kind {kind!r}; known: {sorted(KINDS)}")
        try:
            weights = load_file(str(folder / WEIGHTS_FILE))
        except (OSError, SafetensorError) as exc:
            raise AdapterError(f"{folder / WEIGHTS_FILE}: unreadable weights ({exc})") from exc
        adapter = cls(
            kind=kind,
            dim=int(config.get("dim", 0)),
            base_model=str(config.get("base_model", "")),
            base_fingerprint=str(config.get("base_fingerprint", "")),
            weights={k: np.asarray(v, dtype=np.float32) for k, v in weights.items()},
            path=folder,
        )
        adapter._check_shapes()
        if not adapter.base_model:
            raise AdapterError(f"{folder / CONFIG_FILE}: no base_model")
        return adapter

    def _check_shapes(self) -> None:
        missing = [k for k in KINDS[self.kind] if k not in self.weights]
        if missing:
            raise AdapterError(f"{self.path}: adapter weights lack {', '.join(missing)}")
        d = self.dim
        w = self.weights
        if self.kind == "linear":
            ok = w["weight"].shape == (d, d) and w["bias"].shape == (d,)
        else:
            h = w["w1"].shape[0]
            ok = (
                w["w1"].shape == (h, d)
                and w["b1"].shape == (h,)
                and w["w2"].shape == (d, h)
                and w["b2"].shape == (d,)
            )
        if not ok or d <= 0:
            shapes = {k: tuple(v.shape) for k, v in w.items()}
            raise AdapterError(f"{self.path}: adapter weights {shapes} do not fit dim {d}")

    def apply(self, queries: np.ndarray) -> np.ndarray:
        """Transformed, unit-length query vectors (float32), same shape as `queries`."""
        q = np.asarray(queries, dtype=np.float32)
        if q.shape[-1] != self.dim:
            raise AdapterError(f"adapter expects {self.dim}-dimensional queries, got {q.shape[-1]}")
        w = self.weights
        if self.kind == "linear":
            out = q @ w["weight"].T + w["bias"]
        else:
            out = q + _gelu(q @ w["w1"].T + w["b1"]) @ w["w2"].T + w["b2"]
        norms = np.linalg.norm(out, axis=-1, keepdims=True)
        return np.ascontiguousarray(out / np.maximum(norms, 1e-12), dtype=np.float32)


def save(
    folder: Path,
    kind: str,
    weights: dict[str, np.ndarray],
    *,
    base_model: str,
    base_fingerprint: str,
    extra: dict[str, Any] | None = None,
) -> None:
    """Write an adapter folder (config + safetensors weights); the caller stages atomicity."""
    from safetensors.numpy import save_file

    if kind not in KINDS:
        raise ValueError(f"unknown adapter kind {kind!r}")
    arrays = {k: np.ascontiguousarray(weights[k], dtype=np.float32) for k in KINDS[kind]}
    dim = int(arrays["bias" if kind == "linear" else "b2"].shape[0])
    folder.mkdir(parents=True, exist_ok=True)
    save_file(arrays, str(folder / WEIGHTS_FILE))
    config = {
        "format": FORMAT,
        "kind": kind,
        "dim": dim,
        "base_model": base_model,
        "base_fingerprint": base_fingerprint,
        **(extra or {}),
    }
    (folder / CONFIG_FILE).write_text(json.dumps(config, indent=2), encoding="utf-8")
