"""The fine-tuning part of the configuration: synthetic queries, negatives, the trainers.

Kept apart from `rag_app.config` (which re-exports every name) because it is most of the
settings' length; `Settings.synth` and `Settings.finetune` are these models.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from rag_app.config_base import Section

log = logging.getLogger(__name__)


class SynthSettings(Section):
    """Synthetic training queries (`rag-app synth`).

    Defaults follow the measured ablation of issue 10 (docs/BENCHMARKS.md): the LLM writes
    the *main* question of each chunk, pseudo-queries from the corpus's own structure (the
    document's title plus the terms that set a chunk apart from its siblings) are mixed in,
    and a query is kept only when the base retriever ranks its source chunk in the top 20
    (round-trip consistency). With `finetune.method = "adapter"` this recipe beat the base
    model on medquad-small's real test questions; looser or stricter filters did not help.
    """

    real_examples: int = Field(
        8,
        ge=0,
        le=16,
        description=(
            "Up to this many real questions from finetune.train_data (training side only) "
            "replace the question prompt's fixed few-shot examples; 0 keeps the fixed ones."
        ),
    )
    real_example_chars: int = Field(
        300, ge=50, le=2000, description="Passage text shown with each real example."
    )
    llm_queries_per_chunk: int = Field(
        1, ge=0, le=20, description="LLM candidates per chunk (styles alternate)."
    )
    styles: list[Literal["keyword", "question"]] = Field(
        default_factory=lambda: list[Literal["keyword", "question"]](["question"]),
        description="Query styles asked of the LLM, used in turn.",
    )
    structural_queries_per_chunk: int = Field(
        2, ge=0, le=10, description="Pseudo-queries from title, heading path and key terms."
    )
    prompts_file: Path | None = Field(
        None, description="TOML overriding finetune.prompts (system, keyword, question)."
    )
    batch_size: int = Field(8, ge=1, description="Chunks per generate_many call.")
    max_new_tokens: int = Field(24, ge=4, le=512)
    temperature: float = Field(0.7, ge=0.0, le=2.0)
    max_chunks: int | None = Field(
        150,
        ge=0,
        description=(
            "Ask the LLM about at most this many (seeded sample of) chunks; 0 or None asks "
            "every chunk. Structural queries cover every chunk either way. 150 is what the "
            "cross-corpus protocol measured; more of the bundled generator's questions "
            "added nothing (docs/BENCHMARKS.md). Raise it for a stronger generator."
        ),
    )
    min_chunk_words: int = Field(12, ge=0, description="Skip boilerplate chunks shorter than this.")
    max_chunk_chars: int = Field(1500, ge=100, description="Chunk text shown to the LLM.")
    min_query_words: int = Field(2, ge=1)
    max_query_words: int = Field(24, ge=2)
    max_copy_overlap: float = Field(
        0.85, gt=0, le=1, description="Drop queries this much copied from one chunk sentence."
    )
    near_duplicate: float = Field(0.9, gt=0, le=1, description="Token Jaccard for near-duplicates.")
    consistency_top_k: int = Field(
        20, ge=0, description="Keep a query if its chunk ranks in the base top k (0 = off)."
    )
    consistency_margin: float = Field(
        0.0,
        ge=0,
        description="If > 0: also require rank 1 with this cosine margin over the runner-up.",
    )
    consistency_bm25: bool = Field(
        False, description="Also require the chunk in BM25's top consistency_top_k."
    )
    keep_per_chunk: int = Field(3, ge=1, description="At most this many kept queries a chunk.")


class NegativesSettings(Section):
    """Hard negatives for full fine-tuning and the reranker (`finetune.negatives.*`)."""

    per_query: int = Field(1, ge=0, le=16)
    range_min: int = Field(3, ge=0, description="Skip the base model's top ranks.")
    range_max: int = Field(30, ge=1)
    relative_margin: float = Field(
        0.05, ge=0, lt=1, description="Negative score must be below (1 - m) x positive's."
    )
    cross_encoder: str | None = Field(
        None, description="Trained CrossEncoder to drop probable positives; 'auto' = newest."
    )


class AdapterSettings(Section):
    """The query adapter (`finetune.adapter.*`; `rag-app finetune --adapter`, the default)."""

    kind: Literal["linear", "mlp"] = Field(
        "linear", description="--adapter: query-side transform (identity at the start)."
    )
    hidden: int = Field(256, ge=8, description="--adapter mlp: hidden width.")
    epochs: int = Field(30, ge=1, le=1000)
    learning_rate: float = Field(
        3e-4, gt=0, description="Best of 1e-4 / 3e-4 / 1e-3 on medquad-small dev (BENCHMARKS.md)."
    )
    weight_decay: float = Field(
        0.01, ge=0, description="Pulls the adapter back towards the identity."
    )
    patience: int = Field(
        5, ge=1, description="Stop after this many epochs without a validation gain."
    )


class RerankerTrainingSettings(Section):
    """Training the cross-encoder reranker (`finetune.reranker.*`)."""

    enabled: bool = Field(True, description="Also train a cross-encoder reranker.")
    epochs: float = Field(1.0, gt=0)
    learning_rate: float = Field(3e-5, gt=0)
    batch_size: int = Field(16, ge=1)
    negatives: int = Field(3, ge=1, le=16)
    max_length: int = Field(256, ge=16, le=8192)


_FLAT_NAMES = {
    "adapter_kind": ("adapter", "kind"),
    "adapter_hidden": ("adapter", "hidden"),
    "adapter_epochs": ("adapter", "epochs"),
    "adapter_learning_rate": ("adapter", "learning_rate"),
    "adapter_weight_decay": ("adapter", "weight_decay"),
    "adapter_patience": ("adapter", "patience"),
    "reranker_epochs": ("reranker", "epochs"),
    "reranker_learning_rate": ("reranker", "learning_rate"),
    "reranker_batch_size": ("reranker", "batch_size"),
    "reranker_negatives": ("reranker", "negatives"),
    "reranker_max_length": ("reranker", "max_length"),
    "negatives_per_query": ("negatives", "per_query"),
    "negatives_range_min": ("negatives", "range_min"),
    "negatives_range_max": ("negatives", "range_max"),
    "negatives_relative_margin": ("negatives", "relative_margin"),
    "negatives_cross_encoder": ("negatives", "cross_encoder"),
}


class FinetuneSettings(Section):
    """Training the embedder and the reranker (`rag-app finetune`). Conservative defaults."""

    method: Literal["adapter", "full"] = Field(
        "adapter",
        description=(
            "adapter: a query-side map on the frozen embedder (seconds, no re-index; the "
            "recipe that beats the base model on synthetic data, BENCHMARKS.md); full: "
            "fine-tune every weight (for real labelled pairs, or a strong generator)."
        ),
    )
    epochs: float = Field(1.0, gt=0)
    max_steps: int = Field(-1, description="Stop after this many steps (-1: epochs decide).")
    learning_rate: float = Field(1e-5, gt=0)
    warmup_ratio: float = Field(0.1, ge=0, lt=1)
    weight_decay: float = Field(0.01, ge=0)
    batch_size: int = Field(16, ge=2)
    max_seq_length: int = Field(256, ge=16, le=8192)
    loss: Literal["mnrl", "cached_mnrl"] = "mnrl"
    mini_batch_size: int = Field(16, ge=1, description="cached_mnrl: GPU/CPU memory per step.")
    matryoshka_dims: list[int] = Field(
        default_factory=list, description="e.g. [384, 256, 128]; empty: no MatryoshkaLoss."
    )
    freeze_layers: int = Field(
        3, ge=0, description="Freeze embeddings + this many layers (least harm measured)."
    )
    merge_alpha: float = Field(
        1.0,
        gt=0,
        le=1,
        description="Keep alpha x fine-tuned + (1 - alpha) x base weights (WiSE-FT); 1 = off.",
    )
    val_fraction: float = Field(0.2, gt=0, lt=1)
    split_by: Literal["chunk", "document"] = "document"
    use_synthetic: bool = True
    train_data: list[Path] = Field(
        default_factory=list, description="Real labelled pairs: BEIR folders or CSV files."
    )
    train_data_split: str = Field("train", description="qrels split read from BEIR folders.")
    general_pairs: Path | None = Field(
        None, description="CSV/JSONL of general (query, passage) pairs against forgetting."
    )
    general_share: float = Field(0.0, ge=0, le=1, description="Share of general pairs mixed in.")
    hard_negatives: bool = True
    negatives: NegativesSettings = Field(default_factory=lambda: NegativesSettings())
    labelled_eval: Path | None = Field(
        None,
        description=(
            "BEIR-layout labelled queries for the guardrail (default: <corpus>/eval, unless "
            "train_data holds real pairs: then their held-out documents are the guard)."
        ),
    )
    labelled_guard_fraction: float = Field(
        0.3,
        ge=0,
        lt=1,
        description="Share of train_data's real pairs, whole documents, held out as the guard.",
    )
    labelled_guard_min_queries: int = Field(
        20,
        ge=1,
        description=(
            "Guard questions needed for the guard to decide 'recommended' and to choose the "
            "recipe; with fewer the run is 'unverified' (synthetic validation decides)."
        ),
    )
    select_recipe: bool = Field(
        True,
        description=(
            "With enough guard questions, train every recipe (LLM / structural queries, "
            "with / without real pairs) and keep the best on the guard (adapter only)."
        ),
    )
    labelled_weight: int = Field(
        4, ge=1, le=100, description="Each real labelled training pair counts this many times."
    )
    labelled_share: float | None = Field(
        None,
        gt=0,
        lt=1,
        description=(
            "If set, real pairs are repeated so they make up about this share of the training "
            "examples (at least once each), instead of a fixed labelled_weight."
        ),
    )
    eval_steps: int = Field(0, ge=0, description="Validate every N steps (0: once an epoch).")
    adapter: AdapterSettings = Field(default_factory=lambda: AdapterSettings())
    reranker: RerankerTrainingSettings = Field(default_factory=lambda: RerankerTrainingSettings())

    @model_validator(mode="before")
    @classmethod
    def _flat_names(cls, data: Any) -> Any:
        """Accept the flat names of before 2026-12-03 (`adapter_epochs`, `reranker = false`,
        `negatives_per_query`, ...) with a deprecation message naming the new one."""
        if not isinstance(data, dict):
            return data
        data = dict(data)
        if isinstance(data.get("reranker"), bool):
            log.warning(
                "finetune.reranker = %s is deprecated: use finetune.reranker.enabled",
                data["reranker"],
            )
            data["reranker"] = {"enabled": data["reranker"]}
        for old in [k for k in data if k in _FLAT_NAMES]:
            group, new = _FLAT_NAMES[old]
            log.warning("finetune.%s is deprecated: use finetune.%s.%s", old, group, new)
            nested = data.get(group)
            nested = dict(nested) if isinstance(nested, dict) else {}
            nested[new] = data.pop(old)  # the explicit old name wins over a dumped default
            data[group] = nested
        return data


def updated_finetune(cfg: FinetuneSettings, **update: Any) -> FinetuneSettings:
    """`cfg` with `update` applied *and validated* (unlike `model_copy(update=...)`): nested
    groups as dicts (`adapter={"epochs": 5}`) or the deprecated flat names."""
    data = cfg.model_dump()
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    return FinetuneSettings.model_validate(data)
