"""Retrieval evaluation: every retriever configuration on one held-out query set.

``run_retrieval_eval(settings, dataset, configs, k)`` scores BM25, dense and hybrid retrieval
with the base and the fine-tuned embedder (and each with the trained reranker when one
exists) on the same queries, then compares base and fine-tuned per query: a paired bootstrap
CI and a randomisation-test p-value per metric, and a qualitative diff (what entered and what
left the top k) for every query.

Query sets
----------
* ``dataset=None``: the workspace's held-out synthetic validation split (``settings.synth_dir``,
  written by ``rag-app finetune``), judged at chunk level (a query's relevant item is the chunk
  it was written from); without one, the shipped ``<corpus>/eval`` set when it exists.
* a BEIR folder **without** ``corpus.jsonl`` (the shipped ``corpus/eval``): qrels name documents
  by path relative to the corpus folder; retrieved chunks are mapped to ``Chunk.doc_id``, only
  the first (best) chunk of each document counts, and more chunks than k are retrieved so that
  k distinct documents remain.
* a BEIR folder **with** ``corpus.jsonl`` (e.g. ``../shared/datasets/medquad-small``): its
  passages become chunks (one per passage, chunk id = passage id) in a workspace namespace of
  their own, ``<workspace>/eval/beir/<name>-<fingerprint>``, indexed with each model there, so
  the user's own workspace is never touched.

Never on training queries
-------------------------
Queries whose normalised text appears among the fine-tuned run's training queries (its synth
train split, and any train file its ``run.json`` names) are dropped and counted
(``on_overlap="drop"``, the default) or make the eval fail (``on_overlap="refuse"``).

Outputs (``out_dir``, default ``<workspace>/eval/retrieval/<dataset>-<split>``)
------------------------------------------------------------------------------
``results.json`` (everything but the per-query rows), ``per_query.jsonl`` (one row per
configuration and query: scores and the top-k ids with their grades) and ``diff.jsonl`` (per
compared pair and query: entered, left, score change).
"""

from __future__ import annotations

import json
import logging
import math
import re
import statistics
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from rag_app.ir.beir import BeirDataset, fingerprint, load_beir
from rag_app.ir.metrics import evaluate
from rag_app.ir.stats import compare

log = logging.getLogger(__name__)

BASE_CONFIGS = ("bm25", "dense-base", "dense-finetuned", "hybrid-base", "hybrid-finetuned")
RERANK_CONFIGS = ("hybrid-base+rerank", "hybrid-finetuned+rerank")
ALL_CONFIGS = (
    *BASE_CONFIGS,
    "bm25+rerank",
    "dense-base+rerank",
    "dense-finetuned+rerank",
    *RERANK_CONFIGS,
)
PRIMARY_METRIC = "ndcg@10"
_CONFIG_RE = re.compile(r"^(bm25|dense|hybrid)(?:-(base|finetuned))?(\+rerank)?$")


class TrainingOverlapError(RuntimeError):
    """The eval set shares queries with the fine-tuned model's training data."""


def metric_names(k: int) -> tuple[str, ...]:
    """The metrics every configuration gets: nDCG@10 and MRR@10 fixed, the rest at k."""
    return (
        "ndcg@10",
        f"recall@{k}",
        "mrr@10",
        f"map@{k}",
        f"precision@{k}",
        f"hit_rate@{k}",
    )


@dataclass(frozen=True)
class ConfigSpec:
    """A parsed configuration name such as ``hybrid-finetuned+rerank``."""

    name: str
    mode: str  # bm25 / dense / hybrid
    model: str | None  # "base", "finetuned" or None (bm25)
    rerank: bool


def parse_config(name: str) -> ConfigSpec:
    match = _CONFIG_RE.match(name.strip().lower())
    if match is None or (match.group(1) == "bm25") != (match.group(2) is None):
        raise ValueError(
            f"unknown retrieval configuration {name!r}; known: {', '.join(ALL_CONFIGS)}"
        )
    mode, model, rerank = match.groups()
    return ConfigSpec(name.strip().lower(), mode, model, bool(rerank))


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
    settings: Any  # the Settings whose workspace holds the chunks and indexes
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


