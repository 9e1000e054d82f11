"""The embedding map of the eval report: a 2-D PCA of chunk vectors under each model, with
how much the chunks clump, and short labels for the ids it shows."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from eval.sets import EvalSet

log = logging.getLogger(__name__)


def labels_for(eval_set: EvalSet, ids: Iterable[str]) -> dict[str, str]:
    """Short human labels for ids (passage title + start of text, or the doc path)."""
    wanted = set(ids)
    if eval_set.granularity == "doc":
        return {i: i for i in wanted}
    try:
        from rag_app import chunkstore

        chunks = chunkstore.load_chunks(
            eval_set.settings.chunks_path, eval_set.settings.manifest_path
        )
    except Exception:
        return {i: i for i in wanted}
    out = {}
    for chunk in chunks:
        if chunk.id in wanted:
            head = f"{chunk.title}: " if chunk.title else f"{chunk.doc_id}: "
            text = " ".join(chunk.text.split())
            out[chunk.id] = head + (text[:110] + "…" if len(text) > 110 else text)
    for i in wanted - out.keys():
        out[i] = i
    return out


def pca_map(
    eval_set: EvalSet, models: Mapping[str, str], sample: int, seed: int
) -> dict[str, Any] | None:
    """2-D PCA of a sample of chunk vectors under each model, with clumping statistics.

    ``mean_cos`` is the mean pairwise cosine similarity of the sample (anisotropy: a model
    that clumps everything together has a high value); ``mean_nn_cos`` the mean similarity to
    each point's nearest neighbour.
    """
    try:
        from rag_app import chunkstore
        from rag_app.embedder import Embedder
        from rag_app.store.chroma import VectorStore

        chunks = chunkstore.load_chunks(
            eval_set.settings.chunks_path, eval_set.settings.manifest_path
        )
    except Exception as exc:
        log.info("no embedding map: %s", exc)
        return None
    if len(chunks) < 3:
        return None
    rng = np.random.default_rng(seed)
    picked = sorted(rng.choice(len(chunks), size=min(sample, len(chunks)), replace=False))
    ids = [chunks[i].id for i in picked]
    groups = [chunks[i].title or chunks[i].doc_id for i in picked]
    out: dict[str, Any] = {"ids": ids, "groups": groups, "models": {}}
    settings = eval_set.settings
    for role, spec in models.items():
        try:
            embedder = Embedder.load(spec, device=settings.models.device)
            store = VectorStore.open(
                settings, embedder.fingerprint, embedder.dim, create=False, model_spec=spec
            )
            got = store.collection.get(ids=ids, include=["embeddings"])
            vectors = dict(zip(got["ids"], got["embeddings"], strict=True))
            matrix = np.asarray([vectors[i] for i in ids], dtype=np.float64)
        except Exception as exc:
            log.info("no embedding map for %s: %s", role, exc)
            continue
        norms = np.linalg.norm(matrix, axis=1, keepdims=True)
        unit = matrix / np.where(norms == 0, 1, norms)
        sims = unit @ unit.T
        n = len(ids)
        off = sims[~np.eye(n, dtype=bool)]
        np.fill_diagonal(sims, -np.inf)
        centred = unit - unit.mean(axis=0)
        _, s, vt = np.linalg.svd(centred, full_matrices=False)
        points = centred @ vt[:2].T
        explained = (s[:2] ** 2).sum() / max((s**2).sum(), 1e-12)
        out["models"][role] = {
            "spec": spec,
            "points": np.round(points, 4).tolist(),
            "mean_cos": float(off.mean()),
            "mean_nn_cos": float(sims.max(axis=1).mean()),
            "explained_variance_2d": float(explained),
        }
    return out if out["models"] else None
