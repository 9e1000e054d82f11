"""BM25 over the chunks: Okapi BM25 as rank-bm25 defines it, scored with numpy.

Tokenisation (`tokenize`): lowercase, English stop words dropped, Snowball (PyStemmer)
stems for words. Codes keep their identity: "NW-F-160" yields the whole code `nw-f-160`, its
joined form `nwf160` (codes containing a digit), its tails `f-160` (a code typed without its
prefix) and its parts `nw`, `f`, `160`, so a query for the full code ranks exact matches
first while "PT 220A" still finds "PT-220A".

Scoring follows `rank_bm25.BM25Okapi` exactly (same k1, b, epsilon floor for negative idf;
a test checks equality with `BM25Okapi.get_scores`), but from a precomputed postings
layout: one numpy slice per query term and a `bincount`, not a Python loop over documents.

Persistence never uses pickle: the postings are three `.npy` arrays (read with
`allow_pickle=False`, memory-mapped), the chunk ids and terms are JSON lists, and
`manifest.json` holds every file's sha256 and a hash of the chunk set it was built from. A
damaged file is detected by its checksum (`CorruptWorkspaceError`); `load_or_build`
rebuilds it. The index is rebuilt only when the chunk set changes. At a million MedQuAD
passages the folder is about 1 GB and loads in seconds (docs/BENCHMARKS.md, scale).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from array import array
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np

from rag_app.chunkstore import CorruptWorkspaceError
from rag_app.fsutil import atomic_write_bytes, atomic_write_json, atomic_writer, sha256_file
from rag_app.ir import stopwords
from rag_app.text import TOKEN, WORD
from rag_app.types import Chunk

log = logging.getLogger(__name__)

TOKENIZER_VERSION = 2  # 2: code tails ("tc-32-411" of "nw-tc-32-411")
FORMAT_VERSION = 2  # 1: one bm25.json of token lists, rebuilt on upgrade
OLD_INDEX_FILE = "bm25.json"
IDS_FILE = "ids.json"
TERMS_FILE = "terms.json"
ARRAY_FILES = {"indptr": "indptr.npy", "rows": "rows.npy", "weights": "weights.npy"}
INDEX_FILES = (IDS_FILE, TERMS_FILE, *ARRAY_FILES.values())  # each checksummed in the manifest
MANIFEST_FILE = "manifest.json"
# Below this many texts, starting worker processes costs more than it saves.
PARALLEL_MIN_TEXTS = 20_000

# The base English list (`rag_app.ir.stopwords.ENGLISH`); changing it needs a TOKENIZER_VERSION bump.
STOP_WORDS = stopwords.BM25

# Runs of letters/digits, optionally joined by - _ . / into one compound ("nw-f-160"),
# and the parts of a compound (`rag_app.text`, shared with the answer and eval code).
_TOKEN = TOKEN
_PART = WORD


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
        # A compound: keep the whole, the joined form for codes, the parts, and for codes
        # the tails of two parts or more ("nw-tc-32-411" -> "tc-32-411", "32-411"), which
        # is how people type a code without its prefix.
        extra.append(token)
        parts = list(_PART.finditer(token))
        if any(ch.isdigit() for ch in token):
            extra.append("".join(p.group() for p in parts))
            extra.extend(
                token[p.start() :]
                for p in parts[1:-1]
                if any(ch.isdigit() for ch in token[p.start() :])
            )
        words.extend(p.group() for p in parts if p.group() not in STOP_WORDS)
    return stem_words(words) + extra if words else extra


def is_question(query: str) -> bool:
    """Whether `query` is phrased as a question ("what is ...", "can I ..."), not typed as
    keywords: a keyword query of a few rare words is a lookup, a question about them is not."""
    first = WORD.search(query.lower())
    return first is not None and first.group() in stopwords.QUESTION_START


def is_code(token: str) -> bool:
    """Whether a token is an identifier rather than a word or a quantity: it contains a digit
    and either a letter or a separator ("72-61-009", "nw-f-117", "pt220a"), or is a
    number of four or more digits ("0436"); "5.5", "160" and "20-100" are quantities."""
    if not any(ch.isdigit() for ch in token):
        return False
    if any(ch.isalpha() for ch in token):
        return True
    if _PART.fullmatch(token):  # digits only
        return len(token) >= 4
    # digits joined by separators: "72-61-009" and "2023-0188" are codes; "5.5" (bar) and
    # "20-100" (Nm, a range) are quantities
    parts = _PART.findall(token)
    if len(parts) > 2:
        return True
    if "-" not in token and "_" not in token:
        return False
    return any(len(p) >= 4 or (len(p) > 1 and p.startswith("0")) for p in parts)


def chunk_set_hash(chunks: Iterable[Chunk]) -> str:
    """Changes when any chunk id (a hash of its text) or indexed heading changes."""
    digest = hashlib.sha256(f"tokenizer={TOKENIZER_VERSION}\n".encode())
    for chunk in sorted(chunks, key=lambda c: c.id):
        digest.update(f"{chunk.id}\0{chunk.title}\0{chunk.heading_path}\n".encode())
    return digest.hexdigest()


def tokenize_many(texts: Sequence[str], processes: int | None = None) -> Iterator[list[str]]:
    """`tokenize` over many texts, in order; in worker processes for large corpora.

    Tokenising is pure Python (about 4,700 MedQuAD passages/s on one core), so a million
    passages take minutes on one core; above `PARALLEL_MIN_TEXTS` texts the work is spread
    over `processes` (default: every CPU) spawned workers. The token lists are the same.
    """
    workers = processes if processes is not None else (os.cpu_count() or 1)
    if workers <= 1 or len(texts) < PARALLEL_MIN_TEXTS:
        yield from map(tokenize, texts)
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    # spawn, not fork: the parent may hold torch / Chroma threads that a fork would copy mid-use
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=context) as pool:
        yield from pool.map(tokenize, texts, chunksize=2000)


class BM25Index:
    """Okapi BM25 (k1=1.5, b=0.75, epsilon=0.25: rank-bm25's defaults) over chunk ids.

    Held as postings: for every term, the rows of the documents that contain it and their
    BM25 term weights (idf x saturated tf), in CSR layout (`indptr` by term id). A query
    adds up its terms' slices, so its cost grows with the postings of its terms, not with
    the corpus. Saved as `.npy` arrays that `load` memory-maps: loading a million passages
    reads no postings until a query needs them.

    Example:
        >>> index = BM25Index.build(chunks)
        >>> index.search("NW-F-160 torque", k=5)
        [('3f2a...', 7.31), ...]
    """

    def __init__(
        self,
        ids: Sequence[str],
        vocab: dict[str, int],
        indptr: np.ndarray,
        post_rows: np.ndarray,
        post_w: np.ndarray,
        *,
        chunk_hash: str = "",
        k1: float = 1.5,
        b: float = 0.75,
        epsilon: float = 0.25,
    ) -> None:
        if len(indptr) != len(vocab) + 1 or len(post_rows) != len(post_w):
            raise ValueError("postings do not match the vocabulary")
        self.ids = list(ids)
        self.chunk_hash = chunk_hash
        self.k1, self.b, self.epsilon = k1, b, epsilon
        self._vocab = vocab
        self._indptr = indptr
        self._post_rows = post_rows
        self._post_w = post_w
        self._n = len(self.ids)
        self._row_of: dict[str, int] | None = None

    def __len__(self) -> int:
        return len(self.ids)

    # --- construction --------------------------------------------------------------------
    @classmethod
    def build(cls, chunks: Sequence[Chunk], processes: int | None = None) -> BM25Index:
        """Tokenise and index `chunks` (in worker processes when there are many)."""
        docs = tokenize_many([c.embedding_text() for c in chunks], processes)
        return cls.from_tokens([c.id for c in chunks], docs, chunk_hash=chunk_set_hash(chunks))

    @classmethod
    def from_tokens(
        cls,
        ids: Sequence[str],
        docs: Iterable[Sequence[str]],
        *,
        chunk_hash: str = "",
        k1: float = 1.5,
        b: float = 0.75,
        epsilon: float = 0.25,
    ) -> BM25Index:
        """Index tokenised documents (one per id, in order); the token lists are not kept."""
        vocab: dict[str, int] = {}
        terms = array("q")  # term id of each (document, term) pair, document by document
        tfs = array("q")
        n_terms = array("q")  # distinct terms per document
        doc_len = array("q")
        for tokens in docs:
            counts = Counter(vocab.setdefault(t, len(vocab)) for t in tokens)
            terms.extend(counts.keys())
            tfs.extend(counts.values())
            n_terms.append(len(counts))
            doc_len.append(len(tokens))
        n_docs = len(doc_len)
        if n_docs != len(ids):
            raise ValueError(f"{len(ids)} ids but {n_docs} documents")
        if vocab:
            indptr, rows, weights = _postings(
                np.frombuffer(terms, dtype=np.int64),
                np.frombuffer(tfs, dtype=np.int64).astype(np.float64),
                np.frombuffer(doc_len, dtype=np.int64).astype(np.float64),
                np.frombuffer(n_terms, dtype=np.int64),
                len(vocab),
                k1,
                b,
                epsilon,
            )
        else:  # nothing to index (idf's mean would divide by zero)
            indptr = np.zeros(1, dtype=np.int64)
            rows, weights = np.zeros(0, dtype=np.int32), np.zeros(0, dtype=np.float64)
        return cls(
            ids, vocab, indptr, rows, weights, chunk_hash=chunk_hash, k1=k1, b=b, epsilon=epsilon
        )

    # --- scoring -------------------------------------------------------------------------
    def scores(self, query: str | Sequence[str]) -> np.ndarray:
        """BM25 score of every document (row order of `ids`) for a query string or tokens."""
        tokens = tokenize(query) if isinstance(query, str) else list(query)
        slices = []
        for token in tokens:  # repeated query terms count again, as in rank-bm25
            term = self._vocab.get(token)
            if term is not None:
                slices.append(slice(int(self._indptr[term]), int(self._indptr[term + 1])))
        if not slices:
            return np.zeros(self._n, dtype=np.float64)
        rows = np.concatenate([self._post_rows[s] for s in slices])
        weights = np.concatenate([self._post_w[s] for s in slices])
        return np.bincount(rows, weights=weights, minlength=self._n)

    def terms(self) -> Iterable[str]:
        """Every indexed token (stems, whole codes and their parts)."""
        return self._vocab.keys()

    def doc_freq(self, term: str) -> int:
        """How many indexed chunks contain `term` (a token as `tokenize` writes it)."""
        t = self._vocab.get(term)
        return 0 if t is None else int(self._indptr[t + 1] - self._indptr[t])

    def ids_with(self, term: str) -> set[str]:
        """The chunk ids whose tokens include `term`."""
        t = self._vocab.get(term)
        if t is None:
            return set()
        rows = self._post_rows[int(self._indptr[t]) : int(self._indptr[t + 1])]
        return {self.ids[int(r)] for r in rows}

    def exact_terms(self, query: str, short_words: int = 0) -> dict[str, set[str]]:
        """The query terms BM25 can be sure of, each with the chunks that contain it, for
        `rag_app.fusion.ExactMatchRule`: its identifiers (`is_code`), and, when the query
        is a keyword query (`is_question` false) of at most `short_words` words, those
        words too."""
        tokens = list(dict.fromkeys(tokenize(query)))
        # a compound's joined form ("20100" of "20-100") stands or falls with the compound
        joined = {"".join(_PART.findall(t)) for t in tokens if not _PART.fullmatch(t)}
        words = [t for t in tokens if _PART.fullmatch(t) and not is_code(t)]
        keyword = 0 < len(words) <= short_words and not is_question(query)
        return {
            term: self.ids_with(term)
            for term in tokens
            if term not in joined
            and (is_code(term) or (keyword and term in words))
            and self.doc_freq(term)
        }

    def _rows(self, ids: Iterable[str]) -> list[int]:
        if self._row_of is None:  # built on first use: a filtered search needs it
            self._row_of = {cid: i for i, cid in enumerate(self.ids)}
        row_of = self._row_of
        return [row_of[i] for i in ids if i in row_of]

    def search(
        self, query: str, k: int, allowed_ids: set[str] | None = None
    ) -> list[tuple[str, float]]:
        """Top-k (id, score) with score > 0, best first; only `allowed_ids` when given."""
        if k <= 0 or self._n == 0:
            return []
        scores = self.scores(query)
        if allowed_ids is not None:
            mask = np.zeros(self._n, dtype=bool)
            rows = self._rows(allowed_ids)
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
        """Write the arrays and the id / term lists, then `manifest.json` with their checksums.

        Every file is written atomically and the manifest last, so a crash part-way leaves
        a manifest whose checksums do not match, and the next load rebuilds.
        """
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        texts = {
            IDS_FILE: json.dumps(self.ids, ensure_ascii=False),
            TERMS_FILE: json.dumps(
                sorted(self._vocab, key=self._vocab.__getitem__), ensure_ascii=False
            ),
        }
        for name, text in texts.items():
            atomic_write_bytes(directory / name, text.encode("utf-8"))
        arrays = {
            "indptr": np.asarray(self._indptr, dtype=np.int64),
            "rows": np.asarray(self._post_rows, dtype=np.int32),
            "weights": np.asarray(self._post_w, dtype=np.float64),
        }
        for name, values in arrays.items():
            with atomic_writer(directory / ARRAY_FILES[name]) as handle:
                np.save(handle, np.ascontiguousarray(values), allow_pickle=False)
        atomic_write_json(
            directory / MANIFEST_FILE,
            {
                "format": FORMAT_VERSION,
                "tokenizer": TOKENIZER_VERSION,
                "sha256": {name: sha256_file(directory / name) for name in INDEX_FILES},
                "chunk_hash": self.chunk_hash,
                "n_docs": len(self.ids),
                "n_terms": len(self._vocab),
                "n_postings": len(self._post_rows),
                "params": {"k1": self.k1, "b": self.b, "epsilon": self.epsilon},
            },
        )
        (directory / OLD_INDEX_FILE).unlink(missing_ok=True)  # format 1, replaced

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
        """Load a saved index, verifying every file's checksum; never a half-read index.

        The arrays are memory-mapped read-only (`allow_pickle=False`: nothing in the folder
        can run code), so the postings are paged in by the queries that use them.
        """
        directory = Path(directory)
        manifest = cls.read_manifest(directory)
        if manifest is None:
            raise FileNotFoundError(f"no BM25 index in {directory}; run `rag-app index`")
        hint = "run `rag-app index` to rebuild it"
        if manifest.get("format") != FORMAT_VERSION or manifest.get("tokenizer") != (
            TOKENIZER_VERSION
        ):
            raise CorruptWorkspaceError(
                f"the BM25 index in {directory} was written by another version; {hint}"
            )
        sums = manifest.get("sha256")
        if not isinstance(sums, dict):
            raise CorruptWorkspaceError(f"{directory / MANIFEST_FILE} is damaged; {hint}")
        for name in INDEX_FILES:
            path = directory / name
            if not path.is_file():
                raise CorruptWorkspaceError(f"{path} is missing; {hint}")
            if sha256_file(path) != sums.get(name):
                raise CorruptWorkspaceError(
                    f"{path} does not match the checksum in {MANIFEST_FILE} (damaged); {hint}"
                )
        try:
            ids = json.loads((directory / IDS_FILE).read_bytes())
            terms = json.loads((directory / TERMS_FILE).read_bytes())
            arrays = {
                name: np.load(directory / file, mmap_mode="r", allow_pickle=False)
                for name, file in ARRAY_FILES.items()
            }
            params = manifest.get("params", {})
            return cls(
                ids,
                {term: i for i, term in enumerate(terms)},
                arrays["indptr"],
                arrays["rows"],
                arrays["weights"],
                chunk_hash=manifest.get("chunk_hash", ""),
                **params,
            )
        except (ValueError, KeyError, TypeError, IndexError, OSError) as exc:
            raise CorruptWorkspaceError(
                f"the BM25 index in {directory} cannot be read ({exc}); {hint}"
            ) from exc

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


def _postings(
    term: np.ndarray,
    tf: np.ndarray,
    lengths: np.ndarray,
    n_terms: np.ndarray,
    n_vocab: int,
    k1: float,
    b: float,
    epsilon: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """CSR postings (indptr by term id, document rows, BM25 weights) from the (document,
    term) pairs listed document by document: `term` and `tf` per pair, `n_terms` pairs and
    `lengths` tokens per document."""
    n_docs = len(lengths)
    doc_rows = np.repeat(np.arange(n_docs, dtype=np.int32), n_terms)
    # idf as rank_bm25.BM25Okapi._calc_idf: log((N - n + 0.5) / (n + 0.5)), negative
    # values replaced by epsilon * mean idf.
    df = np.bincount(term, minlength=n_vocab).astype(np.float64)
    idf = np.log(n_docs - df + 0.5) - np.log(df + 0.5)
    idf[idf < 0] = epsilon * (idf.sum() / len(idf))
    norm = k1 * (1 - b + b * lengths[doc_rows] / (lengths.sum() / n_docs))
    weight = idf[term] * tf * (k1 + 1) / (tf + norm)
    order = np.argsort(term, kind="stable")  # by term, documents in row order within
    indptr = np.concatenate([[0], np.cumsum(df.astype(np.int64))])
    return indptr, doc_rows[order], weight[order]