def _norm_query(text: str) -> str:
    return " ".join(re.findall(r"[a-z0-9]+", text.lower()))


def _iter_jsonl(path: Path) -> Iterable[dict[str, Any]]:
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            line = line.strip()
            if line:
                obj = json.loads(line)
                if isinstance(obj, dict):
                    yield obj


_QUERY_KEYS = ("query", "question", "anchor", "text")
_POSITIVE_KEYS = ("chunk_id", "positive_id", "pos_id", "doc_id", "corpus_id", "chunk")


def _synth_file(settings: Any, names: Sequence[str]) -> Path | None:
    root = Path(settings.synth_dir)
    for name in names:
        for candidate in (root / f"{name}.jsonl", root / name / "queries.jsonl"):
            if candidate.is_file():
                return candidate
    return None


def _synth_records(path: Path) -> list[tuple[str, str]]:
    """(query text, positive chunk id) pairs from a synth split file."""
    out = []
    for obj in _iter_jsonl(path):
        query = next((obj[k] for k in _QUERY_KEYS if isinstance(obj.get(k), str)), None)
        positive = next((obj[k] for k in _POSITIVE_KEYS if obj.get(k)), None)
        if isinstance(positive, dict):
            positive = positive.get("id")
        if query and isinstance(positive, str):
            out.append((query, positive))
    return out


