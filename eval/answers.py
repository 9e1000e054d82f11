"""Answer-level evaluation: generate an answer per query with each retriever's context, score it.

``run_answer_eval(settings, dataset, configs, llm)`` uses the same query sets, training-query
guard and configuration names as the retrieval eval (``eval.retrieval``). For every query and
configuration it retrieves ``k`` passages, asks ``rag_app.answer.answer`` for a cited answer and
scores it offline with ``eval.grounding.GroundingScorer`` (faithfulness, citation precision /
recall, answer relevance, and correctness when the dataset has reference answers). An LLM
judge (any ``rag_app.llm`` backend) can be added with ``judge_llm`` and ``judge_runs``.

Base and fine-tuned are compared per query on each score (paired bootstrap CI and
randomisation test), over the queries where both have a value (e.g. faithfulness is undefined
for an answer without claims).

Outputs (``<workspace>/eval/answers/<dataset>-<split>``): ``results.json`` and
``per_query.jsonl`` (answer text, per-sentence support, scores).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from eval.answer_quality import answer_body, score_answer
from eval.grounding import PROXY_LIMITS, THRESHOLDS, AnswerScores, GroundingScorer, llm_judge
from eval.results import slug
from eval.retrieval import config_pairs, prepare_run
from rag_app.ir.beir import BeirDataset
from rag_app.ir.stats import compare

if TYPE_CHECKING:
    from rag_app.config import Settings
    from rag_app.llm.base import LLM

log = logging.getLogger(__name__)

DEFAULT_ANSWER_CONFIGS = ("hybrid-base", "hybrid-finetuned")
ANSWER_METRICS = (
    "key_fact_recall",
    "faithfulness",
    "citation_precision",
    "citation_recall",
    "answer_relevance",
    "correctness_f1",
    "correctness_sim",
    "judge_faithfulness",
)


@dataclass
class AnswerEvalResult:
    dataset: dict[str, Any]
    k: int
    configs: dict[str, dict[str, Any]]  # name -> {"mean": {...}, "n": {...}, ...}
    comparisons: list[dict[str, Any]]
    rows: list[dict[str, Any]]
    skipped_configs: dict[str, str]
    models: dict[str, Any]
    llm: str
    notes: list[str]
    dropped_training_overlap: int
    created: str
    grounding: dict[str, Any] = field(default_factory=dict)
    out_dir: Path | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": "answers",
            "created": self.created,
            "dataset": self.dataset,
            "k": self.k,
            "metrics": list(ANSWER_METRICS),
            "configs": self.configs,
            "comparisons": self.comparisons,
            "skipped_configs": self.skipped_configs,
            "models": self.models,
            "llm": self.llm,
            "notes": self.notes,
            "dropped_training_overlap": self.dropped_training_overlap,
            "grounding": self.grounding,
        }

    def save(self, out_dir: str | Path) -> Path:
        from rag_app.fsutil import atomic_write_text

        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(
            out / "results.json", json.dumps(self.to_dict(), indent=2, ensure_ascii=False)
        )
        atomic_write_text(
            out / "per_query.jsonl",
            "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in self.rows),
        )
        self.out_dir = out
        return out


def _default_answer_fn() -> Callable[..., Any]:
    try:
        from rag_app.answer import answer
    except ImportError as exc:  # pragma: no cover - the answer module is part of rag_app
        raise RuntimeError(f"rag_app.answer is not available: {exc}") from exc
    return answer


def _extractive_fn(retriever: Any, settings: Settings) -> Callable[..., Any]:
    """Quoted-evidence answers as the chat gives them, scored with this retriever's own
    embedder (the base or the fine-tuned one) and the workspace's BM25 statistics."""
    from rag_app.answer_modes import extractive_answer
    from rag_app.retrieve import embedder_of, load_corpus

    embedder = embedder_of(retriever)
    index = load_corpus(settings).bm25

    def answer(question: str, hits: Any, _llm: Any = None) -> Any:
        return extractive_answer(
            question, hits, embedder, index, abstain_below=settings.answer.abstain_below
        )

    return answer


def _llm_name(llm: Any) -> str:
    return str(getattr(llm, "name", None) or type(llm).__name__)


