"""Any OpenAI-compatible chat server (llama.cpp server, vLLM, Ollama, `transformers serve`,
OpenAI itself) through LangChain's `ChatOpenAI`.

Failures to reach the server (connection refused, timeouts, 5xx, 429) are retried a bounded
number of times with exponential backoff, then raised as `LLMUnavailableError` naming the
URL and what to do; other HTTP errors (bad model name, bad request) are `LLMError` at once.
The API key is sent to the server only: it never appears in a message or a log line.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar
from urllib.parse import urlparse

from rag_app.llm.base import (
    LLMError,
    LLMUnavailableError,
    Message,
    Seeds,
    StopFilter,
    approx_tokens,
    check_messages,
    cut_at_stop,
    prompt_seed,
)

log = logging.getLogger(__name__)
T = TypeVar("T")

NO_KEY = "not-needed"  # local servers ignore the key, but the client insists on one
BACKOFF_S = 0.5
BACKOFF_MAX_S = 4.0


class _Retryable(Exception):
    """Internal: a failure worth another attempt (its reason is a short phrase)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class OpenAICompatLLM:
    """A chat model behind an OpenAI-compatible HTTP API."""

    system_prompt: str | None = None  # llm.system_prompt; None: the built-in rules

    def __init__(
        self,
        base_url: str,
        *,
        model: str | None = None,
        api_key: str | None = None,
        timeout_s: float = 60.0,
        max_retries: int = 2,
        max_new_tokens: int = 256,
        temperature: float = 0.2,
        context_window: int = 2048,
        concurrency: int = 4,
    ) -> None:
        if not base_url:
            raise LLMError(
                "the openai backend needs llm.base_url, e.g. http://127.0.0.1:8080/v1 "
                "(RAG_APP_LLM__BASE_URL)"
            )
        self.base_url = base_url.rstrip("/")
        self._api_key = api_key or NO_KEY
        self._model = model
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.max_new_tokens = max_new_tokens
        self.temperature = temperature
        self.context_window = context_window
        self.concurrency = max(1, concurrency)
        self._official = urlparse(self.base_url).hostname == "api.openai.com"
        self._chat: Any = None
        self._lock = threading.Lock()
        self.name = f"openai:{model or '?'}@{self.base_url}"

    count_tokens = staticmethod(approx_tokens)

    # --- client -------------------------------------------------------------------------
    @property
    def model(self) -> str:
        """The model name to request: configured, else the server's first listed model."""
        if self._model is None:
            with self._lock:
                if self._model is None:
                    self._model = self._call(self._first_served_model)
                    self.name = f"openai:{self._model}@{self.base_url}"
        return self._model

    def _first_served_model(self) -> str:
        import openai

        client = openai.OpenAI(
            base_url=self.base_url, api_key=self._api_key, timeout=self.timeout_s, max_retries=0
        )
        try:
            models = list(client.models.list())
        except openai.APIStatusError as exc:
            if exc.status_code in (404, 405, 501):  # server has no /models: let it choose
                return "default"
            raise
        finally:
            client.close()
        return models[0].id if models else "default"

    def _client(self):
        if self._chat is None:
            from langchain_openai import ChatOpenAI

            model = self.model
            with self._lock:
                if self._chat is None:
                    self._chat = ChatOpenAI(
                        base_url=self.base_url,
                        api_key=self._api_key,
                        model=model,
                        timeout=self.timeout_s,
                        max_retries=0,  # retries are ours: bounded, with backoff, classified
                        temperature=self.temperature,
                    )
        return self._chat

    def _call_kwargs(self, max_new_tokens, temperature, stop) -> dict[str, Any]:
        n = max_new_tokens or self.max_new_tokens
        kwargs: dict[str, Any] = {
            "temperature": self.temperature if temperature is None else temperature,
            "stop": [s for s in (stop or []) if s] or None,
        }
        # ChatOpenAI sends `max_completion_tokens`; local servers (llama.cpp, Ollama, older
        # vLLM) know `max_tokens`, which OpenAI also still accepts for chat models.
        if self._official:
            kwargs["max_tokens"] = n
        else:
            kwargs["extra_body"] = {"max_tokens": n}
        return kwargs

    # --- errors and retries ---------------------------------------------------------------
    def _classify(self, exc: Exception) -> Exception:
        import openai

        if isinstance(exc, openai.APITimeoutError):
            return _Retryable(f"timed out after {self.timeout_s:g} s")
        if isinstance(exc, openai.APIConnectionError):
            return _Retryable(f"cannot connect: {_root_cause(exc)}")
        if isinstance(exc, openai.InternalServerError | openai.RateLimitError):
            return _Retryable(f"HTTP {exc.status_code}")
        if isinstance(exc, openai.NotFoundError):
            return LLMError(
                f"the LLM server at {self.base_url} answered 404 for model {self._model!r}: "
                "check llm.model and llm.base_url (it usually ends in /v1)"
            )
        if isinstance(exc, openai.AuthenticationError | openai.PermissionDeniedError):
            return LLMError(
                f"the LLM server at {self.base_url} refused the API key (HTTP "
                f"{exc.status_code}); set llm.api_key or RAG_APP_LLM__API_KEY"
            )
        if isinstance(exc, openai.APIStatusError):
            return LLMError(f"the LLM server at {self.base_url} answered HTTP {exc.status_code}")
        if isinstance(exc, LLMError):
            return exc
        return LLMError(f"the LLM request to {self.base_url} failed: {exc}")

    def _unavailable(self, reason: str, attempts: int) -> LLMUnavailableError:
        return LLMUnavailableError(
            f"the LLM server at {self.base_url} is unavailable ({reason}; {attempts} "
            f"attempt{'s' if attempts != 1 else ''}). Start it, or point llm.base_url at a "
            "running server, or use llm.backend = 'embedded' or 'none'"
        )

    def _call(self, fn: Callable[[], T]) -> T:
        attempts = self.max_retries + 1
        for attempt in range(1, attempts + 1):
            try:
                return fn()
            except Exception as exc:
                err = self._classify(exc)
                if not isinstance(err, _Retryable):
                    raise err from exc
                if attempt == attempts:
                    raise self._unavailable(err.reason, attempts) from exc
                delay = min(BACKOFF_S * 2 ** (attempt - 1), BACKOFF_MAX_S)
                log.warning(
                    "LLM server %s: %s; retry %d/%d in %.1f s",
                    self.base_url,
                    err.reason,
                    attempt,
                    self.max_retries,
                    delay,
                )
                time.sleep(delay)
        raise AssertionError("unreachable")

    # --- the LLM interface --------------------------------------------------------------
    def generate(
        self,
        messages: list[Message],
        *,
        max_new_tokens: int | None = None,
        temperature: float | None = None,
        stop: list[str] | None = None,
        seed: int | None = None,
    ) -> str:
        msgs = check_messages(messages)
        kwargs = self._call_kwargs(max_new_tokens, temperature, stop)
        if seed is not None:  # OpenAI and llama.cpp's server honour it; others may ignore it
            kwargs["seed"] = seed
        reply = self._call(lambda: self._client().invoke(msgs, **kwargs))
        return cut_at_stop(_text(reply.content), stop).strip()

    def stream(
        self,
        messages: list[Message],
        *,
        max_new_tokens: int | None = None,
        temperature: float | None = None,
        stop: list[str] | None = None,
    ) -> Iterator[str]:
        """Yield text pieces; a failure before the first piece is retried, later ones raise."""
        msgs = check_messages(messages)
        kwargs = self._call_kwargs(max_new_tokens, temperature, stop)

        def first() -> tuple[Iterator[Any], str | None]:
            chunks = iter(self._client().stream(msgs, **kwargs))
            for chunk in chunks:
                text = _text(chunk.content)
                if text:
                    return chunks, text
            return chunks, None

        chunks, piece = self._call(first)
        stops = StopFilter(stop)
        try:
            while piece is not None:
                text = stops.feed(piece)
                if text:
                    yield text
                if stops.done:
                    return
                piece = None
                for chunk in chunks:
                    piece = _text(chunk.content)
                    if piece:
                        break
                else:
                    piece = None
        except Exception as exc:
            err = self._classify(exc)
            if isinstance(err, _Retryable):
                reason = err.reason.replace("cannot connect", "connection lost")
                raise self._unavailable(f"{reason}, mid-answer", 1) from exc
            raise err from exc
        finally:
            close = getattr(chunks, "close", None)
            if close is not None:
                close()
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
        """Concurrent requests (`concurrency` at a time): servers batch them themselves."""
        if not batch:
            return []

        def one(item: tuple[int, list[Message]]) -> str:
            i, messages = item
            return self.generate(
                messages,
                max_new_tokens=max_new_tokens,
                temperature=temperature,
                stop=stop,
                seed=prompt_seed(seed, i),
            )

        items = list(enumerate(batch))
        if self.concurrency == 1 or len(batch) == 1:
            return [one(item) for item in items]
        with ThreadPoolExecutor(max_workers=min(self.concurrency, len(batch))) as pool:
            return list(pool.map(one, items))


def _root_cause(exc: BaseException) -> str:
    """The innermost error's message ("[Errno 111] Connection refused"), not the wrappers'."""
    seen = 0
    while seen < 10:
        inner = exc.__cause__ or exc.__context__
        if inner is None:
            break
        exc, seen = inner, seen + 1
    return str(exc) or type(exc).__name__


def _text(content: Any) -> str:
    """A message's text: LangChain content is a string or a list of typed blocks."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            b if isinstance(b, str) else str(b.get("text", ""))
            for b in content
            if isinstance(b, str | dict)
        )
    return str(content or "")
