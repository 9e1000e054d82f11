"""llama.cpp through llama-cpp-python: the fast CPU path for GGUF models (optional extra).

llama-cpp-python has no wheel on PyPI and builds from source (~8 min), so it is not a
default dependency: install it with ``pip install 'rag-app[llamacpp]'``. It is imported only
when this backend is built, and a missing install is an `LLMError` that says what to do.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rag_app.llm.base import (
    LLMError,
    Message,
    Seeds,
    StopFilter,
    check_messages,
    cut_at_stop,
    prompt_seed,
)
from rag_app.models import ResolvedModel

INSTALL_HINT = (
    "llama-cpp-python is not installed (it builds from source, ~8 min): run "
    "`pip install 'rag-app[llamacpp]'`, or set llm.backend = 'embedded' "
    "(RAG_APP_LLM__BACKEND=embedded) to use the transformers backend"
)

_MODELS: dict[tuple[str, int], Any] = {}
_MODELS_LOCK = threading.Lock()


def llama_cpp_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("llama_cpp") is not None


def _import_llama():
    try:
        from llama_cpp import Llama
    except ImportError as exc:
        raise LLMError(INSTALL_HINT) from exc
    return Llama


def load_llama(model: ResolvedModel, *, context_window: int = 2048, n_threads: int | None = None):
    """A `llama_cpp.Llama` for a GGUF model, loaded once per process."""
    if model.is_hub or not model.gguf_file:
        raise LLMError(
            f"the llamacpp backend needs a GGUF file; generator {model.spec!r} is not one "
            "(give a .gguf path, or the bundled SmolLM2-135M-Instruct)"
        )
    path = str(Path(model.location) / model.gguf_file)
    key = (path, context_window)
    with _MODELS_LOCK:
        if key not in _MODELS:
            Llama = _import_llama()
            if not _MODELS:
                atexit.register(close_all)
            try:
                _MODELS[key] = Llama(
                    model_path=path, n_ctx=context_window, n_threads=n_threads, verbose=False
                )
            except Exception as exc:
                raise LLMError(f"llama.cpp could not load {path}: {exc}") from exc
        return _MODELS[key]


def close_all() -> None:
    """Free every loaded model now. Registered at exit: left to the garbage collector at
    interpreter shutdown, llama-cpp-python's `__del__` runs after the module globals it
    needs are gone and prints a `TypeError ... free_model` traceback after a clean run."""
    with _MODELS_LOCK:
        models = list(_MODELS.values())
        _MODELS.clear()
    for llama in models:
        with contextlib.suppress(Exception):  # already closed or half-built: nothing to free
            llama.close()


class LlamaCppLLM:
    """A GGUF chat model run by llama.cpp in this process (one request at a time)."""

    system_prompt: str | None = None  # llm.system_prompt; None: the built-in rules

    def __init__(
        self,
        llama: Any,
        *,
        name: str = "llamacpp",
        max_new_tokens: int = 256,
        temperature: float = 0.2,
        context_window: int = 2048,
    ) -> None:
        self.llama = llama
        self.name = name
        self.max_new_tokens = max_new_tokens
        self.temperature = temperature
        self.context_window = context_window
        self._lock = threading.Lock()

    def count_tokens(self, text: str) -> int:
        return len(self.llama.tokenize(text.encode("utf-8"), add_bos=False, special=False))

    def _kwargs(self, max_new_tokens, temperature, stop) -> dict[str, Any]:
        return {
            "max_tokens": max_new_tokens or self.max_new_tokens,
            "temperature": self.temperature if temperature is None else temperature,
            "stop": [s for s in (stop or []) if s] or None,
        }

    def generate(
        self,
        messages: list[Message],
        *,
        max_new_tokens: int | None = None,
        temperature: float | None = None,
        stop: list[str] | None = None,
        seed: int | None = None,
    ) -> str:
        kwargs = self._kwargs(max_new_tokens, temperature, stop)
        if seed is not None:
            kwargs["seed"] = seed
        try:
            with self._lock:
                out = self.llama.create_chat_completion(messages=check_messages(messages), **kwargs)
        except LLMError:
            raise
        except Exception as exc:
            raise LLMError(f"llama.cpp generation failed: {exc}") from exc
        text = out["choices"][0]["message"].get("content") or ""
        return cut_at_stop(text, stop).strip()

    def stream(
        self,
        messages: list[Message],
        *,
        max_new_tokens: int | None = None,
        temperature: float | None = None,
        stop: list[str] | None = None,
    ) -> Iterator[str]:
        kwargs = self._kwargs(max_new_tokens, temperature, stop)
        stops = StopFilter(stop)
        with self._lock:
            try:
                chunks = self.llama.create_chat_completion(
                    messages=check_messages(messages), stream=True, **kwargs
                )
                for chunk in chunks:
                    piece = chunk["choices"][0].get("delta", {}).get("content") or ""
                    text = stops.feed(piece)
                    if text:
                        yield text
                    if stops.done:
                        break
            except LLMError:
                raise
            except Exception as exc:
                raise LLMError(f"llama.cpp generation failed: {exc}") from exc
            tail = stops.flush()
            if tail:
                yield tail

    def generate_many(
        self,
        batch: list[list[Message]],
        *,
        max_new_tokens: int | None = None,
        temperature: float | None = None,
        stop: list[str] | None = None,
        seed: Seeds = None,
    ) -> list[str]:
        """One sequence at a time (llama-cpp-python's high-level API), ordered for the cache.

        llama-cpp-python keeps the KV state of the previous prompt and evaluates only what
        follows the longest shared prefix. Prompts that share everything but their last
        message (one query style's few-shot prefix) are therefore run together: with two
        styles in turn, the order style A, style B, A, B... would evaluate each prefix
        again every time. Seeds stay tied to each prompt's place in `batch` and replies are
        returned in that order, so the replies are the ones the plain order gives.
        """
        groups: dict[str, list[int]] = {}  # by prefix, in order of first appearance
        for i, messages in enumerate(batch):
            groups.setdefault(_prefix_key(messages), []).append(i)
        order = [i for members in groups.values() for i in members]
        replies: list[str] = [""] * len(batch)
        for i in order:
            replies[i] = self.generate(
                batch[i],
                max_new_tokens=max_new_tokens,
                temperature=temperature,
                stop=stop,
                seed=prompt_seed(seed, i),
            )
        return replies


def _prefix_key(messages: list[Message]) -> str:
    """Everything before the last message: prompts with equal keys share a cached prefix."""
    return json.dumps(messages[:-1], sort_keys=True)
