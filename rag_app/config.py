"""One validated configuration object for every command.

Sources, highest priority first: CLI flags (passed as overrides), environment variables
(`RAG_APP_...`, nested with `__`, e.g. `RAG_APP_RETRIEVAL__TOP_K=8`), a TOML file
(`rag-app.toml` in the working directory, or `--config PATH` / `RAG_APP_CONFIG`), defaults.
Every path the app writes lives under `workspace`, so one directory holds a project's
whole state and deleting it is a clean reset.
"""

from __future__ import annotations

import logging
import os
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

DEFAULT_CONFIG_FILE = "rag-app.toml"
# The --config file of the load_settings call in progress (a context variable rather than
# an environment variable, so one call's file never leaks into later ones).
_CONFIG_FILE: ContextVar[str | None] = ContextVar("rag_app_config_file", default=None)


log = logging.getLogger(__name__)


class IngestSettings(BaseModel):
    """How documents become chunks."""

    chunk_size: int = Field(256, ge=32, le=8192, description="Chunk size in embedder tokens.")
    chunk_overlap: int = Field(32, ge=0, description="Overlap between chunks in tokens.")
    max_file_mb: float = Field(20.0, gt=0, description="Files larger than this are skipped.")
    extensions: list[str] = Field(
        default_factory=lambda: [".md", ".markdown", ".txt", ".html", ".htm", ".pdf", ".docx"]
    )

    @model_validator(mode="after")
    def _overlap_smaller_than_size(self) -> IngestSettings:
        if self.chunk_overlap >= self.chunk_size:
            raise ValueError(
                f"chunk_overlap ({self.chunk_overlap}) must be smaller than "
                f"chunk_size ({self.chunk_size})"
            )
        return self


class ModelSettings(BaseModel):
    """Which models to use. A spec is a bundled name, a local path, or a hub id."""

    embedder: str = "all-MiniLM-L6-v2"
    generator: str = "SmolLM2-135M-Instruct"
    reranker: str | None = Field(
        None,
        description="CrossEncoder path or hub id; 'auto' uses the workspace's trained one.",
    )
    device: str = Field("auto", description="'auto', 'cpu', 'cuda', 'cuda:1', 'mps'.")
    trust_remote_code: bool = False
    embed_batch_size: int = Field(32, ge=1)
    embed_processes: int = Field(
        1,
        ge=1,
        description="Processes that encode passages for `rag-app index`: one per GPU on "
        "CUDA (at most this many), else CPU workers sharing the cores.",
    )


class LLMSettings(BaseModel):
    """How answers are generated."""

    backend: Literal["embedded", "llamacpp", "openai", "none"] = "embedded"
    base_url: str | None = Field(
        None, description="OpenAI-compatible server, e.g. http://127.0.0.1:8080/v1"
    )
    api_key: SecretStr | None = None
    model: str | None = Field(None, description="Model name sent to the OpenAI-compatible server.")
    max_new_tokens: int = Field(256, ge=1)
    temperature: float = Field(0.2, ge=0.0, le=2.0)
    context_window: int = Field(2048, ge=256)
    timeout_s: float = Field(60.0, gt=0)
    max_retries: int = Field(2, ge=0)
    system_prompt: str | None = Field(
        None, description="Replaces the grounded-answer rules (rag_app.prompts.SYSTEM_PROMPT)."
    )


class RetrievalSettings(BaseModel):
    """Hybrid retrieval and reranking."""

    top_k: int = Field(5, ge=1, le=100)
    candidates: int = Field(50, ge=1, description="Per-retriever candidates before fusion.")
    fusion: Literal["auto", "rrf", "weighted", "dense", "bm25"] = Field(
        "auto",
        description=(
            "How hybrid search fuses BM25 and dense results. auto: the way `rag-app finetune` "
            "measured best for the model on this workspace (fusion.json), else rrf."
        ),
    )
    rrf_k: int = Field(60, ge=1)
    dense_weight: float = Field(
        0.8,
        ge=0.0,
        le=1.0,
        description=(
            "Weighted fusion: dense share of the min-max normalised scores. 0.8 is the best "
            "median of the ways never significantly below the better of dense and BM25 on "
            "the 10 corpora of the cross-corpus protocol (docs/BENCHMARKS.md)."
        ),
    )
    rerank: bool = True
    rerank_top: int = Field(20, ge=1)
    rerank_max_length: int = Field(
        256, ge=16, le=8192, description="Cross-encoder tokens per (query, passage) pair."
    )
    chroma_url: str | None = Field(
        None, description="Chroma server (e.g. http://127.0.0.1:8000); embedded when unset."
    )
    dim: int | None = Field(
        None,
        ge=8,
        description="Serve embedders truncated to this many dimensions (Matryoshka); "
        "needs `rag-app index --dim N`. None: the model's full dimension.",
    )
    model_dims: dict[str, int] = Field(
        default_factory=dict,
        description="Per-model dimension, by model spec or run name; overrides `dim`.",
    )
    rescore: bool = Field(
        False, description="Truncated dim: rescore the top candidates with full-dim vectors."
    )
    rescore_candidates: int = Field(
        50, ge=1, description="Candidates fetched at the truncated dim before rescoring."
    )


