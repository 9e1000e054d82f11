"""Query sets for the retrieval eval: a BEIR folder (with or without its own corpus), the
workspace's synthetic validation split, or the shipped ``<corpus>/eval``.

A BEIR corpus becomes chunks of a workspace namespace of its own
(``<workspace>/eval/beir/<name>-<fingerprint>``), so the user's workspace is never touched.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rag_app.ir.beir import BeirDataset, fingerprint, load_beir

if TYPE_CHECKING:
    from rag_app.config import Settings

log = logging.getLogger(__name__)


# --- eval sets --------------------------------------------------------------------------------
@dataclass
class EvalSet:
    """Queries + qrels to score, and where the retrievers for them live."""

    name: str
    split: str
    source: str  # "synthetic-val", "corpus-eval" or "beir"
    granularity: str  # "chunk" or "doc"
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]
    settings: Settings  # the Settings whose workspace holds the chunks and indexes
    path: str | None = None
    fingerprint: str | None = None
    references: dict[str, str] = field(default_factory=dict)
    reference_kind: str = ""
    notes: list[str] = field(default_factory=list)

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "split": self.split,
            "source": self.source,
            "granularity": self.granularity,
            "path": self.path,
            "fingerprint": self.fingerprint,
            "n_queries": len(self.queries),
            "n_qrels": sum(len(v) for v in self.qrels.values()),
            "workspace": str(self.settings.workspace),
            "reference_kind": self.reference_kind,
        }


def norm_query(text: str) -> str:
    """The leak guard's key for a question: the synthetic filters' normaliser
    (`finetune.query_filters.normalise`: lower case, Unicode words only), so a training
    question in any script is caught (the ASCII-only key made every non-Latin question
    empty, and none was caught)."""
    from finetune.query_filters import normalise

    return normalise(text)


def iter_jsonl(path: Path) -> Iterable[dict[str, Any]]:
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            line = line.strip()
            if line:
                obj = json.loads(line)
                if isinstance(obj, dict):
                    yield obj


_QUERY_KEYS = ("query", "question", "anchor", "text")
_POSITIVE_KEYS = ("chunk_id", "positive_id", "pos_id", "doc_id", "corpus_id", "chunk")


def synth_file(settings: Settings, names: Sequence[str]) -> Path | None:
    root = Path(settings.synth_dir)
    for name in names:
        for candidate in (root / f"{name}.jsonl", root / name / "queries.jsonl"):
            if candidate.is_file():
                return candidate
    return None


def synth_records(path: Path) -> list[tuple[str, str]]:
    """(query text, positive chunk id) pairs from a synth split file."""
    out = []
    for obj in iter_jsonl(path):
        query = next((obj[k] for k in _QUERY_KEYS if isinstance(obj.get(k), str)), None)
        positive = next((obj[k] for k in _POSITIVE_KEYS if obj.get(k)), None)
        if isinstance(positive, dict):
            positive = positive.get("id")
        if query and isinstance(positive, str):
            out.append((query, positive))
    return out


def _load_synthetic_val(settings: Settings) -> EvalSet | None:
    """The finetune stage's held-out validation split, if it wrote one."""
    path = synth_file(settings, ("val", "validation", "dev"))
    records = synth_records(path) if path is not None else []
    if not records:
        return None
    queries: dict[str, str] = {}
    qrels: dict[str, dict[str, int]] = {}
    seen: dict[str, str] = {}
    for i, (query, chunk_id) in enumerate(records):
        key = norm_query(query)
        qid = seen.get(key)
        if qid is None:  # the same query written for two chunks: both are relevant
            qid = f"synth-val-{i:05d}"
            seen[key] = qid
            queries[qid] = query
        qrels.setdefault(qid, {})[chunk_id] = 1
    return EvalSet(
        name="synthetic-val",
        split="val",
        source="synthetic-val",
        granularity="chunk",
        queries=queries,
        qrels=qrels,
        settings=settings,
        path=str(path) if path else str(settings.synth_dir),
        fingerprint=_file_hash(path) if path else None,
    )


def _file_hash(path: Path) -> str:

    return hashlib.sha256(path.read_bytes()).hexdigest()


