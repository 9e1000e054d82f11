"""What the chat's handlers share: browser and API inputs turned into `ChatService`
arguments (filter specs, extra inputs, the logged-in user and session; the search mode is
checked by `RetrieverChoice.of`), and service results turned into chat history pairs and
API JSON. No Gradio import here.
"""

from __future__ import annotations

from typing import Any

from rag_app.types import Hit

DATE_FIELD = "effective_date"


def filter_specs(
    values: dict[str, list[str] | None], date_from: str | None = None, date_to: str | None = None
) -> list[str]:
    specs = [f"{key}={','.join(v)}" for key, v in values.items() if v]
    if date_from and date_from.strip():
        specs.append(f"{DATE_FIELD}>={date_from.strip()}")
    if date_to and date_to.strip():
        specs.append(f"{DATE_FIELD}<={date_to.strip()}")
    return specs


def wants_request(fn: Any, request_type: Any) -> Any:
    """Resolve the `request` annotation (a string under `from __future__ import annotations`,
    and gradio is imported lazily) so Gradio recognises the parameter and injects the
    `gr.Request` rather than treating it as an input."""
    fn.__annotations__["request"] = request_type
    return fn


def split_extra(extra: tuple, n_filters: int) -> tuple[tuple, tuple]:
    """(filter dropdown values, (dim, date from, date to)) from a handler's extra inputs;
    missing trailing values (older API clients) default to None."""
    tail = (*extra[n_filters:], None, None, None)
    return tuple(extra[:n_filters]), tail[:3]


def user_of(request: Any) -> str | None:
    """The logged-in user of a Gradio request (None without auth)."""
    return getattr(request, "username", None) or None


def session_of(request: Any) -> str | None:
    """The browser session of a Gradio request (its hash, not a secret)."""
    return getattr(request, "session_hash", None) or None


def mark_context(turn: dict[str, Any], request: Any) -> dict[str, Any]:
    """What every mark records of the answered question and of who marked it."""
    return {
        "turn": turn["turn"],
        "query": turn["query"],
        "retriever": turn["retriever"],
        "user": user_of(request),
        "session": session_of(request),
    }


def message_text(content: Any) -> str:
    """A chat message's text (Gradio 6 may give a list of {"type": "text", "text"} parts)."""
    if isinstance(content, dict):
        content = content.get("content", content.get("value", content))
    if isinstance(content, list):
        return " ".join(p.get("text", "") if isinstance(p, dict) else str(p) for p in content)
    return "" if content is None else str(content)


def build_filter(specs: list[str]):
    if not specs:
        return None
    from rag_app.filters import parse_filter

    return parse_filter(specs)


def history_pairs(history: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """Chat history as (user, assistant) pairs for the answer prompt."""
    pairs: list[tuple[str, str]] = []
    pending: str | None = None
    for msg in history:
        content = msg.get("content")
        text = content if isinstance(content, str) else str(content)
        if msg.get("role") == "user":
            pending = text
        elif msg.get("role") == "assistant" and pending is not None:
            pairs.append((pending, text))
            pending = None
    return pairs


def hit_json(hit: Hit) -> dict[str, Any]:
    return {
        "id": hit.chunk.id,
        "doc_id": hit.chunk.doc_id,
        "title": hit.chunk.title,
        "heading_path": hit.chunk.heading_path,
        "text": hit.chunk.text,
        "scores": hit.scores,
        "ranks": hit.ranks,
    }
