"""What a retrieval eval produced: per configuration means, per-query scores and rankings,
comparisons; written as results.json / per_query.jsonl / diff.jsonl and read back."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from eval.sets import iter_jsonl

PRIMARY_METRIC = "ndcg@10"


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


def config_scores(res: ConfigResult, metric: str) -> dict[str, float]:
    return {qid: scores[metric] for qid, scores in res.per_query.items()}


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-") or "eval"


def load_results(path: str | Path) -> dict[str, Any]:
    """A saved retrieval (or answers) result folder as plain data, per-query rows included."""
    root = Path(path)
    if root.is_file():
        root = root.parent
    data = json.loads((root / "results.json").read_text(encoding="utf-8"))
    for name in ("per_query", "diff"):
        file = root / f"{name}.jsonl"
        data[name] = list(iter_jsonl(file)) if file.is_file() else []
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
