"""The embedding model: a SentenceTransformer that knows exactly which weights it runs.

`Embedder.fingerprint` is the display name plus a hash of the weight files
(e.g. `all-MiniLM-L6-v2-5076c6045d31`). Each fingerprint gets its own Chroma collection, so
vectors of two models (or of two fine-tuning runs that share a name) never mix.

Models load once per process (`Embedder.load` caches them), which is what lets the chat UI
hold a baseline and a fine-tuned retriever side by side without paying twice.

A spec that names a query-adapter run (`rag_app.query_adapter`) loads its base model and
shares it: the adapter changes query vectors only, so it keeps the base model's fingerprint
and serves from the base model's collection.

Example:
    >>> emb = Embedder.load("all-MiniLM-L6-v2")
    >>> emb.encode_queries(["hydraulic pump overhaul"]).shape
    (1, 384)
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rag_app.models import (
    model_display_name,
    offline_env_for,
    resolve_device,
    resolve_embedder,
    weights_fingerprint,
)
from rag_app.query_adapter import AdapterError, QueryAdapter, is_adapter_dir

log = logging.getLogger(__name__)

_CACHE: dict[tuple, Embedder] = {}
_LOCK = threading.Lock()


def _slug(name: str, limit: int = 60) -> str:
    """Safe in a Chroma collection name: [A-Za-z0-9._-], starting and ending alphanumeric."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", name)[:limit]
    slug = re.sub(r"^[^A-Za-z0-9]+|[^A-Za-z0-9]+$", "", slug)
    return slug or "model"


