"""`rag-app index`: chunks -> BM25 index + the embedding model's Chroma collection.

Incremental and resumable: only chunks missing from the collection are embedded, in
batches that are upserted as soon as they are encoded, so a run killed half-way keeps
what it did and the next run embeds the rest. Chunks no longer in the workspace are
deleted; metadata edited without a text change (front matter) is refreshed in place.
Re-running with nothing changed does nothing and says so.

`dim` (Matryoshka) indexes the model's vectors truncated to their first `dim` dimensions in
a collection of its own; when the full-dimension collection already holds a chunk, its
stored vector is truncated instead of embedding the text again.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rag_app import chunkstore
from rag_app.config import Settings
from rag_app.embedder import Embedder, truncate
from rag_app.filters import chroma_metadata
from rag_app.store.bm25 import BM25Index
from rag_app.store.chroma import ModelMismatchError, NotIndexedError, VectorStore

log = logging.getLogger(__name__)

# Chunks embedded per upsert: big enough to batch well, small enough to lose little when killed.
UPSERT_EVERY = 128


@dataclass
class IndexReport:
    """What one index run did."""

    model: str
    fingerprint: str
    chunks: int
    embedded: int = 0
    dim: int = 0
    reused: int = 0  # truncated from the full-dimension collection instead of embedded
    deleted: int = 0
    metadata_updated: int = 0
    bm25: str = "loaded"  # "loaded", "built" or "rebuilt" (was damaged)
    processes: int = 1  # encoding processes (models.embed_processes)
    seconds: float = 0.0
    chunks_per_s: float = 0.0

    @property
    def changed(self) -> bool:
        return bool(self.embedded or self.deleted or self.metadata_updated) or self.bm25 != "loaded"


@contextlib.contextmanager
def _workspace_lock(path: Path) -> Iterator[None]:
    """One index run per workspace at a time (advisory lock; released if the process dies)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: no lock
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            raise RuntimeError(
                f"another `rag-app index` is running on {path.parent} (lock {path.name})"
            ) from exc
        handle.write(str(os.getpid()))
        handle.flush()
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def run(
    settings: Settings,
    model: str | None = None,
    progress: bool = True,
    dim: int | None = None,
) -> IndexReport:
    """Bring the BM25 index and `model`'s collection up to date with the workspace chunks.

    `dim`: index at this truncated (Matryoshka) dimension; default `retrieval.model_dims` /
    `retrieval.dim`, else the model's full dimension.
    """
    from tqdm.auto import tqdm

    from rag_app.retrieve import resolve_dim

    started = time.perf_counter()
    spec = model or settings.models.embedder
    dim = dim if dim is not None else resolve_dim(settings, spec)
    chunks = chunkstore.load_chunks(settings.chunks_path, settings.manifest_path)
    with _workspace_lock(settings.workspace / ".index.lock"):
        _, bm25_status = BM25Index.load_or_build(settings.bm25_dir, chunks)
        embedder = Embedder.load(
            spec,
            device=settings.models.device,
            trust_remote_code=settings.models.trust_remote_code,
            truncate_dim=dim,
        )
        store = VectorStore.open(
            settings,
            embedder.fingerprint,
            embedder.dim,
            create=True,
            model_name=embedder.name,
            model_spec=spec,
            base_fingerprint=embedder.full.fingerprint,
            truncate_dim=embedder.truncate_dim,
        )
        full_store = None
        if embedder.truncate_dim:
            with contextlib.suppress(NotIndexedError, ModelMismatchError):
                full_store = VectorStore.open(
                    settings,
                    embedder.full.fingerprint,
                    embedder.full.dim,
                    create=False,
                    model_name=embedder.name,
                    model_spec=spec,
                )
        report = IndexReport(
            model=embedder.name,
            fingerprint=embedder.fingerprint,
            chunks=len(chunks),
            bm25=bm25_status,
            dim=embedder.dim,
        )
        wanted = {c.id: c for c in chunks}
        present = store.ids()
        stale = present - wanted.keys()
        if stale:
            store.delete(sorted(stale))
            report.deleted = len(stale)

        kept = [c for c in chunks if c.id in present]
        if kept:
            stored = store.metadatas([c.id for c in kept])
            changed = [c for c in kept if stored.get(c.id) != chroma_metadata(c)]
            if changed:
                store.update_metadata(changed)
                report.metadata_updated = len(changed)

        # Longest first: batches pad to similar lengths, and the ETA errs on the safe side.
        missing = sorted(
            (c for c in chunks if c.id not in present),
            key=lambda c: len(c.embedding_text()),
            reverse=True,
        )
        batch_size = settings.models.embed_batch_size
        processes = settings.models.embed_processes if len(missing) > UPSERT_EVERY else 1
        embed_started = time.perf_counter()
        with (
            embedder.start_pool(processes) as pool,
            tqdm(
                total=len(missing),
                desc=f"index {embedder.name}",
                unit="chunk",
                disable=not progress or not missing,
            ) as bar,
        ):
            # with a pool, each upsert gives every worker a few batches
            step = UPSERT_EVERY * (len(pool.devices) if pool else 1)
            if pool:
                report.processes = len(pool.devices)
            for start in range(0, len(missing), step):
                part = missing[start : start + step]
                known = full_store.embeddings([c.id for c in part]) if full_store else {}
                if known and len(known) == len(part):
                    vectors = truncate(np.stack([known[c.id] for c in part]), embedder.dim)
                    report.reused += len(part)
                else:
                    vectors = embedder.encode_documents(
                        [c.embedding_text() for c in part], batch_size=batch_size, pool=pool
                    )
                store.upsert(part, vectors)
                report.embedded += len(part)
                bar.update(len(part))
        if report.embedded:
            report.chunks_per_s = report.embedded / (time.perf_counter() - embed_started)
    report.seconds = time.perf_counter() - started
    log.info("index %s: %s", embedder.fingerprint, report)
    return report
