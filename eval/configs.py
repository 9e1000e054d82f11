"""The retrieval configurations the eval harness knows, by name: ``bm25``,
``dense-base``, ``hybrid-finetuned+rerank``, ... (`parse_config`), the metrics each gets
(`metric_names`) and the base / fine-tuned pairs it compares (`config_pairs`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

BASE_CONFIGS = ("bm25", "dense-base", "dense-finetuned", "hybrid-base", "hybrid-finetuned")
RERANK_CONFIGS = ("hybrid-base+rerank", "hybrid-finetuned+rerank")
ALL_CONFIGS = (
    *BASE_CONFIGS,
    "bm25+rerank",
    "dense-base+rerank",
    "dense-finetuned+rerank",
    *RERANK_CONFIGS,
)
_CONFIG_RE = re.compile(r"^(bm25|dense|hybrid)(?:-(base|finetuned))?(\+rerank)?$")


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


def config_pairs(names: Sequence[str]) -> list[tuple[str, str]]:
    present = set(names)
    pairs = []
    for name in names:
        if "-base" in name:
            other = name.replace("-base", "-finetuned")
            if other in present:
                pairs.append((name, other))
    return pairs