def _load_synthetic_val(settings: Any) -> EvalSet | None:
    """The finetune stage's held-out validation split, if it wrote one."""
    try:  # the finetune package knows its own format best
        from finetune import synth as synth_module  # type: ignore[attr-defined]

        loader = getattr(synth_module, "load_split", None)
    except ImportError:
        loader = None
    records: list[tuple[str, str]] = []
    path = _synth_file(settings, ("val", "validation", "dev"))
    if loader is not None:
        try:
            for item in loader(settings, "val"):
                query = getattr(item, "query", None) or (
                    item.get("query") if isinstance(item, dict) else None
                )
                positive = getattr(item, "chunk_id", None) or (
                    item.get("chunk_id") if isinstance(item, dict) else None
                )
                if query and positive:
                    records.append((query, positive))
        except Exception as exc:  # fall back to reading the file ourselves
            log.debug("finetune.synth.load_split failed: %s", exc)
            records = []
    if not records and path is not None:
        records = _synth_records(path)
    if not records:
        return None
    queries: dict[str, str] = {}
    qrels: dict[str, dict[str, int]] = {}
    seen: dict[str, str] = {}
    for i, (query, chunk_id) in enumerate(records):
        key = _norm_query(query)
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
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def _namespace_settings(settings: Any, dataset: BeirDataset, digest: str) -> Any:
    """Settings whose workspace is the dataset's own namespace under the eval folder."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", dataset.name).strip("-") or "dataset"
    workspace = Path(settings.eval_dir) / "beir" / f"{slug}-{digest[:12]}"
    reranker = _reranker_spec(settings)
    return settings.model_copy(
        update={
            "workspace": workspace,
            "models": settings.models.model_copy(update={"reranker": reranker}),
            # a shared Chroma server would mix this namespace with the user's collections
            "retrieval": settings.retrieval.model_copy(update={"chroma_url": None}),
        }
    )


def _reranker_spec(settings: Any) -> str | None:
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


def ingest_beir_corpus(settings: Any, dataset: BeirDataset, digest: str) -> Any:
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
    settings: Any, dataset: str | Path | BeirDataset | None = None, split: str = "test"
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


def _names_chunks(settings: Any, qrels: dict[str, dict[str, int]]) -> bool:
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


# --- models -----------------------------------------------------------------------------------
def find_finetuned(settings: Any) -> Path | None:
    """The newest usable fine-tuned embedder in the workspace (`rag_app.registry.latest`)."""
    from rag_app.registry import latest

    run = latest(settings, "embedder")
    return run.path if run is not None else None


def _run_json(model_dir: Path | None) -> dict[str, Any]:
    if model_dir is None:
        return {}
    path = Path(model_dir) / "run.json"
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def training_queries(settings: Any, model_dir: Path | None) -> tuple[set[str], list[str]]:
    """Normalised texts of the queries the fine-tuned model (or the workspace) trained on.

    Sources: the workspace synth train split, files named by the run's ``run.json`` under keys
    containing "train" (JSONL with a query field, or a BEIR qrels TSV next to its
    queries.jsonl), and inline query lists in ``run.json``. Returns (texts, sources read).
    """
    texts: set[str] = set()
    sources: list[str] = []
    train = _synth_file(settings, ("train",))
    if train is not None:
        texts.update(_norm_query(q) for q, _ in _synth_records(train))
        sources.append(str(train))
    record = _run_json(model_dir)

    def visit(key: str, value: Any) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                visit(f"{key}.{k}", v)
        elif isinstance(value, list) and "train" in key.lower():
            for item in value:
                if isinstance(item, str) and len(item.split()) > 1:
                    texts.add(_norm_query(item))
                else:
                    visit(key, item)
        elif isinstance(value, str) and "train" in key.lower():
            path = Path(value)
            if not path.is_absolute() and model_dir is not None:
                for base in (Path(model_dir), Path(settings.workspace), Path.cwd()):
                    if (base / path).exists():
                        path = base / path
                        break
            if path.is_file() and path.suffix == ".jsonl" and str(path) not in sources:
                texts.update(_norm_query(q) for q, _ in _synth_records(path))
                for obj in _iter_jsonl(path):  # a queries file without positives
                    for k in _QUERY_KEYS:
                        if isinstance(obj.get(k), str):
                            texts.add(_norm_query(obj[k]))
                            break
                sources.append(str(path))
            elif path.is_file() and path.suffix == ".tsv" and str(path) not in sources:
                # every text written under a trained query id, duplicates included: a guard
                # should over-include rather than miss a training query
                qids = {line.split("\t", 1)[0].strip() for line in path.open(encoding="utf-8")}
                queries_file = path.parent.parent / "queries.jsonl"
                if queries_file.is_file():
                    for obj in _iter_jsonl(queries_file):
                        if str(obj.get("_id")) in qids and isinstance(obj.get("text"), str):
                            texts.add(_norm_query(obj["text"]))
                    sources.append(str(path))

    for key, value in record.items():
        visit(key, value)
    texts.discard("")
    return texts, sources


# --- results ----------------------------------------------------------------------------------
@dataclass
class ConfigResult:
    name: str
    description: str
    model: str | None
    mean: dict[str, float]
    per_query: dict[str, dict[str, float]]
    rankings: dict[str, list[str]]
    seconds: float
    latency_ms_p50: float
    latency_ms_p95: float
    notes: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "model": self.model,
            "mean": self.mean,
            "seconds": round(self.seconds, 3),
            "latency_ms_p50": round(self.latency_ms_p50, 2),
            "latency_ms_p95": round(self.latency_ms_p95, 2),
            "notes": self.notes,
        }


@dataclass
class RetrievalEvalResult:
    dataset: dict[str, Any]
    k: int
    metrics: tuple[str, ...]
    configs: dict[str, ConfigResult]
    comparisons: list[dict[str, Any]]
    diffs: list[dict[str, Any]]
    skipped_configs: dict[str, str]
    models: dict[str, Any]
    dropped_training_overlap: int
    training_query_sources: list[str]
    notes: list[str]
    created: str
    settings: dict[str, Any]
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]
    labels: dict[str, str]
    embedding_map: dict[str, Any] | None = None
    out_dir: Path | None = None

    def table(self) -> list[dict[str, Any]]:
        """One row per configuration: name and mean of every metric."""
        return [{"config": name, **res.mean} for name, res in self.configs.items()]

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": "retrieval",
            "created": self.created,
            "dataset": self.dataset,
            "k": self.k,
            "metrics": list(self.metrics),
            "configs": {name: res.summary() for name, res in self.configs.items()},
            "comparisons": self.comparisons,
            "skipped_configs": self.skipped_configs,
            "models": self.models,
            "dropped_training_overlap": self.dropped_training_overlap,
            "training_query_sources": self.training_query_sources,
            "notes": self.notes,
            "settings": self.settings,
            "embedding_map": self.embedding_map,
        }

    def save(self, out_dir: str | Path) -> Path:
        """Write results.json, per_query.jsonl and diff.jsonl under ``out_dir``."""
        from rag_app.fsutil import atomic_write_text

        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(
            out / "results.json", json.dumps(self.to_dict(), indent=2, ensure_ascii=False)
        )
        rows = []
        for name, res in self.configs.items():
            for qid in res.per_query:
                qrel = self.qrels.get(qid, {})
                rows.append(
                    {
                        "config": name,
                        "qid": qid,
                        "query": self.queries.get(qid, ""),
                        "scores": res.per_query[qid],
                        "top": [[d, qrel.get(d, 0)] for d in res.rankings.get(qid, [])],
                        "relevant": qrel,
                    }
                )
        atomic_write_text(
            out / "per_query.jsonl",
            "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows),
        )
        atomic_write_text(
            out / "diff.jsonl",
            "".join(json.dumps(d, ensure_ascii=False) + "\n" for d in self.diffs),
        )
        atomic_write_text(
            out / "labels.json", json.dumps(self.labels, ensure_ascii=False, indent=0)
        )
        self.out_dir = out
        return out


# --- the run ------------------------------------------------------------------------------------
def _percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return 0.0
    return float(np.percentile(np.asarray(values, dtype=np.float64), q))


def _rank_ids(hits: Sequence[Any], granularity: str, k: int) -> list[str]:
    out: list[str] = []
    seen: set[str] = set()
    for hit in hits:
        key = hit.chunk.doc_id if granularity == "doc" else hit.chunk.id
        if key not in seen:
            seen.add(key)
            out.append(key)
            if len(out) == k:
                break
    return out


def _pairs(names: Sequence[str]) -> list[tuple[str, str]]:
    present = set(names)
    pairs = []
    for name in names:
        if "-base" in name:
            other = name.replace("-base", "-finetuned")
            if other in present:
                pairs.append((name, other))
    return pairs


def _diff(
    base: ConfigResult,
    cand: ConfigResult,
    qrels: Mapping[str, Mapping[str, int]],
    queries: Mapping[str, str],
    metric: str,
) -> list[dict[str, Any]]:
    rows = []
    for qid in base.per_query:
        before = base.rankings.get(qid, [])
        after = cand.rankings.get(qid, [])
        qrel = qrels.get(qid, {})
        delta = cand.per_query[qid][metric] - base.per_query[qid][metric]
        rows.append(
            {
                "base": base.name,
                "candidate": cand.name,
                "qid": qid,
                "query": queries.get(qid, ""),
                "metric": metric,
                "base_score": base.per_query[qid][metric],
                "candidate_score": cand.per_query[qid][metric],
                "delta": delta,
                "outcome": "win" if delta > 1e-12 else "loss" if delta < -1e-12 else "tie",
                "entered": [[d, qrel.get(d, 0)] for d in after if d not in before],
                "left": [[d, qrel.get(d, 0)] for d in before if d not in after],
                "relevant": dict(qrel),
                "base_top": before,
                "candidate_top": after,
            }
        )
    return rows


def _labels(eval_set: EvalSet, ids: Iterable[str]) -> dict[str, str]:
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


def _embedding_map(
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


def _model_info(spec: str | None) -> dict[str, Any] | None:
    if spec is None:
        return None
    info: dict[str, Any] = {"spec": spec}
    path = Path(spec)
    card = _run_json(path) if path.is_dir() else {}
    if card:
        info["run"] = {k: v for k, v in card.items() if not isinstance(v, list | dict)}
        for key in ("metrics", "eval", "config", "train"):
            if isinstance(card.get(key), dict):
                info["run"][key] = card[key]
    readme = path / "README.md" if path.is_dir() else None
    if readme is not None and readme.is_file():
        info["model_card"] = readme.read_text(encoding="utf-8", errors="replace")[:4000]
    return info


@dataclass
class PreparedRun:
    """What retrieval and answer evals share: the query set, models and runnable configs."""

    eval_set: EvalSet
    models: dict[str, str | None]
    finetuned_dir: Path | None
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]
    runnable: list[ConfigSpec]
    skipped: dict[str, str]
    reranker_reason: str
    overlap: list[str]
    train_sources: list[str]
    notes: list[str]

    @property
    def qids(self) -> list[str]:
        return list(self.queries)


def prepare_run(
    settings: Any,
    dataset: str | Path | BeirDataset | None,
    configs: Sequence[str] | None,
    *,
    split: str = "test",
    finetuned: str | Path | None = None,
    on_overlap: str = "drop",
    limit: int | None = None,
    index: bool = True,
    progress: bool = False,
    say: Callable[[str], None] = print,
    default_configs: Sequence[str] = (*BASE_CONFIGS, *RERANK_CONFIGS),
) -> PreparedRun:
    """Load the eval set, drop training queries, pick runnable configs, bring indexes up to
    date. Raises TrainingOverlapError (``on_overlap="refuse"``), ValueError (nothing to run)."""
    if on_overlap not in ("drop", "refuse"):
        raise ValueError("on_overlap must be 'drop' or 'refuse'")
    eval_set = load_eval_set(settings, dataset, split=split)
    notes = list(eval_set.notes)

    finetuned_dir = Path(finetuned) if finetuned is not None else find_finetuned(settings)
    models = {
        "base": settings.models.embedder,
        "finetuned": str(finetuned_dir.resolve()) if finetuned_dir is not None else None,
    }
    if finetuned_dir is not None and not Path(finetuned_dir).exists():
        raise FileNotFoundError(f"fine-tuned model not found: {finetuned_dir}")

    # never score queries the model trained on
    train_texts, train_sources = training_queries(settings, finetuned_dir)
    overlap = [q for q, text in eval_set.queries.items() if _norm_query(text) in train_texts]
    if overlap:
        message = (
            f"{len(overlap)} of {len(eval_set.queries)} eval queries are training queries of "
            f"the fine-tuned model ({', '.join(train_sources)})"
        )
        if on_overlap == "refuse":
            raise TrainingOverlapError(message + "; refusing to evaluate on them")
        say(f"dropped {message}")
        notes.append(f"dropped {message}")
        for qid in overlap:
            eval_set.queries.pop(qid, None)
            eval_set.qrels.pop(qid, None)
    qids = [q for q in eval_set.queries if q in eval_set.qrels]
    if limit is not None:
        qids = qids[:limit]
        notes.append(f"limited to the first {len(qids)} queries")
    if not qids:
        raise ValueError("no queries left to evaluate")
    qrels = {q: eval_set.qrels[q] for q in qids}
    queries = {q: eval_set.queries[q] for q in qids}

    if eval_set.granularity == "doc":
        try:
            from rag_app import chunkstore

            doc_ids = {
                c.doc_id
                for c in chunkstore.load_chunks(
                    eval_set.settings.chunks_path, eval_set.settings.manifest_path
                )
            }
            unknown = {d for docs in qrels.values() for d in docs if d not in doc_ids}
            if unknown:
                notes.append(
                    f"{len(unknown)} judged documents are not in the workspace's chunks "
                    f"(e.g. {sorted(unknown)[:3]}); re-run `rag-app ingest`?"
                )
        except Exception as exc:
            raise RuntimeError(f"cannot read the workspace's chunks: {exc}") from exc

    # which configurations
    reranker_available = False
    reranker_reason = "no reranker configured"
    try:
        from rag_app.rerank import load_reranker

        spec_r = _reranker_spec(settings)
        # nothing to load: the user's own settings say why (off, none trained, or none
        # that beat the unreranked order)
        probe = settings
        if spec_r is not None:
            probe = eval_set.settings.model_copy(
                update={"models": eval_set.settings.models.model_copy(update={"reranker": spec_r})}
            )
        reranker, reranker_reason = load_reranker(probe)
        reranker_available = reranker is not None
        if reranker_available:
            eval_set.settings = probe
    except Exception as exc:
        reranker_reason = f"reranking off: {exc}"
    names = list(configs) if configs else list(default_configs)
    specs = [parse_config(n) for n in names]
    skipped: dict[str, str] = {}
    runnable: list[ConfigSpec] = []
    for spec in specs:
        if spec.model == "finetuned" and models["finetuned"] is None:
            skipped[spec.name] = (
                f"no fine-tuned embedder in {settings.models_dir} (run `rag-app finetune`)"
            )
        elif spec.rerank and not reranker_available:
            skipped[spec.name] = reranker_reason
        else:
            runnable.append(spec)
    if not runnable:
        raise ValueError(f"no configuration can run: {skipped}")

    from rag_app import index as index_module

    needed = {spec.model for spec in runnable if spec.model}
    if index:
        for role in ("base", "finetuned"):
            if role in needed:
                say(f"indexing {eval_set.name} with the {role} model ({models[role]}) ...")
                report = index_module.run(eval_set.settings, model=models[role], progress=progress)
                if report.embedded:
                    say(f"  embedded {report.embedded} chunks in {report.seconds:.1f}s")

    return PreparedRun(
        eval_set=eval_set,
        models=models,
        finetuned_dir=finetuned_dir,
        queries=queries,
        qrels=qrels,
        runnable=runnable,
        skipped=skipped,
        reranker_reason=reranker_reason,
        overlap=overlap,
        train_sources=train_sources,
        notes=notes,
    )


def run_retrieval_eval(
    settings: Any,
    dataset: str | Path | BeirDataset | None = None,
    configs: Sequence[str] | None = None,
    k: int = 10,
    *,
    split: str = "test",
    finetuned: str | Path | None = None,
    on_overlap: str = "drop",
    limit: int | None = None,
    out_dir: str | Path | None = None,
    save: bool = True,
    index: bool = True,
    embedding_map: bool = True,
    n_resamples: int = 10_000,
    progress: bool = False,
    echo: Callable[[str], None] | None = None,
) -> RetrievalEvalResult:
    """Evaluate retriever configurations on held-out queries; see the module docstring.

    ``configs`` default: the five base configurations, plus the hybrid rerank pair when a
    reranker is configured. Configurations that cannot run (no fine-tuned model, no reranker)
    are skipped with the reason in ``skipped_configs``. ``finetuned`` defaults to the newest
    fine-tuned embedder in the workspace. ``index=True`` brings each model's index up to date
    first (incremental; a no-op when nothing changed). ``limit`` keeps the first n queries
    (smoke runs). ``echo`` receives progress lines (the CLI passes ``typer.echo``).
    """
    if k < 1:
        raise ValueError("k must be >= 1")
    say = echo or (lambda line: log.info("%s", line))
    prep = prepare_run(
        settings,
        dataset,
        configs,
        split=split,
        finetuned=finetuned,
        on_overlap=on_overlap,
        limit=limit,
        index=index,
        progress=progress,
        say=say,
    )
    eval_set, models, queries, qrels = prep.eval_set, prep.models, prep.queries, prep.qrels
    qids, runnable, skipped, notes = prep.qids, prep.runnable, prep.skipped, prep.notes
    overlap, train_sources, reranker_reason = prep.overlap, prep.train_sources, prep.reranker_reason
    from rag_app.retrieve import build_retriever

    needed = {spec.model for spec in runnable if spec.model}
    depth = max(k, 10)
    fetch = depth if eval_set.granularity == "chunk" else max(depth * 5, 50)
    names_metric = metric_names(k)
    results: dict[str, ConfigResult] = {}
    for spec in runnable:
        model_spec = models[spec.model] if spec.model else None
        retriever = build_retriever(
            eval_set.settings,
            model=model_spec,
            mode=spec.mode,  # type: ignore[arg-type]
            rerank=spec.rerank,
        )
        describe = getattr(retriever, "describe", None)
        description = describe() if callable(describe) else spec.name
        rankings: dict[str, list[str]] = {}
        latencies: list[float] = []
        started = time.perf_counter()
        for i, qid in enumerate(qids, start=1):
            t0 = time.perf_counter()
            hits = retriever.retrieve(queries[qid], fetch)
            latencies.append((time.perf_counter() - t0) * 1000)
            rankings[qid] = _rank_ids(hits, eval_set.granularity, depth)
            if progress and i % 100 == 0:
                say(f"  {spec.name}: {i}/{len(qids)} queries")
        seconds = time.perf_counter() - started
        scored = evaluate(qrels, rankings, names_metric)
        results[spec.name] = ConfigResult(
            name=spec.name,
            description=description,
            model=model_spec,
            mean=scored.mean,
            per_query=scored.per_query,
            rankings={q: r[:k] if k < depth else r for q, r in rankings.items()},
            seconds=seconds,
            latency_ms_p50=_percentile(latencies, 50),
            latency_ms_p95=_percentile(latencies, 95),
            notes=list(getattr(retriever, "notes", []) or []),
        )
        say(
            f"  {spec.name:<24} "
            + "  ".join(f"{m}={scored.mean[m]:.4f}" for m in names_metric[:3])
            + f"  ({seconds:.1f}s)"
        )

    # paired comparisons base -> fine-tuned, and best base -> best fine-tuned
    comparisons: list[dict[str, Any]] = []
    diffs: list[dict[str, Any]] = []
    pairs = _pairs(list(results))
    base_names = [n for n in results if "finetuned" not in n]
    tuned_names = [n for n in results if "finetuned" in n]
    best_pair = None
    if base_names and tuned_names:
        best_base = max(base_names, key=lambda n: results[n].mean[PRIMARY_METRIC])
        best_tuned = max(tuned_names, key=lambda n: results[n].mean[PRIMARY_METRIC])
        best_pair = (best_base, best_tuned)
        if best_pair not in pairs:
            pairs.append(best_pair)
    for base_name, cand_name in pairs:
        base, cand = results[base_name], results[cand_name]
        for metric in names_metric:
            cmp = compare(
                _scores(base, metric),
                _scores(cand, metric),
                n_resamples=n_resamples,
                n_permutations=n_resamples,
                seed=settings.seed,
            )
            comparisons.append(
                {
                    "base": base_name,
                    "candidate": cand_name,
                    "metric": metric,
                    "best_vs_best": (base_name, cand_name) == best_pair,
                    **cmp.to_dict(),
                }
            )
        diffs.extend(_diff(base, cand, qrels, queries, PRIMARY_METRIC))
    if best_pair is not None:
        notes.append(
            f"best base ({best_pair[0]}) and best fine-tuned ({best_pair[1]}) were picked by "
            f"{PRIMARY_METRIC} on this same query set, which flatters both slightly"
        )

    label_ids = {d for r in diffs for key in ("entered", "left") for d, _ in r[key]}
    label_ids.update(d for docs in qrels.values() for d in docs)
    labels = _labels(eval_set, label_ids)
    emb_map = None
    if embedding_map and eval_set.granularity in ("chunk", "doc"):
        wanted = {role: spec for role, spec in models.items() if spec and role in needed}
        if wanted:
            emb_map = _embedding_map(eval_set, wanted, sample=300, seed=settings.seed)

    result = RetrievalEvalResult(
        dataset=eval_set.describe(),
        k=k,
        metrics=names_metric,
        configs=results,
        comparisons=comparisons,
        diffs=diffs,
        skipped_configs=skipped,
        models={
            "base": _model_info(models["base"]),
            "finetuned": _model_info(models["finetuned"]),
            "reranker": reranker_reason,
        },
        dropped_training_overlap=len(overlap),
        training_query_sources=train_sources,
        notes=notes,
        created=datetime.now(UTC).isoformat(timespec="seconds"),
        settings=settings.redacted(),
        queries=queries,
        qrels=qrels,
        labels=labels,
        embedding_map=emb_map,
    )
    if save:
        target = out_dir or Path(settings.eval_dir) / "retrieval" / _slug(
            f"{eval_set.name}-{eval_set.split}"
        )
        result.save(target)
        say(f"results in {target}")
    return result


def _scores(res: ConfigResult, metric: str) -> dict[str, float]:
    return {qid: scores[metric] for qid, scores in res.per_query.items()}


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-") or "eval"


def load_results(path: str | Path) -> dict[str, Any]:
    """A saved retrieval (or answers) result folder as plain data, per-query rows included."""
    root = Path(path)
    if root.is_file():
        root = root.parent
    data = json.loads((root / "results.json").read_text(encoding="utf-8"))
    for name in ("per_query", "diff"):
        file = root / f"{name}.jsonl"
        data[name] = list(_iter_jsonl(file)) if file.is_file() else []
    labels = root / "labels.json"
    data["labels"] = json.loads(labels.read_text(encoding="utf-8")) if labels.is_file() else {}
    data["path"] = str(root)
    return data


def summary_lines(result: RetrievalEvalResult | Mapping[str, Any], metrics: int = 3) -> list[str]:
    """A short plain-text before/after table for terminals."""
    data = result.to_dict() if isinstance(result, RetrievalEvalResult) else result
    names = list(data["metrics"])[:metrics]
    lines = [f"{'config':<26}" + "".join(f"{m:>12}" for m in names)]
    for name, cfg in data["configs"].items():
        lines.append(f"{name:<26}" + "".join(f"{cfg['mean'][m]:>12.4f}" for m in names))
    for cmp in data["comparisons"]:
        if cmp["metric"] == PRIMARY_METRIC:
            lines.append(
                f"{cmp['candidate']} vs {cmp['base']}: {PRIMARY_METRIC} "
                f"{cmp['delta']:+.4f} [{cmp['ci_low']:+.4f}, {cmp['ci_high']:+.4f}] "
                f"p={cmp['p_value']:.4f} (wins {cmp['wins']}, losses {cmp['losses']})"
            )
    for name, reason in data.get("skipped_configs", {}).items():
        lines.append(f"skipped {name}: {reason}")
    return lines


def mean_ci(values: Sequence[float]) -> tuple[float, float]:
    """Mean and normal-approximation 95% half-width (for bar-chart error bars)."""
    if not values:
        return 0.0, 0.0
    mean = statistics.fmean(values)
    if len(values) < 2:
        return mean, 0.0
    return mean, 1.96 * statistics.stdev(values) / math.sqrt(len(values))


__all__ = [
    "ALL_CONFIGS",
    "BASE_CONFIGS",
    "ConfigResult",
    "EvalSet",
    "RetrievalEvalResult",
    "TrainingOverlapError",
    "find_finetuned",
    "load_eval_set",
    "load_results",
    "metric_names",
    "parse_config",
    "run_retrieval_eval",
    "summary_lines",
    "training_queries",
]
