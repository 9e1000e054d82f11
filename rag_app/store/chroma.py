"""Dense vectors in Chroma: one collection per embedding model fingerprint.

Chroma is embedded (`PersistentClient` under `settings.chroma_dir`) by default, or a server
(`HttpClient`) when `settings.retrieval.chroma_url` is set, e.g. one started with
`chroma run --path workspace/chroma --host 127.0.0.1 --port 8000`.

Chroma never embeds anything here: every call passes our own vectors, and the collection
is bound to `PrecomputedEmbeddings`, an embedding function that refuses to run (Chroma's
default one would download an ONNX model). The collection metadata records the model's
fingerprint, name and dimension; using a collection with another model's vectors is a
`ModelMismatchError`, never a silent mix.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlparse

import numpy as np

from rag_app.config import Settings
from rag_app.errors import RagAppError
from rag_app.filters import chroma_metadata
from rag_app.types import Chunk

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
_PAGE = 5000
_CLIENTS: dict[str, Any] = {}
_CLIENT_LOCK = threading.Lock()


class ModelMismatchError(RagAppError, RuntimeError):
    """An index built with one embedding model was used with another."""


class NotIndexedError(RagAppError, RuntimeError):
    """No collection exists for this embedding model yet."""


class ChromaUnavailableError(RagAppError, RuntimeError):
    """The configured Chroma server cannot be reached."""


def _embedding_function_class():
    from chromadb.api.types import EmbeddingFunction

    class PrecomputedEmbeddings(EmbeddingFunction):
        """Marks a collection whose vectors come from rag-app; refuses to embed."""

        def __init__(self) -> None:
            pass

        def __call__(self, input):
            raise RuntimeError(
                "rag-app passes its own embeddings to Chroma; nothing should embed here"
            )

        @staticmethod
        def name() -> str:
            return "rag-app-precomputed"

        def get_config(self) -> dict[str, Any]:
            return {}

        @staticmethod
        def build_from_config(config: dict[str, Any]) -> PrecomputedEmbeddings:
            return PrecomputedEmbeddings()

        def is_legacy(self) -> bool:
            return False

    return PrecomputedEmbeddings


def index_command(model_spec: str | None, dim: int | None = None) -> str:
    """The command that (re)builds the index for a model (at a truncated dimension)."""
    command = f"rag-app index --model {model_spec}" if model_spec else "rag-app index"
    return command + (f" --dim {dim}" if dim else "")


def client_for(settings: Settings):
    """A cached Chroma client: HTTP when `retrieval.chroma_url` is set, else persistent."""
    import chromadb
    from chromadb.config import Settings as ChromaSettings

    url = settings.retrieval.chroma_url
    key = url or str(settings.chroma_dir.resolve())
    with _CLIENT_LOCK:
        client = _CLIENTS.get(key)
        if client is not None:
            return client
        chroma_settings = ChromaSettings(anonymized_telemetry=False)
        if url:
            parsed = urlparse(url if "://" in url else f"http://{url}")
            ssl = parsed.scheme == "https"
            port = parsed.port or (443 if ssl else 8000)
            try:
                client = chromadb.HttpClient(
                    host=parsed.hostname or "127.0.0.1",
                    port=port,
                    ssl=ssl,
                    settings=chroma_settings,
                )
                client.heartbeat()
            except Exception as exc:
                raise ChromaUnavailableError(
                    f"Chroma server at {url} is not reachable ({exc}); start one with "
                    f"`chroma run --path {settings.chroma_dir} --host 127.0.0.1 --port {port}` "
                    "or unset retrieval.chroma_url to use the embedded store"
                ) from exc
        else:
            settings.chroma_dir.mkdir(parents=True, exist_ok=True)
            client = chromadb.PersistentClient(path=key, settings=chroma_settings)
        _CLIENTS[key] = client
        return client


def forget_clients() -> None:
    """Drop cached clients (tests, or after a server restart)."""
    with _CLIENT_LOCK:
        _CLIENTS.clear()


class VectorStore:
    """The Chroma collection of one embedding model.

    Example:
        >>> store = VectorStore.open(settings, emb.fingerprint, emb.dim, model_name=emb.name)
        >>> store.upsert(chunks, emb.encode_documents([c.embedding_text() for c in chunks]))
        >>> store.query(emb.encode_queries(["pump"])[0], k=5)
        [('3f2a...', 0.61), ...]
    """

    def __init__(self, collection, *, fingerprint: str, dim: int, model_name: str, spec: str):
        self.collection = collection
        self.fingerprint = fingerprint
        self.dim = dim
        self.model_name = model_name
        self.spec = spec

    @classmethod
    def open(
        cls,
        settings: Settings,
        embedder_fingerprint: str,
        dim: int,
        create: bool = True,
        *,
        model_name: str = "",
        model_spec: str = "",
        base_fingerprint: str | None = None,
        truncate_dim: int | None = None,
    ) -> VectorStore:
        """The collection for a fingerprint; created when `create`, else it must exist.

        Raises `ModelMismatchError` when the collection holds another dimension, or (with
        `create=False`) when only an index of the same model with other weights exists;
        `NotIndexedError` when this model has no index at all, or none at this truncated
        dimension (`base_fingerprint` / `truncate_dim`: the same weights at full dimension).
        """
        client = client_for(settings)
        name = embedder_fingerprint
        spec = model_spec or model_name
        command = index_command(spec, truncate_dim)
        base = base_fingerprint or embedder_fingerprint
        ef = _embedding_function_class()()
        existing = {c.name: c for c in client.list_collections()}
        if name in existing:
            collection = client.get_collection(name, embedding_function=ef)
        elif create:
            collection = client.get_or_create_collection(
                name,
                configuration={"hnsw": {"space": "cosine"}},
                metadata={
                    "fingerprint": embedder_fingerprint,
                    "model_name": model_name or embedder_fingerprint,
                    "model_spec": spec,
                    "dim": int(dim),
                    "base_fingerprint": base,
                    "truncate_dim": int(truncate_dim or 0),
                    "created_by": "rag-app",
                    "schema": SCHEMA_VERSION,
                },
                embedding_function=ef,
            )
        else:
            dims = sorted(
                {
                    int(m.get("dim") or 0)
                    for m in (c.metadata or {} for c in existing.values())
                    if base in (m.get("base_fingerprint"), m.get("fingerprint"))
                },
                reverse=True,
            )
            if dims:
                raise NotIndexedError(
                    f"no dense index of {model_name or base} at dimension {dim} (indexed "
                    f"dimensions: {', '.join(map(str, dims))}); build it with `{command}` "
                    "or pick an indexed dimension"
                )
            same_model = [
                c
                for c in existing.values()
                if model_name and (c.metadata or {}).get("model_name") == model_name
            ]
            if same_model:
                other = same_model[0].metadata or {}
                raise ModelMismatchError(
                    f"the index for {model_name} was built with other weights "
                    f"(collection {other.get('fingerprint')}, dim {other.get('dim')}) than "
                    f"the model now loaded ({embedder_fingerprint}, dim {dim}); "
                    f"re-index with `{command}`"
                )
            raise NotIndexedError(
                f"no dense index for {model_name or embedder_fingerprint} "
                f"({embedder_fingerprint}); build it with `{command}`"
            )
        meta = collection.metadata or {}
        stored_fp = meta.get("fingerprint", name)
        stored_dim = meta.get("dim")
        if stored_fp != embedder_fingerprint or (stored_dim is not None and stored_dim != dim):
            raise ModelMismatchError(
                f"collection {name} holds vectors of {meta.get('model_name', stored_fp)} "
                f"({stored_fp}, dim {stored_dim}), not of {model_name or embedder_fingerprint} "
                f"({embedder_fingerprint}, dim {dim}); re-index with `{command}`"
            )
        return cls(
            collection,
            fingerprint=embedder_fingerprint,
            dim=int(dim),
            model_name=meta.get("model_name", model_name),
            spec=spec,
        )

    # --- checks --------------------------------------------------------------------------
    def check(self, fingerprint: str, dim: int | None = None, model_name: str = "") -> None:
        """Refuse vectors from another model (by fingerprint) or of another dimension."""
        if fingerprint != self.fingerprint or (dim is not None and dim != self.dim):
            raise ModelMismatchError(
                f"this index holds vectors of {self.model_name} ({self.fingerprint}, "
                f"dim {self.dim}), but the query model is {model_name or fingerprint} "
                f"({fingerprint}, dim {dim}); re-index with "
                f"`{index_command(model_name or None)}` or pick the matching model"
            )

    def _check_dim(self, width: int) -> None:
        if width != self.dim:
            raise ModelMismatchError(
                f"vectors of dimension {width} given to the index of {self.model_name} "
                f"({self.fingerprint}), which holds dimension {self.dim}; re-index with "
                f"`{index_command(self.spec or None)}`"
            )

    # --- writes --------------------------------------------------------------------------
    def upsert(self, chunks: Sequence[Chunk], embeddings: np.ndarray) -> None:
        """Add or replace vectors (with filterable metadata) for `chunks`."""
        if not chunks:
            return
        embeddings = np.asarray(embeddings, dtype=np.float32)
        if embeddings.ndim != 2 or embeddings.shape[0] != len(chunks):
            raise ValueError(f"{len(chunks)} chunks but embeddings of shape {embeddings.shape}")
        self._check_dim(embeddings.shape[1])
        step = self._max_batch()
        for start in range(0, len(chunks), step):
            part = chunks[start : start + step]
            self.collection.upsert(
                ids=[c.id for c in part],
                embeddings=embeddings[start : start + step],
                metadatas=[chroma_metadata(c) for c in part],
            )

    def update_metadata(self, chunks: Sequence[Chunk]) -> None:
        """Refresh metadata (e.g. edited front matter) without re-embedding."""
        step = self._max_batch()
        for start in range(0, len(chunks), step):
            part = chunks[start : start + step]
            self.collection.update(
                ids=[c.id for c in part], metadatas=[chroma_metadata(c) for c in part]
            )

    def delete(self, ids: Sequence[str] | set[str]) -> None:
        ids = list(ids)
        step = self._max_batch()
        for start in range(0, len(ids), step):
            self.collection.delete(ids=ids[start : start + step])

    def _max_batch(self) -> int:
        try:
            return max(1, min(int(self.collection._client.get_max_batch_size()), 5000))
        except Exception:
            return 1000

    # --- reads ---------------------------------------------------------------------------
    def count(self) -> int:
        return int(self.collection.count())

    def ids(self) -> set[str]:
        out: set[str] = set()
        offset = 0
        while True:
            page = self.collection.get(include=[], limit=_PAGE, offset=offset)["ids"]
            out.update(page)
            if len(page) < _PAGE:
                return out
            offset += _PAGE

    def embeddings(self, ids: Sequence[str]) -> dict[str, np.ndarray]:
        """Stored vectors by id (ids not in the collection are left out)."""
        out: dict[str, np.ndarray] = {}
        ids = list(ids)
        for start in range(0, len(ids), _PAGE):
            got = self.collection.get(ids=ids[start : start + _PAGE], include=["embeddings"])
            vectors = got.get("embeddings")
            if vectors is None:
                continue
            for cid, vec in zip(got["ids"], vectors, strict=True):
                out[cid] = np.asarray(vec, dtype=np.float32)
        return out

    def metadatas(self, ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        ids = list(ids)
        for start in range(0, len(ids), _PAGE):
            got = self.collection.get(ids=ids[start : start + _PAGE], include=["metadatas"])
            out.update(zip(got["ids"], got["metadatas"] or [], strict=False))
        return out

    def query(
        self, vector: np.ndarray, k: int, where: dict[str, Any] | None = None
    ) -> list[tuple[str, float]]:
        """Top-k (id, cosine similarity), best first, among vectors matching `where`."""
        vector = np.asarray(vector, dtype=np.float32).reshape(-1)
        self._check_dim(vector.shape[0])
        if k <= 0:
            return []
        result = self.collection.query(
            query_embeddings=vector[None, :],
            n_results=k,
            where=where or None,
            include=["distances"],
        )
        ids = result["ids"][0] if result["ids"] else []
        distances = result["distances"][0] if result.get("distances") else []
        return [(i, 1.0 - float(d)) for i, d in zip(ids, distances, strict=True)]

    def __repr__(self) -> str:
        return f"VectorStore({self.fingerprint}, dim={self.dim})"


def indexed_dims(settings: Settings, base_fingerprint: str) -> list[int]:
    """Dimensions indexed for one model's weights (full and Matryoshka-truncated), largest
    first."""
    dims = set()
    for collection in client_for(settings).list_collections():
        meta = collection.metadata or {}
        mine = base_fingerprint in (meta.get("base_fingerprint"), meta.get("fingerprint"))
        if mine and meta.get("dim"):
            dims.add(int(meta["dim"]))
    return sorted(dims, reverse=True)
