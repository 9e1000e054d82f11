"""Build the configured LLM backend from `Settings`.

Models are loaded once per process (keyed by resolved path and device) and shared; the
returned backend objects are light wrappers that carry the per-settings defaults.
"""

from __future__ import annotations

import logging
from typing import Any

from rag_app.config import Settings
from rag_app.llm.base import LLM, LLMError
from rag_app.models import ModelNotFoundError, resolve_device, resolve_generator

log = logging.getLogger(__name__)


def build_llm(settings: Settings) -> LLM | None:
    """The LLM that `settings.llm.backend` names, or None for "none".

    Raises `LLMError` when the backend cannot be built (model missing, llama-cpp-python not
    installed, no base_url for "openai"); an unreachable server is reported on first use.
    """
    cfg = settings.llm
    backend = cfg.backend
    if backend == "none":
        return None
    common: dict[str, Any] = {
        "max_new_tokens": cfg.max_new_tokens,
        "temperature": cfg.temperature,
        "context_window": cfg.context_window,
    }
    llm: LLM
    if backend == "openai":
        from rag_app.llm.openai_compat import OpenAICompatLLM

        llm = OpenAICompatLLM(
            cfg.base_url or "",
            model=cfg.model,
            api_key=cfg.api_key.get_secret_value() if cfg.api_key else None,
            timeout_s=cfg.timeout_s,
            max_retries=cfg.max_retries,
            **common,
        )
    else:
        try:
            resolved = resolve_generator(settings.models.generator)
        except ModelNotFoundError as exc:
            raise LLMError(str(exc)) from exc
        if backend == "llamacpp":
            from rag_app.llm.llamacpp import LlamaCppLLM, load_llama

            llama = load_llama(resolved, context_window=cfg.context_window)
            llm = LlamaCppLLM(llama, name=f"llamacpp:{resolved.spec}", **common)
        elif backend == "embedded":
            from rag_app.llm.embedded import EmbeddedLLM, load_model

            device = resolve_device(settings.models.device)
            loaded = load_model(
                resolved,
                device=device,
                cache_root=settings.cache_dir / "llm",
                trust_remote_code=settings.models.trust_remote_code,
            )
            llm = EmbeddedLLM(loaded, name=f"embedded:{resolved.spec} ({device})", **common)
        else:  # pragma: no cover - Settings validates the literal
            raise LLMError(f"unknown llm.backend {backend!r}")
    system_prompt = cfg.system_prompt
    if system_prompt:
        llm.system_prompt = system_prompt
    return llm
