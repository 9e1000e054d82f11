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

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from eval.configs import (
    ALL_CONFIGS,
    BASE_CONFIGS,
    RERANK_CONFIGS,
    ConfigSpec,
    config_pairs,
    metric_names,
    parse_config,
)
from eval.embedding_map import labels_for, pca_map
from eval.leak import TrainingOverlapError, find_finetuned, training_queries
from eval.results import (
    PRIMARY_METRIC,
    ConfigResult,
    RetrievalEvalResult,
    config_scores,
    load_results,
    slug,
    summary_lines,
)
from eval.sets import EvalSet, ingest_beir_corpus, load_eval_set, norm_query, reranker_spec
from rag_app.ir.beir import BeirDataset
from rag_app.ir.metrics import evaluate
from rag_app.ir.stats import compare
from rag_app.runs import read_record

if TYPE_CHECKING:
    from rag_app.config import Settings

log = logging.getLogger(__name__)


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


def _model_info(spec: str | None) -> dict[str, Any] | None:
    if spec is None:
        return None
    info: dict[str, Any] = {"spec": spec}
    path = Path(spec)
    record = read_record(path) if path.is_dir() else None
    if record is not None:
        card = record.model_dump(mode="json")
        info["run"] = {k: v for k, v in card.items() if not isinstance(v, list | dict)}
        info["run"]["metrics"] = card["metrics"]
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
    settings: Settings,
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
    overlap = [q for q, text in eval_set.queries.items() if norm_query(text) in train_texts]
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

        spec_r = reranker_spec(settings)
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
    settings: Settings,
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
            mode=spec.mode,
            rerank=spec.rerank,
        )
        description = retriever.describe()
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
    pairs = config_pairs(list(results))
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
                config_scores(base, metric),
                config_scores(cand, metric),
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
    labels = labels_for(eval_set, label_ids)
    emb_map = None
    if embedding_map and eval_set.granularity in ("chunk", "doc"):
        wanted = {role: spec for role, spec in models.items() if spec and role in needed}
        if wanted:
            emb_map = pca_map(eval_set, wanted, sample=300, seed=settings.seed)

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
        target = out_dir or Path(settings.eval_dir) / "retrieval" / slug(
            f"{eval_set.name}-{eval_set.split}"
        )
        result.save(target)
        say(f"results in {target}")
    return result


__all__ = [
    "ALL_CONFIGS",
    "BASE_CONFIGS",
    "ConfigResult",
    "EvalSet",
    "RetrievalEvalResult",
    "TrainingOverlapError",
    "find_finetuned",
    "ingest_beir_corpus",
    "load_eval_set",
    "load_results",
    "metric_names",
    "parse_config",
    "run_retrieval_eval",
    "summary_lines",
    "training_queries",
]
