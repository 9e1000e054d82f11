"""What the HTML and Markdown reports share: escaping, number formatting, the per-config
bootstrap intervals they both print, and the notes gathered from the results."""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

N_DIFF = 10


def escape(value: Any) -> str:
    return html.escape(str(value), quote=True)


def fmt(value: Any, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _bootstrap_mean_ci(
    values: Sequence[float], n_resamples: int = 2000, seed: int = 0
) -> tuple[float, float, float]:
    arr = np.asarray(values, dtype=np.float64)
    if arr.size == 0:
        return float("nan"), float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = arr[rng.integers(0, arr.size, size=(n_resamples, arr.size))].mean(axis=1)
    low, high = np.quantile(means, [0.025, 0.975])
    return float(arr.mean()), float(low), float(high)


def config_cis(data: Mapping[str, Any]) -> dict[str, dict[str, tuple[float, float, float]]]:
    """Per configuration and metric: (mean, 95% CI low, high) from the per-query rows."""
    values: dict[str, dict[str, list[float]]] = {}
    for row in data.get("per_query", []):
        for metric, value in row.get("scores", {}).items():
            if value is not None:
                values.setdefault(row["config"], {}).setdefault(metric, []).append(value)
    return {
        cfg: {m: _bootstrap_mean_ci(v) for m, v in metrics.items()}
        for cfg, metrics in values.items()
    }


def gather_notes(*datas: Mapping[str, Any] | None) -> list[str]:
    notes: list[str] = []
    for data in datas:
        if data:
            notes.extend(n for n in data.get("notes", []) if n not in notes)
    return notes
