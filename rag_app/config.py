"""One validated configuration object for every command.

Sources, highest priority first: CLI flags (passed as overrides), environment variables
(`RAG_APP_...`, nested with `__`, e.g. `RAG_APP_RETRIEVAL__TOP_K=8`), a TOML file
(`rag-app.toml` in the working directory, or `--config PATH` / `RAG_APP_CONFIG`), defaults.
Every path the app writes lives under `workspace`, so one directory holds a project's
whole state and deleting it is a clean reset.
"""

from __future__ import annotations

import os
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from rag_app.config_base import ConfigError, Section, explain
from rag_app.config_finetune import (  # re-exported: callers import them from here
    AdapterSettings as AdapterSettings,
)
from rag_app.config_finetune import FinetuneSettings, SynthSettings
from rag_app.config_finetune import NegativesSettings as NegativesSettings
from rag_app.config_finetune import RerankerTrainingSettings as RerankerTrainingSettings
from rag_app.config_finetune import updated_finetune as updated_finetune

DEFAULT_CONFIG_FILE = "rag-app.toml"
# The --config file of the load_settings call in progress (a context variable rather than
# an environment variable, so one call's file never leaks into later ones).
_CONFIG_FILE: ContextVar[str | None] = ContextVar("rag_app_config_file", default=None)


class IngestSettings(Section):
    """How documents become chunks."""

    chunk_size: int = Field(256, ge=32, le=8192, description="Chunk size in embedder tokens.")
    chunk_overlap: int = Field(32, ge=0, description="Overlap between chunks in tokens.")
    max_file_mb: float = Field(20.0, gt=0, description="Files larger than this are skipped.")
    follow_symlinks_outside: bool = Field(
        False,
        description="Follow symlinks that lead out of the corpus folder (skipped by default: "
        "a link to /etc would index it).",
    )
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


class ModelSettings(Section):
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


class LLMSettings(Section):
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


class AnswerSettings(Section):
    """How the chat answers (rag_app.answer_modes)."""

    mode: Literal["auto", "extractive", "generative"] = Field(
        "auto",
        description="extractive: quote the sentences that answer; generative: the LLM writes, "
        "each sentence checked; auto: extractive with the bundled 135M model or no LLM.",
    )
    unsupported: Literal["mark", "drop"] = Field(
        "mark", description="Generated sentences no source supports: mark them or drop them."
    )
    abstain_below: float = Field(
        0.45,
        ge=0.0,
        le=2.0,
        description="Extractive: answer 'not found' when the best sentence scores below this.",
    )


class RetrievalSettings(Section):
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
    exact_match: bool = Field(
        True,
        description="Hybrid search: a query naming a rare identifier (a code with digits) "
        "is keyword-led, BM25's top hits that contain it first (rag_app.fusion.ExactMatchRule).",
    )
    exact_max_docs: int = Field(
        50,
        ge=1,
        description="An identifier counts as rare when at most this many documents hold it.",
    )
    exact_short_words: int = Field(
        3,
        ge=0,
        description="A keyword query (not phrased as a question) of at most this many words "
        "is keyword-led on its rare words too, e.g. a document's title typed alone "
        "(0: identifiers only; chosen on the protocol's dev halves: bench/tune_exact_rule.py).",
    )
    exact_title_docs: int = Field(
        20,
        ge=0,
        description="A keyword query (not a question) all of whose words are in the titles "
        "of at most this many documents is keyword-led on their chunks (0: off; chosen on "
        "the protocol's dev halves: bench/tune_exact_rule.py --param title_docs).",
    )
    acronyms: Literal["off", "append", "replace"] = Field(
        "append",
        description="Hybrid search: read an acronym the documents define ('amyotrophic "
        "lateral sclerosis (ALS)') in a query as its long form, after it (append) or in its "
        "place (replace), for both BM25 and dense search (rag_app.ir.acronyms).",
    )
    clipped: Literal["off", "append"] = Field(
        "append",
        description="Hybrid search: read a clipped word ('acc', 'cal') that no passage holds "
        "as the corpus word starting so whose passages share most with the rest of the query, "
        "when clearly ahead (rag_app.ir.clipped); append: the word after it.",
    )
    exact_pin: int = Field(
        10, ge=1, description="How many of BM25's hits holding the identifier lead the list."
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


class ServerSettings(Section):
    """Where the chat UI listens."""

    max_question_chars: int = Field(
        2000,
        ge=16,
        description="Longer questions are refused (they would be stored whole in the query log).",
    )

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


class FeedbackSettings(Section):
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
    answer: AnswerSettings = Field(default_factory=AnswerSettings)
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
    except ValidationError as exc:
        raise _typo_error(exc) from exc
    finally:
        if token is not None:
            _CONFIG_FILE.reset(token)
    clean = _drop_none(overrides)
    if not clean:
        return base
    # only what TOML / env set, so the result still knows which fields the user chose
    # (`model_fields_set`; `rag-app demo` applies its profile to the others only)
    merged = _deep_merge(base.model_dump(exclude_unset=True), clean)
    try:
        return Settings.model_validate(merged)
    except ValidationError as exc:
        raise _typo_error(exc) from exc


def _typo_error(exc: ValidationError) -> Exception:
    """A `ConfigError` naming the closest valid key when a key is unknown; any other
    validation error as pydantic raised it (its message already says what is wrong)."""
    if any(e.get("type") == "extra_forbidden" for e in exc.errors()):
        return ConfigError(explain(exc, Settings))
    return exc


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
