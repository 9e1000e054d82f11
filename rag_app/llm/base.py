"""The one small interface every LLM backend implements, and its errors.

A backend takes chat messages (``{"role": ..., "content": ...}``) and returns text, whole
(`generate`), in pieces (`stream`) or for a batch of conversations (`generate_many`).
Backends may also expose, as plain attributes, what the answer module uses to fit the
prompt to the model: ``context_window`` (tokens), ``max_new_tokens`` and a
``count_tokens(text) -> int`` method. They are optional: callers use `getattr`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Protocol, runtime_checkable

from rag_app.errors import RagAppError

Message = dict[str, str]
"""One chat message: ``{"role": "system" | "user" | "assistant", "content": text}``."""


class LLMError(RagAppError, RuntimeError):
    """The LLM could not produce an answer (bad request, backend missing, model error)."""


class LLMUnavailableError(LLMError):
    """The LLM backend cannot be reached (server down, timeouts after bounded retries)."""


@runtime_checkable
class LLM(Protocol):
    """A chat model. Keyword arguments left as None use the backend's configured defaults."""

    name: str
    system_prompt: str | None  # replaces the grounded-answer rules when set

    def generate(
        self,
        messages: list[Message],
        *,
        max_new_tokens: int | None = None,
        temperature: float | None = None,
        stop: list[str] | None = None,
    ) -> str: ...

    def stream(
        self,
        messages: list[Message],
        *,
        max_new_tokens: int | None = None,
        temperature: float | None = None,
        stop: list[str] | None = None,
    ) -> Iterator[str]: ...

    def generate_many(
        self,
        batch: list[list[Message]],
        *,
        max_new_tokens: int | None = None,
        temperature: float | None = None,
        stop: list[str] | None = None,
        seed: Seeds = None,
    ) -> list[str]:
        """One reply per conversation. A `seed` makes sampled replies repeatable: the same
        batch with the same seed gives the same replies, so a synth run can be reproduced.
        A list gives each conversation its own seed, so backends that generate one
        conversation at a time (llama.cpp, OpenAI-compatible servers) give a conversation
        the same reply whatever batch it is in (a resumed synth run equals an uninterrupted
        one); batched backends seed each sub-batch with its first conversation's seed."""
        ...


Seeds = int | Sequence[int] | None


def prompt_seed(seed: Seeds, i: int) -> int | None:
    """The seed of conversation `i` of a batch: its own from a list, else `seed + i`."""
    if seed is None:
        return None
    if isinstance(seed, int):
        return seed + i
    return int(seed[i])


def check_messages(messages: list[Message]) -> list[Message]:
    """Validate chat messages early, with a message that says what is wrong."""
    if not messages:
        raise LLMError("no messages to send to the LLM")
    clean: list[Message] = []
    for i, msg in enumerate(messages):
        role, content = msg.get("role"), msg.get("content")
        if role not in ("system", "user", "assistant"):
            raise LLMError(f"message {i}: role must be system, user or assistant, not {role!r}")
        if not isinstance(content, str):
            raise LLMError(f"message {i}: content must be a string")
        clean.append({"role": role, "content": content})
    return clean


def cut_at_stop(text: str, stop: list[str] | None) -> str:
    """Text up to (not including) the first stop string, as every backend must honour it."""
    if not stop:
        return text
    cut = len(text)
    for s in stop:
        if s:
            pos = text.find(s)
            if pos != -1:
                cut = min(cut, pos)
    return text[:cut]


def approx_tokens(text: str) -> int:
    """A conservative token estimate (~3.5 characters a token) when no tokenizer is at hand."""
    return max(1, int(len(text) / 3.5) + 1) if text else 0


class StopFilter:
    """Cuts a stream of text pieces at the first stop string, even one split across pieces.

    `feed` returns the text that is safe to emit now; it holds back a tail that could still
    turn into a stop string. `done` is True once a stop string was seen; `flush` returns the
    held-back tail at the end of the stream.
    """

    def __init__(self, stop: list[str] | None) -> None:
        self.stop = [s for s in (stop or []) if s]
        self.done = False
        self._buf = ""

    def feed(self, piece: str) -> str:
        if self.done:
            return ""
        if not self.stop:
            return piece
        self._buf += piece
        cut = cut_at_stop(self._buf, self.stop)
        if len(cut) < len(self._buf):
            self.done = True
            self._buf = ""
            return cut
        hold = 0
        for s in self.stop:
            for n in range(min(len(s) - 1, len(self._buf)), 0, -1):
                if self._buf.endswith(s[:n]):
                    hold = max(hold, n)
                    break
        out, self._buf = self._buf[: len(self._buf) - hold], self._buf[len(self._buf) - hold :]
        return out

    def flush(self) -> str:
        out, self._buf = ("" if self.done else self._buf), ""
        return out