def _files_stamp(root: str) -> tuple:
    """Sizes and mtimes of a model directory's top-level files: a retrained dir reloads."""
    path = Path(root)
    if not path.is_dir():
        return ()
    return tuple(
        sorted(
            (p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in path.iterdir() if p.is_file()
        )
    )


class Embedder:
    """A loaded SentenceTransformer with its name, fingerprint and output dimension.

    Attributes:
        name: human name (bundled name, fine-tuning run id, or directory name).
        spec: what the user asked for (a name, path or hub id); use it in commands.
        fingerprint: `name-weightshash[-dDIM]`, safe as a Chroma collection name.
        dim: embedding dimension (after Matryoshka truncation when `truncate_dim` is set).
        model: the underlying `sentence_transformers.SentenceTransformer`.
    """

    def __init__(
        self,
        model,
        *,
        name: str,
        spec: str,
        fingerprint: str,
        dim: int,
        truncate_dim: int | None = None,
        full: Embedder | None = None,
        query_adapter: QueryAdapter | None = None,
    ) -> None:
        self.model = model
        self.name = name
        self.spec = spec
        self.fingerprint = fingerprint
        self.dim = dim
        self.truncate_dim = truncate_dim
        # the same weights at their native dimension (self when not truncated)
        self.full: Embedder = full or self
        # applied to query vectors only (at full dimension, before any truncation)
        self.query_adapter = query_adapter
        self._stamp: tuple | None = None  # an adapter run's file stamp, for the cache

    def __repr__(self) -> str:
        return f"Embedder({self.fingerprint}, dim={self.dim}, device={self.model.device})"

    @classmethod
    def load(
        cls,
        spec: str,
        *,
        device: str = "auto",
        trust_remote_code: bool = False,
        truncate_dim: int | None = None,
    ) -> Embedder:
        """Load (once per process) the model a spec resolves to; see `rag_app.models`.

        `truncate_dim` (Matryoshka) keeps the first N dimensions of every vector (then
        re-normalises): same weights, shared with the full model, but its own fingerprint
        (`...-dN`) and so its own collection. A `truncate_dim` equal to the native dimension
        is the full model; a larger one is a ValueError.
        """
        if truncate_dim is None and is_adapter_dir(spec):
            return cls._load_adapter(spec, device=device, trust_remote_code=trust_remote_code)
        if truncate_dim is not None:
            full = cls.load(spec, device=device, trust_remote_code=trust_remote_code)
            if truncate_dim == full.dim:
                return full
            if not 1 <= truncate_dim < full.dim:
                raise ValueError(
                    f"{full.name} has {full.dim} dimensions; cannot truncate to {truncate_dim}"
                )
            adapter_path = full.query_adapter.path if full.query_adapter else None
            key: tuple = (
                "truncated",
                full.fingerprint,
                adapter_path,
                str(full.model.device),
                truncate_dim,
            )
            with _LOCK:
                cached = _CACHE.get(key)
                if cached is None or cached.full is not full:
                    cached = cls(
                        full.model,
                        name=full.name,
                        spec=spec,
                        fingerprint=f"{full.fingerprint}-d{truncate_dim}",
                        dim=truncate_dim,
                        truncate_dim=truncate_dim,
                        full=full,
                        query_adapter=full.query_adapter,
                    )
                    _CACHE[key] = cached
                return cached
        resolved = resolve_embedder(spec)
        offline_env_for(resolved)
        device = resolve_device(device)
        key = (
            resolved.location,
            device,
            trust_remote_code,
            truncate_dim,
            None if resolved.is_hub else _files_stamp(resolved.location),
        )
        with _LOCK:
            cached = _CACHE.get(key)
            if cached is not None:
                return cached
            from sentence_transformers import SentenceTransformer

            model = SentenceTransformer(
                resolved.location, device=device, trust_remote_code=trust_remote_code
            )
            model.eval()
            getter = (
                getattr(model, "get_embedding_dimension", None)
                or model.get_sentence_embedding_dimension
            )
            found_dim = getter()
            if not found_dim:
                raise ValueError(f"{resolved.location}: the model does not say its dimension")
            dim = int(found_dim)
            name = model_display_name(resolved)
            fingerprint = f"{_slug(name)}-{weights_fingerprint(resolved)}"
            embedder = cls(model, name=name, spec=spec, fingerprint=fingerprint, dim=dim)
            log.info("loaded embedder %s on %s", fingerprint, device)
            _CACHE[key] = embedder
            return embedder

    @classmethod
    def _load_adapter(cls, spec: str, *, device: str, trust_remote_code: bool) -> Embedder:
        """The base model of an adapter run, wearing the adapter on its query side."""
        adapter = QueryAdapter.load(spec)
        base = cls.load(adapter.base_model, device=device, trust_remote_code=trust_remote_code)
        if adapter.base_fingerprint and adapter.base_fingerprint != base.fingerprint:
            raise AdapterError(
                f"the adapter {spec} was trained on {adapter.base_fingerprint}, but "
                f"{adapter.base_model!r} now loads {base.fingerprint}: retrain the adapter "
                "(`rag-app finetune --adapter`) for these weights"
            )
        if adapter.dim != base.dim:
            raise AdapterError(f"adapter {spec} is {adapter.dim}-d; {base.name} is {base.dim}-d")
        folder = adapter.path or Path(spec)
        key = ("adapter", str(folder.resolve()), base.fingerprint, str(base.model.device))
        with _LOCK:
            stamp = _files_stamp(str(folder))
            cached = _CACHE.get(key)
            if cached is not None and cached._stamp == stamp:
                return cached
            embedder = cls(
                base.model,
                name=folder.name,
                spec=spec,
                fingerprint=base.fingerprint,
                dim=base.dim,
                query_adapter=adapter,
            )
            embedder._stamp = stamp
            _CACHE[key] = embedder
            return embedder

    # --- encoding ------------------------------------------------------------------------
    def encode_queries(self, texts: Sequence[str]) -> np.ndarray:
        """Query vectors (the model's query prompt, if it has one), float32, unit length."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        encode = getattr(self.model, "encode_query", None) or self.model.encode
        adapter = self.query_adapter
        vectors = encode(
            list(texts),
            batch_size=max(1, min(len(texts), 64)),
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
            truncate_dim=None if adapter else self.truncate_dim,
        )
        if adapter is not None:
            vectors = adapter.apply(vectors)
            if self.truncate_dim:
                vectors = truncate(vectors, self.truncate_dim)
        return np.ascontiguousarray(vectors, dtype=np.float32)

    def encode_documents(
        self,
        texts: Sequence[str],
        *,
        batch_size: int = 32,
        progress: bool = False,
        pool: EncodePool | None = None,
    ) -> np.ndarray:
        """Passage vectors, float32, unit length, in the order of `texts`.

        Texts are sorted longest first before batching, so each batch pads to a similar
        length (on a CPU, padding is most of the cost of mixed-length batches); the
        original order is restored afterwards. With `pool` (`start_pool`), the sorted texts
        are spread over its processes in runs of `batch_size`; the vectors are the same.
        """
        n = len(texts)
        if n == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        import torch
        from tqdm.auto import tqdm

        encode = getattr(self.model, "encode_document", None) or self.model.encode
        order = np.argsort([-len(t) for t in texts], kind="stable")
        out = np.empty((n, self.dim), dtype=np.float32)
        options = {
            "normalize_embeddings": True,
            "convert_to_numpy": True,
            "show_progress_bar": False,
            "truncate_dim": self.truncate_dim,
        }
        if pool is not None:
            out[order] = encode(
                [texts[i] for i in order],
                batch_size=batch_size,
                pool=pool.handle,
                chunk_size=batch_size,
                **options,
            )
            return out
        bar = tqdm(total=n, desc="embed", unit="chunk", disable=not progress)
        with torch.inference_mode():
            for start in range(0, n, batch_size):
                idx = order[start : start + batch_size]
                out[idx] = encode([texts[i] for i in idx], batch_size=len(idx), **options)
                bar.update(len(idx))
        bar.close()
        return out

    @contextlib.contextmanager
    def start_pool(self, processes: int) -> Iterator[EncodePool | None]:
        """Worker processes for `encode_documents` (sentence-transformers' multi-process pool).

        On CUDA, one process per visible GPU (at most `processes`); elsewhere `processes`
        CPU workers, each given its share of the cores (torch would otherwise start as many
        threads as cores in every worker, and oversubscribed threads spin). Yields None when
        one process is asked for or only one device exists: then encoding stays in-process.
        """
        import torch

        if processes <= 1:
            yield None
            return
        device = self.model.device
        if device.type == "cuda":
            devices = [f"cuda:{i}" for i in range(min(processes, torch.cuda.device_count()))]
        else:
            devices = ["cpu"] * processes
        if len(devices) <= 1:
            yield None
            return
        threads = max(1, (os.cpu_count() or 1) // len(devices))
        previous = os.environ.get("OMP_NUM_THREADS")
        os.environ["OMP_NUM_THREADS"] = str(threads)  # read by torch in each spawned worker
        try:
            handle = self.model.start_multi_process_pool(target_devices=devices)
        finally:
            if previous is None:
                os.environ.pop("OMP_NUM_THREADS", None)
            else:
                os.environ["OMP_NUM_THREADS"] = previous
        try:
            yield EncodePool(handle, devices)
        finally:
            self.model.stop_multi_process_pool(handle)
            self.model.to(device)  # starting the pool moved the (cached) model to the CPU


@dataclass(frozen=True)
class EncodePool:
    """A started multi-process pool and the devices of its workers."""

    handle: dict
    devices: list[str]


def truncate(vectors: np.ndarray, dim: int) -> np.ndarray:
    """The first `dim` dimensions of (unit) vectors, re-normalised to unit length."""
    cut = np.asarray(vectors, dtype=np.float32)[..., :dim]
    norms = np.linalg.norm(cut, axis=-1, keepdims=True)
    return np.ascontiguousarray(cut / np.maximum(norms, 1e-12), dtype=np.float32)


def clear_cache() -> None:
    """Forget loaded models (tests; or after a model directory was replaced)."""
    with _LOCK:
        _CACHE.clear()
