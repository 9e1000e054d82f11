"""Retrievers: BM25, dense (Chroma), hybrid fusion, and cross-encoder reranking.

Every retriever answers `retrieve(query, k, filters) -> list[Hit]`. A `Hit` keeps the score
*and* rank of each stage it went through (`bm25`, `dense`, `fused`, `rerank`), so the UI and
the eval report can show why a passage ranked where it did.

Fusion (`HybridRetriever`): RRF, weighted score fusion, or one list's order, as
`rag_app.fusion` defines them; `retrieval.fusion = "auto"` serves the way `rag-app finetune`
measured best for the model on this workspace.

Filters are applied inside each retriever (BM25 allowed ids, Chroma `where`) *before*
fusion, so filtered-out chunks never take a candidate slot.

`build_retriever` is the factory the CLI, UI and eval use. Chunks, BM25, embedders and
rerankers are loaded once per process and shared between the retrievers built from them.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from rag_app import chunkstore
from rag_app.config import Settings
from rag_app.errors import RagAppError
from rag_app.filters import Filter, chunk_fields, filter_values
from rag_app.fusion import (
    ExactMatchRule,
    FusionChoice,
    corpus_fingerprint,
    fuse_scored,
    keyword_led,
    resolve,
)
from rag_app.ir.acronyms import defined_acronyms, expand
from rag_app.ir.clipped import Vocabulary, read_clipped
from rag_app.store.bm25 import BM25Index, is_question
from rag_app.types import Chunk, Hit, SearchMode

if TYPE_CHECKING:
    from rag_app.embedder import Embedder
    from rag_app.rerank import Reranker
    from rag_app.store.chroma import VectorStore

log = logging.getLogger(__name__)

Mode = SearchMode  # the name callers used before the enum


class RerankerUnavailableError(RagAppError, RuntimeError):
    """Reranking was asked for explicitly but no trained reranker is available."""


@runtime_checkable
class Retriever(Protocol):
    """Anything that turns a query into ranked hits, says what it is, and keeps notes for
    the user (why reranking is off, which fusion serves and why, ...)."""

    notes: list[str]

    def retrieve(self, query: str, k: int = 5, filters: Filter | None = None) -> list[Hit]: ...

    def describe(self) -> str: ...


# --- the shared chunk table ---------------------------------------------------------------
@dataclass
class Corpus:
    """The workspace's chunks with their BM25 index, shared by every retriever on them."""

    chunks: list[Chunk]
    bm25: BM25Index
    by_id: dict[str, Chunk] = field(init=False)
    _allowed: OrderedDict = field(init=False, default_factory=OrderedDict)
    _lock: threading.Lock = field(init=False, default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.by_id = {c.id: c for c in self.chunks}
        self._fields: list[dict] | None = None  # per chunk, built by the first filter
        self._titles: dict[str, set[str]] | None = None
        self._acronyms: dict[str, str] | None = None
        self._vocabulary: Vocabulary | None = None
        self._readings_lock = threading.Lock()  # mining may take seconds: not under _lock

    def allowed_ids(self, filters: Filter | None) -> set[str] | None:
        """Ids passing `filters` (None = no restriction); the last 64 filters are cached."""
        if not filters:
            return None
        with self._lock:
            if filters in self._allowed:
                self._allowed.move_to_end(filters)
                return self._allowed[filters]
        if self._fields is None:  # a dict a chunk: at a million chunks, only when filtered
            self._fields = [chunk_fields(c) for c in self.chunks]
        allowed = {
            c.id for c, f in zip(self.chunks, self._fields, strict=True) if filters.matches(f)
        }
        with self._lock:
            self._allowed[filters] = allowed
            while len(self._allowed) > 64:
                self._allowed.popitem(last=False)
        return allowed

    def filter_values(self, keys: Sequence[str]) -> dict[str, list[str]]:
        """Distinct values per metadata key, for filter widgets."""
        return filter_values(self.chunks, keys)

    def titled(self, query: str) -> set[str]:
        """Ids of the chunks whose title holds every token of `query` (BM25's tokens), for
        a title typed as keywords; empty for a query of fewer than two tokens."""
        from rag_app.store.bm25 import tokenize

        wanted = set(tokenize(query))
        if len(wanted) < 2:
            return set()
        with self._lock:
            if self._titles is None:  # title token -> chunks whose title holds it, built once
                by_title: dict[str, list[str]] = {}
                for c in self.chunks:
                    if c.title:
                        by_title.setdefault(c.title, []).append(c.id)
                titles: dict[str, set[str]] = {}
                for title, ids in by_title.items():  # each distinct title tokenized once
                    for token in set(tokenize(title)):
                        titles.setdefault(token, set()).update(ids)
                self._titles = titles
        postings = sorted((self._titles.get(t, set()) for t in wanted), key=len)
        return set(postings[0]).intersection(*postings[1:])

    def vocabulary(self) -> Vocabulary:
        """BM25's stems sorted for reading clipped words; built on first use."""
        with self._readings_lock:
            if self._vocabulary is None:
                self._vocabulary = Vocabulary(
                    self.bm25, lambda cid: self.by_id[cid].embedding_text()
                )
            return self._vocabulary

    def acronyms(self) -> dict[str, str]:
        """{acronym: long form} the chunks define ("amyotrophic lateral sclerosis (ALS)"),
        mined on first use (`rag_app.ir.acronyms`)."""
        with self._readings_lock:
            if self._acronyms is None:
                self._acronyms = defined_acronyms(c.text for c in self.chunks)
            return self._acronyms


def _warm_readings(corpus: Corpus) -> None:
    try:
        corpus.acronyms()
        corpus.vocabulary()
    except Exception:  # a query mines again, and raises where someone sees it
        log.exception("mining the corpus's acronyms and stems failed")


_CORPORA: dict[tuple, Corpus] = {}
_CORPUS_LOCK = threading.Lock()


def load_corpus(settings: Settings) -> Corpus:
    """Chunks + BM25 of the workspace, loaded once per chunk-file version.

    A missing or stale BM25 index is rebuilt (and saved); a damaged one too, with a warning.
    """
    manifest = chunkstore.load_manifest(settings.manifest_path) or {}
    key = (str(settings.chunks_path.resolve()), manifest.get("chunks_sha256"))
    with _CORPUS_LOCK:
        corpus = _CORPORA.get(key)
        if corpus is None:
            chunks = chunkstore.load_chunks(settings.chunks_path, settings.manifest_path)
            bm25, status = BM25Index.load_or_build(settings.bm25_dir, chunks)
            if status != "loaded":
                log.info("BM25 index %s from %d chunks", status, len(chunks))
            corpus = Corpus(chunks, bm25)
            r = settings.retrieval
            if r.acronyms != "off" or r.clipped != "off":
                # mined in the background: seconds at a million passages, before a query asks
                threading.Thread(target=_warm_readings, args=(corpus,), daemon=True).start()
            for old in [k for k in _CORPORA if k[0] == key[0]]:
                del _CORPORA[old]  # an older version of these chunks is not needed any more
            _CORPORA[key] = corpus
        return corpus


# --- single-stage retrievers ----------------------------------------------------------------
class BM25Retriever:
    """Lexical retrieval over the corpus's BM25 index."""

    def __init__(self, corpus: Corpus) -> None:
        self.notes: list[str] = []  # for the user; build_retriever fills them
        self.corpus = corpus

    def describe(self) -> str:
        return "bm25"

    def retrieve(self, query: str, k: int = 5, filters: Filter | None = None) -> list[Hit]:
        allowed = self.corpus.allowed_ids(filters)
        results = self.corpus.bm25.search(query, k, allowed_ids=allowed)
        return [
            Hit(self.corpus.by_id[cid], scores={"bm25": score}, ranks={"bm25": rank})
            for rank, (cid, score) in enumerate(results, start=1)
        ]


class DenseRetriever:
    """Vector retrieval: the embedder's query vector against its own Chroma collection.

    With `rescore_store` (the same weights' full-dimension collection) and a truncated
    (Matryoshka) embedder, the top `rescore_candidates` found at the truncated dimension are
    re-ordered by their full-dimension cosine; the query is encoded once, at full dimension.
    """

    def __init__(
        self,
        embedder: Embedder,
        store: VectorStore,
        corpus: Corpus,
        rescore_store: VectorStore | None = None,
        rescore_candidates: int = 50,
    ) -> None:
        self.notes: list[str] = []  # for the user; build_retriever fills them
        store.check(embedder.fingerprint, embedder.dim, embedder.name)
        if rescore_store is not None:
            rescore_store.check(embedder.full.fingerprint, embedder.full.dim, embedder.name)
        self.embedder = embedder
        self.store = store
        self.corpus = corpus
        self.rescore_store = rescore_store
        self.rescore_candidates = rescore_candidates
        self._warned_stale = False

    def describe(self) -> str:
        if self.rescore_store is not None:
            return f"dense({self.embedder.fingerprint}, rescored at dim {self.embedder.full.dim})"
        return f"dense({self.embedder.fingerprint})"

    def _search(self, query: str, k: int, where: dict | None) -> list[tuple[str, float]]:
        if self.rescore_store is None:
            return self.store.query(self.embedder.encode_queries([query])[0], k, where=where)
        from rag_app.embedder import truncate

        full = self.embedder.full.encode_queries([query])[0]
        found = self.store.query(
            truncate(full, self.embedder.dim), max(k, self.rescore_candidates), where=where
        )
        vectors = self.rescore_store.embeddings([cid for cid, _ in found])
        rescored = sorted(
            ((cid, float(vectors[cid] @ full)) for cid, _ in found if cid in vectors),
            key=lambda pair: -pair[1],
        )
        # a candidate missing from the full-dimension index keeps its place after the others
        rest = [(cid, score) for cid, score in found if cid not in vectors]
        return (rescored + rest)[:k]

    def retrieve(self, query: str, k: int = 5, filters: Filter | None = None) -> list[Hit]:
        where = filters.to_chroma() if filters else None
        hits: list[Hit] = []
        for cid, score in self._search(query, k, where):
            chunk = self.corpus.by_id.get(cid)
            if chunk is None:  # indexed chunk no longer in the workspace
                if not self._warned_stale:
                    log.warning(
                        "the dense index of %s is stale; run `rag-app index --model %s`",
                        self.embedder.name,
                        self.embedder.spec,
                    )
                    self._warned_stale = True
                continue
            hits.append(Hit(chunk, scores={"dense": score}, ranks={"dense": len(hits) + 1}))
        return hits


# --- fusion (rag_app.fusion) ---------------------------------------------------------------
class HybridRetriever:
    """BM25 + dense candidates (filtered first), fused by RRF or weighted scores."""

    def __init__(
        self,
        bm25: Retriever,
        dense: Retriever,
        fusion: FusionChoice | str = "rrf",
        rrf_k: int = 60,
        dense_weight: float = 0.5,
        candidates: int = 50,
        why: str = "",
        exact: ExactMatchRule | None = None,
        acronyms: str = "off",
        clipped: str = "off",
    ) -> None:
        self.notes: list[str] = []  # for the user; build_retriever fills them
        self.bm25 = bm25
        self.acronyms = acronyms  # read the corpus's acronyms in queries: off, append, replace
        self.clipped = clipped  # read clipped words ("acc") as corpus words: off, append
        self._read: dict[str, tuple[str, list[str]]] = {}  # query -> its reading
        self._read_lock = threading.Lock()
        self.exact = exact  # keyword-led fusion for identifier lookups (None: off)
        self.dense = dense
        self.choice = (
            fusion
            if isinstance(fusion, FusionChoice)
            else FusionChoice(fusion, dense_weight, rrf_k)
        )
        self.candidates = candidates
        self.why = why  # where the choice came from, for the chat's status line

    def describe(self) -> str:
        return f"hybrid({self.choice.describe()}; {self.bm25.describe()} + {self.dense.describe()})"

    def read(self, query: str) -> tuple[str, list[str]]:
        """The query both retrievers search for, and what was read, for the sources panel:
        its acronyms read as the long forms the corpus defines (`retrieval.acronyms`), its
        clipped words as the corpus words the rest of the query points to
        (`retrieval.clipped`)."""
        corpus = getattr(self.bm25, "corpus", None)
        if not isinstance(corpus, Corpus) or self.acronyms == self.clipped == "off":
            return query, []
        with self._read_lock:
            cached = self._read.get(query)
        if cached is None:
            cached = self._read_now(query, corpus)
            with self._read_lock:  # the chat reads each turn twice (note, search)
                self._read[query] = cached
                while len(self._read) > 256:
                    self._read.pop(next(iter(self._read)))
        return cached[0], list(cached[1])

    def _read_now(self, query: str, corpus: Corpus) -> tuple[str, list[str]]:
        said: list[str] = []
        if self.acronyms != "off":
            query, found = expand(query, corpus.acronyms(), self.acronyms)
            said += [
                f"{e.acronym} read as “{e.long_form}” (defined in the documents)" for e in found
            ]
        if self.clipped != "off":
            query, readings = read_clipped(query, corpus.vocabulary())
            said += [
                f"“{r.clipped}” read as “{r.word}” (completed from the documents' words)"
                for r in readings
            ]
        return query, said

    def exact_codes(self, query: str) -> dict[str, set[str]]:
        """The query's identifiers that make this search keyword-led (empty: it is not).

        `query` is the read one (`read`): a reading adds words, so "ALS" alone is no longer
        a lone rare word pinning the pages that repeat "ALS" but a search for the disease,
        which is what the acronym class measured (docs/BENCHMARKS.md, "Jargon"); readings
        never touch a code."""
        corpus = getattr(self.bm25, "corpus", None)  # a BM25Retriever's chunks and index
        if self.exact is None or not isinstance(corpus, Corpus):
            return {}
        found = {}
        for term, ids in corpus.bm25.exact_terms(query, self.exact.short_words).items():
            docs = {corpus.by_id[c].doc_id for c in ids if c in corpus.by_id}
            if len(docs) <= self.exact.max_docs:
                found[term] = ids
        if self.exact.title_docs and not is_question(query):
            ids = corpus.titled(query)
            docs = {corpus.by_id[c].doc_id for c in ids}
            if 0 < len(docs) <= self.exact.title_docs:
                found[f"the title “{query.strip()}”"] = ids
        return found

    def fusion_note(self, query: str) -> str:
        """How this query was read and fused and why, for the sources panel."""
        query, read = self.read(query)
        codes = self.exact_codes(query)
        if codes and self.exact is not None:
            # a code's indexed tails ("61-009" of "72-61-009") are not news to the reader
            whole = [c for c in codes if not any(o != c and o.endswith(c) for o in codes)]
            note = self.exact.describe(whole)
        else:
            note = self.why
        if read:
            meant = "; ".join(read)
            note = f"{meant}; {note}" if note else meant
        return note

    def retrieve(self, query: str, k: int = 5, filters: Filter | None = None) -> list[Hit]:
        n = max(k, self.candidates)
        query, _ = self.read(query)
        lexical = self.bm25.retrieve(query, n, filters)
        dense = self.dense.retrieve(query, n, filters)
        merged: dict[str, Hit] = {}
        for hit in [*lexical, *dense]:
            seen = merged.get(hit.chunk.id)
            if seen is None:
                merged[hit.chunk.id] = Hit(hit.chunk, dict(hit.scores), dict(hit.ranks))
            else:
                seen.scores.update(hit.scores)
                seen.ranks.update(hit.ranks)
        out = []
        lexical_scores = [(h.chunk.id, h.scores["bm25"]) for h in lexical]
        codes = self.exact_codes(query)
        ranked = fuse_scored(
            lexical_scores,
            [(h.chunk.id, h.scores["dense"]) for h in dense],
            self.choice,
            len(merged) if codes else k,
        )
        if codes and self.exact is not None:
            exact_ids = set().union(*codes.values())
            ranked = keyword_led(ranked, lexical_scores, exact_ids, self.exact.pin)[:k]
        for rank, (cid, score) in enumerate(ranked, start=1):
            hit = merged[cid]
            hit.scores["fused"] = score
            hit.ranks["fused"] = rank
            out.append(hit)
        return out


class RerankedRetriever:
    """The base retriever's top `top_n`, re-ordered by a cross-encoder; returns top k."""

    def __init__(self, base: Retriever, reranker: Reranker, top_n: int = 20) -> None:
        self.notes: list[str] = []  # for the user; build_retriever fills them
        self.base = base
        self.reranker = reranker
        self.top_n = top_n

    def describe(self) -> str:
        return f"{self.base.describe()} -> rerank({self.reranker.name}, top {self.top_n})"

    def retrieve(self, query: str, k: int = 5, filters: Filter | None = None) -> list[Hit]:
        hits = self.base.retrieve(query, max(k, self.top_n), filters)
        return self.reranker.rerank(query, hits)[:k]


PARTIAL_INDEX = "chunks: dense search misses the rest"  # in the warning build_retriever notes


def warnings_in(notes: Sequence[str]) -> list[str]:
    """The notes that warn of a partial dense index (the others say why reranking is off,
    which the chat's status line already shows)."""
    return [note for note in notes if PARTIAL_INDEX in note]


def embedder_of(retriever: Retriever) -> Embedder | None:
    """The dense embedder a retriever searches with (through reranking and fusion), or None
    for BM25 alone: what scores the sentences of an extractive answer."""
    if isinstance(retriever, RerankedRetriever):
        retriever = retriever.base
    if isinstance(retriever, HybridRetriever):
        retriever = retriever.dense
    return retriever.embedder if isinstance(retriever, DenseRetriever) else None


# --- factory --------------------------------------------------------------------------------
def resolve_dim(settings: Settings, model: str | None = None) -> int | None:
    """The serving dimension of a model: `retrieval.model_dims` (by spec, or by the run's
    directory name, `rag_app.models.model_name`), else `retrieval.dim`, else None (the
    model's full dimension)."""
    from rag_app.models import model_name

    spec = model or settings.models.embedder
    dims = settings.retrieval.model_dims
    for key in (spec, model_name(spec)):
        if key in dims:
            return dims[key]
    return settings.retrieval.dim


def fusion_for(settings: Settings, model: str | None = None) -> tuple[FusionChoice, str]:
    """The fusion hybrid search uses for `model`, and why (shown in the chat).

    `retrieval.fusion = "auto"` serves the choice `rag-app finetune` measured for the model
    on this workspace's chunks (`rag_app.fusion`), else weighted fusion at
    `retrieval.dense_weight` (the default chosen on the cross-corpus protocol); any other
    value is used as set.
    """
    r = settings.retrieval
    if r.fusion != "auto":
        choice = FusionChoice(r.fusion, r.dense_weight, r.rrf_k)
        return choice, f"{choice.describe()} (retrieval.fusion)"
    return resolve(
        settings.workspace,
        model or settings.models.embedder,
        corpus_fingerprint(settings.manifest_path),
        FusionChoice("weighted", r.dense_weight, r.rrf_k),
    )


def exact_rule(settings: Settings) -> ExactMatchRule | None:
    """The keyword-led rule hybrid search applies to identifier lookups (None: off)."""
    r = settings.retrieval
    if not r.exact_match:
        return None
    return ExactMatchRule(
        max_docs=r.exact_max_docs,
        pin=r.exact_pin,
        short_words=r.exact_short_words,
        title_docs=r.exact_title_docs,
    )


def build_retriever(
    settings: Settings,
    model: str | None = None,
    mode: SearchMode | str = SearchMode.HYBRID,
    rerank: bool | None = None,
    dim: int | None = None,
    rescore: bool | None = None,
) -> Retriever:
    """The retriever the settings describe, for `model` (default: `models.embedder`).

    `rerank=None` follows `retrieval.rerank` and quietly goes without a reranker when none
    is available (the reason is in the retriever's `notes`); `rerank=True` raises
    `RerankerUnavailableError` instead. A model without an index raises
    `rag_app.store.chroma.NotIndexedError` naming the `rag-app index --model ...` command.
    `dim` serves the embedder truncated to that (indexed) dimension (default: `resolve_dim`);
    `rescore` (default `retrieval.rescore`) re-orders its candidates at full dimension.
    """
    mode = SearchMode.parse(mode)
    corpus = load_corpus(settings)
    notes: list[str] = []
    retriever: Retriever
    if mode is SearchMode.BM25:
        retriever = BM25Retriever(corpus)
    else:
        dense = build_dense(settings, corpus, model, dim=dim, rescore=rescore)
        indexed = dense.store.count()
        if indexed < len(corpus.chunks):  # an interrupted `rag-app index`, or chunks added
            warning = (
                f"the dense index of {dense.embedder.name} holds {indexed:,} of "
                f"{len(corpus.chunks):,} {PARTIAL_INDEX}"
                f" until `rag-app index --model {dense.embedder.spec}` completes"
            )
            log.warning(warning)
            notes.append(warning)
        if mode is SearchMode.DENSE:
            retriever = dense
        else:
            choice, why = fusion_for(settings, model)
            retriever = HybridRetriever(
                BM25Retriever(corpus),
                dense,
                fusion=choice,
                candidates=settings.retrieval.candidates,
                why=why,
                exact=exact_rule(settings),
                acronyms=settings.retrieval.acronyms,
                clipped=settings.retrieval.clipped,
            )
    use_rerank = settings.retrieval.rerank if rerank is None else rerank
    if use_rerank:
        from rag_app.rerank import load_reranker

        reranker, reason = load_reranker(settings)
        if reranker is None:
            if rerank:
                raise RerankerUnavailableError(reason)
            notes.append(reason)
        else:
            retriever = RerankedRetriever(retriever, reranker, settings.retrieval.rerank_top)
            notes.append(reason)
    retriever.notes = notes
    return retriever


def build_dense(
    settings: Settings,
    corpus: Corpus,
    model: str | None = None,
    *,
    dim: int | None = None,
    rescore: bool | None = None,
) -> DenseRetriever:
    """A dense retriever for `model` (at `dim`), refusing one whose collection does not exist.

    Rescoring needs the full-dimension collection too (`rag-app index --model M`).
    """
    from rag_app.embedder import Embedder
    from rag_app.store.chroma import VectorStore

    spec = model or settings.models.embedder
    dim = dim if dim is not None else resolve_dim(settings, spec)
    embedder = Embedder.load(
        spec,
        device=settings.models.device,
        trust_remote_code=settings.models.trust_remote_code,
        truncate_dim=dim,
    )

    def open_store(emb: Embedder) -> VectorStore:
        return VectorStore.open(
            settings,
            emb.fingerprint,
            emb.dim,
            create=False,
            model_name=emb.name,
            model_spec=spec,
            base_fingerprint=emb.full.fingerprint,
            truncate_dim=emb.truncate_dim,
        )

    store = open_store(embedder)
    use_rescore = settings.retrieval.rescore if rescore is None else rescore
    rescore_store = None
    if use_rescore and embedder.truncate_dim:
        rescore_store = open_store(embedder.full)
    return DenseRetriever(
        embedder,
        store,
        corpus,
        rescore_store=rescore_store,
        rescore_candidates=settings.retrieval.rescore_candidates,
    )