class ServerSettings(BaseModel):
    """Where the chat UI listens."""

    host: str = "127.0.0.1"
    port: int = Field(7860, ge=1, le=65535)
    auth: list[str] = Field(
        default_factory=list, description="'user:password' entries; empty means no login."
    )

    @field_validator("auth")
    @classmethod
    def _user_password_pairs(cls, value: list[str]) -> list[str]:
        for entry in value:
            if ":" not in entry or entry.startswith(":"):
                raise ValueError("auth entries must look like 'user:password'")
        return value

    groups: dict[str, list[str]] = Field(
        default_factory=dict,
        description="User name -> the groups it belongs to (for access_policy).",
    )
    access_policy: dict[str, list[str]] = Field(
        default_factory=dict,
        description="Chunk `access` value -> groups allowed to read it ('*': every logged-in "
        "user). 'public' and chunks without `access` are readable by everyone; any other "
        "value only by the groups listed here. Empty: no enforcement. Needs `auth`.",
    )

    @model_validator(mode="after")
    def _policy_needs_login(self) -> ServerSettings:
        if self.access_policy and not self.auth:
            raise ValueError(
                "server.access_policy is set but server.auth is empty: without a login the "
                "chat cannot tell users apart, so it refuses to serve. Set server.auth "
                "(RAG_APP_SERVER__AUTH='[\"user:password\"]') or remove the policy."
            )
        return self


class SynthSettings(BaseModel):
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
        None, ge=1, description="Ask the LLM about at most this many (sampled) chunks."
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


class NegativesSettings(BaseModel):
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


class AdapterSettings(BaseModel):
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


class RerankerTrainingSettings(BaseModel):
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


class FinetuneSettings(BaseModel):
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


class FeedbackSettings(BaseModel):
    """What the chat records about its use (`rag_app.feedback`; docs/SECURITY.md)."""

    enabled: bool = Field(
        True, description="Show relevant / not relevant and thumbs buttons; record the marks."
    )
    log_queries: bool = Field(
        True, description="Log every question asked, with the passages shown (queries.jsonl)."
    )


class Settings(BaseSettings):
    """The effective configuration of one project (corpus + workspace)."""

    model_config = SettingsConfigDict(
        env_prefix="RAG_APP_",
        env_nested_delimiter="__",
        extra="forbid",
        validate_default=True,
    )

    workspace: Path = Path("workspace")
    corpus: Path = Path("corpus")
    ingest: IngestSettings = Field(default_factory=IngestSettings)
    models: ModelSettings = Field(default_factory=ModelSettings)
    llm: LLMSettings = Field(default_factory=LLMSettings)
    retrieval: RetrievalSettings = Field(default_factory=RetrievalSettings)
    server: ServerSettings = Field(default_factory=ServerSettings)
    synth: SynthSettings = Field(default_factory=SynthSettings)
    finetune: FinetuneSettings = Field(default_factory=FinetuneSettings)
    feedback: FeedbackSettings = Field(default_factory=FeedbackSettings)
    seed: int = 42

    # Set by `load_settings`; not a user field.
    _config_file: Path | None = None

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml_file = _CONFIG_FILE.get() or os.environ.get("RAG_APP_CONFIG") or DEFAULT_CONFIG_FILE
        return (
            init_settings,
            env_settings,
            TomlConfigSettingsSource(settings_cls, toml_file=toml_file),
        )

    # --- workspace layout: every file the app writes -------------------------------------
    @property
    def chunks_path(self) -> Path:
        return self.workspace / "chunks.jsonl"

    @property
    def manifest_path(self) -> Path:
        return self.workspace / "ingest-manifest.json"

    @property
    def bm25_dir(self) -> Path:
        return self.workspace / "bm25"

    @property
    def chroma_dir(self) -> Path:
        return self.workspace / "chroma"

    @property
    def models_dir(self) -> Path:
        return self.workspace / "models"

    @property
    def synth_dir(self) -> Path:
        return self.workspace / "synth"

    @property
    def eval_dir(self) -> Path:
        return self.workspace / "eval"

    @property
    def feedback_dir(self) -> Path:
        return self.workspace / "feedback"

    @property
    def cache_dir(self) -> Path:
        return self.workspace / "cache"

    def redacted(self) -> dict[str, Any]:
        """The config as plain data with secrets masked, for printing and reports."""
        data = self.model_dump(mode="json")
        if self.llm.api_key is not None:
            data["llm"]["api_key"] = "********"
        data["server"]["auth"] = [e.split(":", 1)[0] + ":********" for e in self.server.auth]
        return data


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Build Settings from defaults < TOML < env < overrides.

    `overrides` may be nested dicts (`models={"embedder": "x"}`); `None` values are
    ignored so CLI options left unset do not mask the file or environment.
    """
    token = None
    if config_file is not None:
        if not Path(config_file).is_file():
            raise FileNotFoundError(f"config file not found: {config_file}")
        token = _CONFIG_FILE.set(str(config_file))  # this call only; no process-wide env
    try:
        base = Settings()
    finally:
        if token is not None:
            _CONFIG_FILE.reset(token)
    clean = _drop_none(overrides)
    if not clean:
        return base
    # only what TOML / env set, so the result still knows which fields the user chose
    # (`model_fields_set`; `rag-app demo` applies its profile to the others only)
    merged = _deep_merge(base.model_dump(exclude_unset=True), clean)
    return Settings.model_validate(merged)


def _drop_none(data: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            nested = _drop_none(value)
            if nested:
                out[key] = nested
        elif value is not None:
            out[key] = value
    return out


def _deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out
