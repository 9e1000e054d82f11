"""BM25 over the chunks: Okapi BM25 as rank-bm25 defines it, scored with numpy.

Tokenisation (`tokenize`): lowercase, English stop words dropped, Snowball (PyStemmer)
stems for words. Codes keep their identity: "NW-F-160" yields the whole code `nw-f-160`, its
joined form `nwf160` (codes containing a digit) and its parts `nw`, `f`, `160`, so a query
for the full code ranks exact matches first while "PT 220A" still finds "PT-220A".

Scoring follows `rank_bm25.BM25Okapi` exactly (same k1, b, epsilon floor for negative idf;
a test checks equality with `BM25Okapi.get_scores`), but from a precomputed postings
layout: one numpy slice per query term and a `bincount`, not a Python loop over documents.

Persistence is JSON (never pickle): `bm25.json` holds the tokenised documents, and
`manifest.json` holds that file's sha256 and a hash of the chunk set it was built from. A
damaged file is detected by the checksum (`CorruptWorkspaceError`); `load_or_build`
rebuilds it. The index is rebuilt only when the chunk set changes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Iterable, Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np

from rag_app.chunkstore import CorruptWorkspaceError
from rag_app.fsutil import atomic_write_bytes, atomic_write_json, sha256_bytes
from rag_app.ir import stopwords
from rag_app.types import Chunk

log = logging.getLogger(__name__)

TOKENIZER_VERSION = 1
FORMAT_VERSION = 1
INDEX_FILE = "bm25.json"
MANIFEST_FILE = "manifest.json"

# The base English list (`rag_app.ir.stopwords.ENGLISH`); changing it needs a TOKENIZER_VERSION bump.
STOP_WORDS = stopwords.BM25

# Runs of letters/digits, optionally joined by - _ . / into one compound ("nw-f-160").
_TOKEN = re.compile(r"[^\W_]+(?:[-_./][^\W_]+)*")
_PART = re.compile(r"[^\W_]+")


@lru_cache(maxsize=1)
def _stemmer():
    import Stemmer

    return Stemmer.Stemmer("english")


def tokenize(text: str) -> list[str]:
    """Index/query tokens of `text`; see the module docstring for the rules."""
    stem_words = _stemmer().stemWords
    words: list[str] = []
    extra: list[str] = []
    for match in _TOKEN.finditer(text.lower()):
        token = match.group()
        if _PART.fullmatch(token):
            if token not in STOP_WORDS:
                words.append(token)
            continue
        # A compound: keep the whole, the joined form for codes, and the parts.
        extra.append(token)
        parts = _PART.findall(token)
        if any(ch.isdigit() for ch in token):
            extra.append("".join(parts))
        words.extend(p for p in parts if p not in STOP_WORDS)
    return stem_words(words) + extra if words else extra


def chunk_set_hash(chunks: Iterable[Chunk]) -> str:
    """Changes when any chunk id (a hash of its text) or indexed heading changes."""
    digest = hashlib.sha256(f"tokenizer={TOKENIZER_VERSION}\n".encode())
    for chunk in sorted(chunks, key=lambda c: c.id):
        digest.update(f"{chunk.id}\0{chunk.title}\0{chunk.heading_path}\n".encode())
    return digest.hexdigest()


class BM25Index:
    """Okapi BM25 (k1=1.5, b=0.75, epsilon=0.25: rank-bm25's defaults) over chunk ids.

    Example:
        >>> index = BM25Index.build(chunks)
        >>> index.search("NW-F-160 torque", k=5)
        [('3f2a...', 7.31), ...]
    """

    def __init__(
        self,
        ids: Sequence[str],
        docs: Sequence[Sequence[str]],
        *,
        chunk_hash: str = "",
        k1: float = 1.5,
        b: float = 0.75,
        epsilon: float = 0.25,
    ) -> None:
        if len(ids) != len(docs):
            raise ValueError("ids and docs differ in length")
        self.ids = list(ids)
        self.docs = [list(d) for d in docs]
        self.chunk_hash = chunk_hash
        self.k1, self.b, self.epsilon = k1, b, epsilon
        self._row = {cid: i for i, cid in enumerate(self.ids)}
        self._prepare()

    def __len__(self) -> int:
        return len(self.ids)

    # --- construction --------------------------------------------------------------------
    @classmethod
    def build(cls, chunks: Sequence[Chunk]) -> BM25Index:
        docs = [tokenize(c.embedding_text()) for c in chunks]
        return cls([c.id for c in chunks], docs, chunk_hash=chunk_set_hash(chunks))

    def _prepare(self) -> None:
        """Postings per term: doc rows and their BM25 term weights (idf x saturated tf)."""
        n_docs = len(self.docs)
        vocab: dict[str, int] = {}
        rows: list[np.ndarray] = []
        terms: list[np.ndarray] = []
        counts: list[np.ndarray] = []
        doc_len = np.zeros(n_docs, dtype=np.float64)
        for row, tokens in enumerate(self.docs):
            doc_len[row] = len(tokens)
            if not tokens:
                continue
            ids = np.fromiter((vocab.setdefault(t, len(vocab)) for t in tokens), np.int64)
            uniq, cnt = np.unique(ids, return_counts=True)
            terms.append(uniq)
            counts.append(cnt)
            rows.append(np.full(len(uniq), row, dtype=np.int32))
        self._vocab = vocab
        self._n = n_docs
        if not vocab:
            self._indptr = np.zeros(1, dtype=np.int64)
            self._post_rows = np.zeros(0, dtype=np.int32)
            self._post_w = np.zeros(0, dtype=np.float32)
            return
        term = np.concatenate(terms)
        doc_rows = np.concatenate(rows)
        tf = np.concatenate(counts).astype(np.float64)
        avgdl = doc_len.sum() / n_docs
        # idf as rank_bm25.BM25Okapi._calc_idf: log((N - n + 0.5) / (n + 0.5)), negative
        # values replaced by epsilon * mean idf.
        df = np.bincount(term, minlength=len(vocab)).astype(np.float64)
        idf = np.log(n_docs - df + 0.5) - np.log(df + 0.5)
        floor = self.epsilon * (idf.sum() / len(idf))
        idf[idf < 0] = floor
        norm = self.k1 * (1 - self.b + self.b * doc_len[doc_rows] / avgdl)
        weight = idf[term] * tf * (self.k1 + 1) / (tf + norm)
        order = np.argsort(term, kind="stable")
        self._post_rows = doc_rows[order]
        self._post_w = weight[order].astype(np.float64)
        self._indptr = np.concatenate([[0], np.cumsum(np.bincount(term, minlength=len(vocab)))])

    # --- scoring -------------------------------------------------------------------------
    def scores(self, query: str | Sequence[str]) -> np.ndarray:
        """BM25 score of every document (row order of `ids`) for a query string or tokens."""
        tokens = tokenize(query) if isinstance(query, str) else list(query)
        slices = []
        for token in tokens:  # repeated query terms count again, as in rank-bm25
            term = self._vocab.get(token)
            if term is not None:
                slices.append(slice(self._indptr[term], self._indptr[term + 1]))
        if not slices:
            return np.zeros(self._n, dtype=np.float64)
        rows = np.concatenate([self._post_rows[s] for s in slices])
        weights = np.concatenate([self._post_w[s] for s in slices])
        return np.bincount(rows, weights=weights, minlength=self._n)

    def search(
        self, query: str, k: int, allowed_ids: set[str] | None = None
    ) -> list[tuple[str, float]]:
        """Top-k (id, score) with score > 0, best first; only `allowed_ids` when given."""
        if k <= 0 or self._n == 0:
            return []
        scores = self.scores(query)
        if allowed_ids is not None:
            mask = np.zeros(self._n, dtype=bool)
            rows = [self._row[i] for i in allowed_ids if i in self._row]
            if not rows:
                return []
            mask[rows] = True
            scores = np.where(mask, scores, 0.0)
        candidates = np.flatnonzero(scores > 0)
        if len(candidates) > k:
            top = np.argpartition(-scores[candidates], k - 1)[:k]
            candidates = candidates[top]
        # Best first; ties broken by row (stable, deterministic).
        ranked = candidates[np.lexsort((candidates, -scores[candidates]))]
        return [(self.ids[r], float(scores[r])) for r in ranked]

    # --- persistence ---------------------------------------------------------------------
    def save(self, directory: Path) -> None:
        """Write `bm25.json`, then `manifest.json` with its checksum (both atomically)."""
        directory = Path(directory)
        vocab: dict[str, int] = {}
        encoded = [[vocab.setdefault(t, len(vocab)) for t in doc] for doc in self.docs]
        body = json.dumps(
            {"ids": self.ids, "vocab": list(vocab), "docs": encoded},
            ensure_ascii=False,
            separators=(",", ":"),
        ).encode("utf-8")
        atomic_write_bytes(directory / INDEX_FILE, body)
        atomic_write_json(
            directory / MANIFEST_FILE,
            {
                "format": FORMAT_VERSION,
                "tokenizer": TOKENIZER_VERSION,
                "sha256": sha256_bytes(body),
                "chunk_hash": self.chunk_hash,
                "n_docs": len(self.ids),
                "params": {"k1": self.k1, "b": self.b, "epsilon": self.epsilon},
            },
        )

    @staticmethod
    def read_manifest(directory: Path) -> dict | None:
        path = Path(directory) / MANIFEST_FILE
        if not path.is_file():
            return None
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except ValueError as exc:
            raise CorruptWorkspaceError(
                f"{path} is damaged ({exc}); run `rag-app index` to rebuild it"
            ) from exc
        if not isinstance(data, dict):
            raise CorruptWorkspaceError(f"{path} is damaged; run `rag-app index` to rebuild it")
        return data

    @classmethod
    def load(cls, directory: Path) -> BM25Index:
        """Load a saved index, verifying its checksum; never returns a half-read index."""
        directory = Path(directory)
        manifest = cls.read_manifest(directory)
        if manifest is None:
            raise FileNotFoundError(f"no BM25 index in {directory}; run `rag-app index`")
        path = directory / INDEX_FILE
        hint = "run `rag-app index` to rebuild it"
        if not path.is_file():
            raise CorruptWorkspaceError(f"{path} is missing; {hint}")
        raw = path.read_bytes()
        if sha256_bytes(raw) != manifest.get("sha256"):
            raise CorruptWorkspaceError(
                f"{path} does not match the checksum in {MANIFEST_FILE} (damaged); {hint}"
            )
        if manifest.get("format") != FORMAT_VERSION or manifest.get("tokenizer") != (
            TOKENIZER_VERSION
        ):
            raise CorruptWorkspaceError(f"{path} was written by another version; {hint}")
        try:
            data = json.loads(raw)
            vocab = data["vocab"]
            docs = [[vocab[t] for t in doc] for doc in data["docs"]]
            params = manifest.get("params", {})
            return cls(data["ids"], docs, chunk_hash=manifest.get("chunk_hash", ""), **params)
        except (ValueError, KeyError, TypeError, IndexError) as exc:
            raise CorruptWorkspaceError(f"{path} cannot be read ({exc}); {hint}") from exc

    @classmethod
    def load_or_build(
        cls, directory: Path, chunks: Sequence[Chunk], *, save: bool = True
    ) -> tuple[BM25Index, str]:
        """The saved index if it matches `chunks`, else a fresh one (saved when `save`).

        Returns the index and what happened: "loaded", "built" (none or stale) or
        "rebuilt" (the saved one was damaged; a warning is logged).
        """
        wanted = chunk_set_hash(chunks)
        status = "built"
        try:
            manifest = cls.read_manifest(directory)
            if manifest is not None and manifest.get("chunk_hash") == wanted:
                index = cls.load(directory)
                return index, "loaded"
        except CorruptWorkspaceError as exc:
            log.warning("%s; rebuilding the BM25 index", exc)
            status = "rebuilt"
        index = cls.build(chunks)
        if save:
            index.save(directory)
        return index, status