def _namespace_settings(settings: Settings, dataset: BeirDataset, digest: str) -> Any:
    """Settings whose workspace is the dataset's own namespace under the eval folder."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", dataset.name).strip("-") or "dataset"
    workspace = Path(settings.eval_dir) / "beir" / f"{slug}-{digest[:12]}"
    reranker = reranker_spec(settings)
    return settings.model_copy(
        update={
            "workspace": workspace,
            "models": settings.models.model_copy(update={"reranker": reranker}),
            # a shared Chroma server would mix this namespace with the user's collections
            "retrieval": settings.retrieval.model_copy(update={"chroma_url": None}),
        }
    )


def reranker_spec(settings: Settings) -> str | None:
    """The reranker to evaluate: ``models.reranker``, or the newest trained one when that is
    unset or "auto" (found in the user's workspace, never in an eval namespace)."""
    spec = settings.models.reranker
    if spec and spec.strip().lower() != "auto":
        return spec
    from rag_app.rerank import find_trained_reranker

    found = find_trained_reranker(settings)
    return str(found) if found else None


def _scalar_metadata(metadata: Mapping[str, Any]) -> dict[str, Any]:
    return {
        k: v for k, v in metadata.items() if isinstance(v, str | int | float | bool) and v != ""
    }


def ingest_beir_corpus(settings: Settings, dataset: BeirDataset, digest: str) -> Any:
    """Write the dataset's passages as chunks of their namespace; returns its Settings.

    One chunk per passage (chunk id = doc id = passage id), so chunk hits are passage hits.
    Rewritten only when the dataset's fingerprint changed.
    """
    from rag_app import chunkstore
    from rag_app.types import Chunk

    ns = _namespace_settings(settings, dataset, digest)
    manifest = None
    try:
        manifest = chunkstore.load_manifest(ns.manifest_path)
    except chunkstore.CorruptWorkspaceError:
        manifest = None
    if manifest and manifest.get("beir_fingerprint") == digest and ns.chunks_path.is_file():
        return ns
    chunks = [
        Chunk(
            id=doc_id,
            doc_id=doc_id,
            text=doc["text"],
            title=doc.get("title") or "",
            end_char=len(doc["text"]),
            metadata=_scalar_metadata(doc.get("metadata") or {}),
        )
        for doc_id, doc in dataset.corpus.items()
    ]
    ns.workspace.mkdir(parents=True, exist_ok=True)
    chunkstore.save(
        ns.chunks_path,
        ns.manifest_path,
        chunks,
        {
            "source": "beir",
            "dataset": dataset.name,
            "dataset_path": str(dataset.path),
            "beir_fingerprint": digest,
            "files": {},
        },
    )
    return ns


def _references_from(dataset: BeirDataset) -> tuple[dict[str, str], str]:
    """Reference answers: query metadata ``answer``/``reference``, else the top relevant passage."""
    refs: dict[str, str] = {}
    for qid, meta in dataset.query_metadata.items():
        value = meta.get("answer") or meta.get("reference")
        if isinstance(value, str) and value.strip():
            refs[qid] = value
    if refs:
        return refs, "query metadata 'answer'"
    if dataset.corpus:
        for qid, docs in dataset.qrels.items():
            best = max(docs.items(), key=lambda item: (item[1], item[0]), default=None)
            if best and best[1] > 0 and best[0] in dataset.corpus:
                refs[qid] = dataset.corpus[best[0]]["text"]
        return refs, "text of the top-graded relevant passage"
    return {}, ""


def load_eval_set(
    settings: Settings, dataset: str | Path | BeirDataset | None = None, split: str = "test"
) -> EvalSet:
    """Resolve ``dataset`` (see the module docstring) into an EvalSet."""
    if dataset is None:
        synthetic = _load_synthetic_val(settings)
        if synthetic is not None:
            return synthetic
        shipped = Path(settings.corpus) / "eval"
        if (shipped / "queries.jsonl").is_file():
            dataset = shipped
        else:
            raise FileNotFoundError(
                f"nothing to evaluate on: no synthetic validation split in {settings.synth_dir} "
                f"(run `rag-app finetune`) and no {shipped}/queries.jsonl; or pass a BEIR dataset"
            )
    ds = (
        dataset
        if isinstance(dataset, BeirDataset)
        else load_beir(Path(dataset), split=split, on_duplicate_query="disambiguate")
    )
    notes = []
    if ds.repaired:
        split_n = sum(1 for v in ds.repaired.values() if v.startswith("split"))
        notes.append(
            f"{len(ds.repaired)} query ids of {ds.name} are reused for different questions: "
            f"{split_n} split by focus/title into separate queries, "
            f"{len(ds.repaired) - split_n} dropped as ambiguous"
        )
    digest = fingerprint(ds.path) if ds.path is not None else None
    refs, ref_kind = _references_from(ds)
    # A dataset with its own passages is indexed in its own namespace and judged per
    # passage (chunk); one without (the shipped corpus/eval) is judged per document.
    with_corpus = ds.has_corpus
    granularity = "chunk" if with_corpus or _names_chunks(settings, ds.qrels) else "doc"
    return EvalSet(
        name=ds.name,
        split=ds.split,
        source="beir" if with_corpus else "corpus-eval",
        granularity=granularity,
        queries=dict(ds.queries),
        qrels=dict(ds.qrels),
        settings=(
            ingest_beir_corpus(settings, ds, digest or "nofingerprint") if with_corpus else settings
        ),
        path=str(ds.path),
        fingerprint=digest,
        references=refs,
        reference_kind=ref_kind,
        notes=notes,
    )


def _names_chunks(settings: Settings, qrels: dict[str, dict[str, int]]) -> bool:
    """Whether a corpus-less dataset judges the workspace's *chunks* (every judged id is a
    chunk id, none a document path), as `rag-app feedback export` writes it."""
    judged = {d for docs in qrels.values() for d in docs}
    if not judged:
        return False
    try:
        from rag_app import chunkstore

        chunks = chunkstore.load_chunks(settings.chunks_path, settings.manifest_path)
    except Exception:  # not ingested: the doc-level path reports it
        return False
    ids = {c.id for c in chunks}
    docs = {c.doc_id for c in chunks}
    return judged <= ids and not judged & docs