def run_answer_eval(
    settings: Settings,
    dataset: str | Path | BeirDataset | None = None,
    configs: Sequence[str] | None = None,
    llm: LLM | None = None,
    *,
    k: int | None = None,
    split: str = "test",
    finetuned: str | Path | None = None,
    on_overlap: str = "drop",
    limit: int | None = 50,
    judge_llm: LLM | None = None,
    judge_runs: int = 0,
    scorer: GroundingScorer | None = None,
    answer_fn: Callable[..., Any] | None = None,
    mode: str | None = None,
    out_dir: str | Path | None = None,
    save: bool = True,
    index: bool = True,
    n_resamples: int = 10_000,
    progress: bool = False,
    echo: Callable[[str], None] | None = None,
) -> AnswerEvalResult:
    """Generate and score answers for each configuration (default: hybrid base / fine-tuned).

    ``llm`` defaults to ``rag_app.llm.factory.build_llm(settings)``. ``k`` defaults to
    ``settings.retrieval.top_k`` (the passages the chat would use). ``limit`` defaults to 50
    queries, since generation dominates the cost (pass None for all). ``answer_fn(question,
    hits, llm)`` defaults to the answer ``mode`` (``extractive``, ``generative``, ``auto``;
    default ``answer.mode``) as the chat resolves it: quoted evidence scored with each
    configuration's own embedder, or ``rag_app.answer.answer``. Answers are also scored
    for correctness against reference answers where the dataset has them
    (``eval.answer_quality``: key-fact recall, polarity errors).
    """
    from rag_app.answer_modes import needs_llm, resolve_mode

    say = echo or (lambda line: log.info("%s", line))
    k = k or settings.retrieval.top_k
    served = settings.model_copy(
        update={"answer": settings.answer.model_copy(update={"mode": mode or settings.answer.mode})}
    )
    extractive = answer_fn is None and not needs_llm(served)
    if llm is None and not extractive:
        from rag_app.llm.factory import build_llm

        llm = build_llm(settings)
        if llm is None:
            raise ValueError(
                "the answer eval needs an LLM, but llm.backend is 'none'; set it to "
                "'embedded', 'llamacpp' or 'openai'"
            )
    if answer_fn is None and not extractive:
        answer_mode, _ = resolve_mode(served, llm, None)
        extractive = answer_mode == "extractive"
    answer_fn = answer_fn or _default_answer_fn()
    mode_used = "extractive" if extractive else "generative"
    say(f"answer mode: {mode_used}")
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
        default_configs=DEFAULT_ANSWER_CONFIGS,
    )
    eval_set = prep.eval_set
    scorer = scorer or GroundingScorer()
    from rag_app.retrieve import build_retriever

    rows: list[dict[str, Any]] = []
    per_config: dict[str, dict[str, dict[str, float]]] = {}
    summaries: dict[str, dict[str, Any]] = {}
    for spec in prep.runnable:
        model_spec = prep.models[spec.model] if spec.model else None
        retriever = build_retriever(
            eval_set.settings,
            model=model_spec,
            mode=spec.mode,
            rerank=spec.rerank,
        )
        config_answer = answer_fn
        if extractive:
            config_answer = _extractive_fn(retriever, eval_set.settings)
        scores_by_q: dict[str, dict[str, float]] = {}
        polarity_errors: list[str] = []
        errors = 0
        abstained = 0
        started = time.perf_counter()
        for i, qid in enumerate(prep.qids, start=1):
            question = prep.queries[qid]
            hits = retriever.retrieve(question, k)
            try:
                result = config_answer(question, hits, llm)
                text = getattr(result, "text", "") or ""
                error = getattr(result, "error", None)
                used = getattr(result, "hits", None) or hits
            except Exception as exc:  # one failed generation must not abort the eval
                text, error, used = "", f"{type(exc).__name__}: {exc}", hits
            passages = [h.chunk.text for h in used]
            reference = eval_set.references.get(qid)
            graded = text
            if extractive and getattr(result, "quotes", None):
                # the quotes with their citations, not the source lines printed under them
                # ("... 160 Nm [2]." : a marker after the full stop would open the next
                # sentence for the grader's splitter)
                graded = " ".join(
                    f"{q.unit.text.rstrip().rstrip('.')} [{q.unit.passage}]." for q in result.quotes
                )
            scored: AnswerScores = scorer.score(question, graded, passages, reference)
            if judge_llm is not None and judge_runs > 0 and text.strip():
                scored.judge = llm_judge(question, text, passages, judge_llm, runs=judge_runs)
            if error:
                errors += 1
            abstained += scored.abstained
            metrics = {m: v for m, v in scored.metrics().items() if v is not None}
            if reference and not error:
                correct = score_answer(
                    answer_body(result),
                    reference,
                    abstained=bool(getattr(result, "abstained", False)),
                )
                if correct.key_fact_recall is not None:
                    metrics["key_fact_recall"] = correct.key_fact_recall
                if correct.polarity_error:
                    polarity_errors.append(qid)
            scores_by_q[qid] = metrics
            rows.append(
                {
                    "config": spec.name,
                    "qid": qid,
                    "query": question,
                    "answer": text,
                    "error": error,
                    "passages": [h.chunk.id for h in used],
                    "reference": reference,
                    "scores": metrics,
                    "sentences": [s.__dict__ for s in scored.sentences],
                    "judge": scored.judge,
                }
            )
            if progress and i % 10 == 0:
                say(f"  {spec.name}: {i}/{len(prep.qids)} answers")
        per_config[spec.name] = scores_by_q
        mean: dict[str, float] = {}
        counts: dict[str, int] = {}
        for metric in ANSWER_METRICS:
            values = [s[metric] for s in scores_by_q.values() if metric in s]
            if values:
                mean[metric] = sum(values) / len(values)
                counts[metric] = len(values)
        judge_spread = [
            r["judge"]["std"]
            for r in rows
            if r["config"] == spec.name and r.get("judge") and r["judge"].get("std") is not None
        ]
        summaries[spec.name] = {
            "name": spec.name,
            "model": model_spec,
            "mean": mean,
            "n": counts,
            "n_queries": len(scores_by_q),
            "errors": errors,
            "abstained": abstained,
            "polarity_errors": polarity_errors,
            "answer_mode": mode_used,
            "seconds": round(time.perf_counter() - started, 2),
            "judge_mean_std": (sum(judge_spread) / len(judge_spread)) if judge_spread else None,
        }
        say(
            f"  {spec.name:<24} "
            + "  ".join(f"{m}={mean[m]:.3f}" for m in ANSWER_METRICS[:4] if m in mean)
        )

    comparisons: list[dict[str, Any]] = []
    for base_name, cand_name in config_pairs(list(per_config)):
        a, b = per_config[base_name], per_config[cand_name]
        for metric in ANSWER_METRICS:
            shared = [q for q in a if metric in a[q] and q in b and metric in b[q]]
            if len(shared) < 2:
                continue
            cmp = compare(
                {q: a[q][metric] for q in shared},
                {q: b[q][metric] for q in shared},
                n_resamples=n_resamples,
                n_permutations=n_resamples,
                seed=settings.seed,
            )
            comparisons.append(
                {"base": base_name, "candidate": cand_name, "metric": metric, **cmp.to_dict()}
            )

    notes = list(prep.notes)
    if eval_set.reference_kind:
        notes.append(f"correctness is measured against: {eval_set.reference_kind}")
    result = AnswerEvalResult(
        dataset=eval_set.describe(),
        k=k,
        configs=summaries,
        comparisons=comparisons,
        rows=rows,
        skipped_configs=prep.skipped,
        models={"base": prep.models["base"], "finetuned": prep.models["finetuned"]},
        llm=_llm_name(llm),
        notes=notes,
        dropped_training_overlap=len(prep.overlap),
        created=datetime.now(UTC).isoformat(timespec="seconds"),
        grounding={
            "method": "proxy",
            "thresholds": THRESHOLDS,
            "limits": PROXY_LIMITS,
            "embedder": getattr(scorer.embedder, "fingerprint", "all-MiniLM-L6-v2"),
            "judge": _llm_name(judge_llm) if judge_llm is not None and judge_runs else None,
            "judge_runs": judge_runs if judge_llm is not None else 0,
        },
    )
    if save:
        target = out_dir or Path(settings.eval_dir) / "answers" / slug(
            f"{eval_set.name}-{eval_set.split}"
        )
        result.save(target)
        say(f"results in {target}")
    return result


__all__ = ["ANSWER_METRICS", "AnswerEvalResult", "run_answer_eval"]
