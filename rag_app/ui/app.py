"""The Gradio chat: ask the knowledge base, switch baseline / fine-tuned, compare them.

Per-session state lives in the components themselves (chat history, retriever choice,
filters), never in module globals, so concurrent users cannot see each other's choices.
All the work is done by `ChatService`; this module only lays out widgets and wires them.

Every endpoint that returns passages (the chat `ask`, `compare`, the `/search` API) takes
the logged-in user from `gr.Request.username` and passes it to the service, which applies
`server.access_policy` before retrieval (see `rag_app.access`). A policy without
`server.auth` is refused at start.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import socket
from collections.abc import Iterator
from typing import Any, cast

from rag_app.config import Settings
from rag_app.retrieve import Mode
from rag_app.types import Hit
from rag_app.ui.render import compare_markdown, hits_markdown
from rag_app.ui.service import BASELINE, ChatService

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

log = logging.getLogger(__name__)

FILTER_FIELDS = ("doc_type", "department")
DATE_FIELD = "effective_date"
MODES = [("Hybrid (BM25 + dense)", "hybrid"), ("Dense only", "dense"), ("BM25 only", "bm25")]


def _mode(value: str) -> Mode:
    """A search mode from the browser or an API client, checked (the API takes any string)."""
    if value not in ("hybrid", "dense", "bm25"):
        raise ValueError(f"unknown search mode {value!r}; use hybrid, dense or bm25")
    return cast(Mode, value)


def _filter_specs(
    values: dict[str, list[str] | None], date_from: str | None = None, date_to: str | None = None
) -> list[str]:
    specs = [f"{key}={','.join(v)}" for key, v in values.items() if v]
    if date_from and date_from.strip():
        specs.append(f"{DATE_FIELD}>={date_from.strip()}")
    if date_to and date_to.strip():
        specs.append(f"{DATE_FIELD}<={date_to.strip()}")
    return specs


def _wants_request(fn: Any, request_type: Any) -> Any:
    """Resolve the `request` annotation (a string under `from __future__ import annotations`,
    and gradio is imported lazily) so Gradio recognises the parameter and injects the
    `gr.Request` rather than treating it as an input."""
    fn.__annotations__["request"] = request_type
    return fn


def _split_extra(extra: tuple, n_filters: int) -> tuple[tuple, tuple]:
    """(filter dropdown values, (dim, date from, date to)) from a handler's extra inputs;
    missing trailing values (older API clients) default to None."""
    tail = (*extra[n_filters:], None, None, None)
    return tuple(extra[:n_filters]), tail[:3]


def _user(request: Any) -> str | None:
    """The logged-in user of a Gradio request (None without auth)."""
    return getattr(request, "username", None) or None


def _session(request: Any) -> str | None:
    """The browser session of a Gradio request (its hash, not a secret)."""
    return getattr(request, "session_hash", None) or None


def _mark_context(turn: dict[str, Any], request: Any) -> dict[str, Any]:
    """What every mark records of the answered question and of who marked it."""
    return {
        "turn": turn["turn"],
        "query": turn["query"],
        "retriever": turn["retriever"],
        "user": _user(request),
        "session": _session(request),
    }


def _source_choices(turn: dict[str, Any]) -> list[tuple[str, int]]:
    return [(f"[{h['position']}] {h['doc_id']}", h["position"]) for h in turn["hits"]]


def _text(content: Any) -> str:
    """A chat message's text (Gradio 6 may give a list of {"type": "text", "text"} parts)."""
    if isinstance(content, dict):
        content = content.get("content", content.get("value", content))
    if isinstance(content, list):
        return " ".join(p.get("text", "") if isinstance(p, dict) else str(p) for p in content)
    return "" if content is None else str(content)


def _build_filter(specs: list[str]):
    if not specs:
        return None
    from rag_app.filters import parse_filter

    return parse_filter(specs)


def build_app(settings: Settings, service: ChatService | None = None):
    """Lay out the chat UI. Returns a `gr.Blocks` ready for `.queue().launch()`."""
    import gradio as gr

    service = service or ChatService(settings)
    check_access_config(settings)
    options = service.options()
    choices = [(o.label, o.key) for o in options]
    tuned = service.default_finetuned()
    can_rerank, rerank_reason = service.reranker_status()
    filter_values = service.filter_values(FILTER_FIELDS)
    has_dates = bool(service.filter_values((DATE_FIELD,)))
    try:
        dims = service.dims(BASELINE)
    except Exception as exc:  # no index yet: the first question says what to run
        log.info("no indexed dimensions: %s", exc)
        dims = []
    from rag_app.retrieve import resolve_dim

    default_dim = resolve_dim(settings) or (dims[0] if dims else None)

    with gr.Blocks(title="rag-app: domain chat") as demo:
        gr.Markdown("## Ask the knowledge base")
        status = gr.Markdown(elem_id="status")
        with gr.Row():
            with gr.Column(scale=3):
                chatbot = gr.Chatbot(label="Chat", height=480, elem_id="chatbot")
                question = gr.Textbox(
                    label="Question",
                    placeholder="e.g. torque for the main gear wheel nuts?",
                    elem_id="question",
                    lines=1,
                )
                with gr.Row():
                    send = gr.Button("Ask", variant="primary", elem_id="ask")
                    clear = gr.Button("Clear", elem_id="clear")
            with gr.Column(scale=2):
                retriever = gr.Radio(
                    choices,
                    value=BASELINE,
                    label="Retriever",
                    info="Switch between the base embedder and a fine-tuned run.",
                    elem_id="retriever",
                )
                mode = gr.Radio(MODES, value="hybrid", label="Search", elem_id="mode")
                rerank = gr.Checkbox(
                    value=can_rerank and settings.retrieval.rerank,
                    interactive=can_rerank,
                    label="Rerank with cross-encoder" if can_rerank else "Reranking is off",
                    info=None if can_rerank else rerank_reason,
                    elem_id="rerank",
                )
                filters = {
                    key: gr.Dropdown(
                        values,
                        multiselect=True,
                        label=f"Filter: {key}",
                        elem_id=f"filter-{key}",
                    )
                    for key, values in filter_values.items()
                }
                dim = gr.Dropdown(
                    [(f"{d} (full)" if i == 0 else str(d), d) for i, d in enumerate(dims)],
                    value=default_dim if default_dim in dims else None,
                    label="Embedding dimension",
                    info="Matryoshka truncation; index more with `rag-app index --dim N`.",
                    visible=len(dims) > 1,
                    elem_id="dim",
                )
                with gr.Row(visible=has_dates):
                    date_from = gr.Textbox(
                        label=f"{DATE_FIELD} from",
                        value="",
                        placeholder="YYYY-MM-DD",
                        elem_id="date-from",
                    )
                    date_to = gr.Textbox(
                        label=f"{DATE_FIELD} to",
                        value="",
                        placeholder="YYYY-MM-DD",
                        elem_id="date-to",
                    )
                sources = gr.Markdown(elem_id="sources")
                with gr.Group(visible=settings.feedback.enabled):
                    source_pick = gr.Radio(
                        [],
                        label="Was a source right? Pick one, then mark it",
                        elem_id="feedback-source",
                    )
                    with gr.Row():
                        mark_yes = gr.Button("Relevant", size="sm", elem_id="mark-relevant")
                        mark_no = gr.Button("Not relevant", size="sm", elem_id="mark-not-relevant")
                    feedback_status = gr.Markdown(elem_id="feedback-status")

        with gr.Accordion("Compare baseline and fine-tuned", open=tuned is not None):
            if tuned is None:
                gr.Markdown(
                    "No fine-tuned retriever yet: run `rag-app synth` and `rag-app finetune`, "
                    "then `rag-app index --model <run>`."
                )
            else:
                with gr.Row():
                    compare_q = gr.Textbox(label="Query", elem_id="compare-query", scale=4)
                    compare_btn = gr.Button("Compare", elem_id="compare", scale=1)
                compare_out = gr.Markdown(elem_id="compare-out")

        filter_inputs = list(filters.values())
        # this session's answered questions: what each mark refers to (server-side state,
        # so a client can only point at passages it was shown)
        turns = gr.State([])

        def respond(
            request: gr.Request,
            message: str,
            history: list[dict[str, Any]],
            session_turns: list[dict[str, Any]] | None,
            key: str,
            search_mode: str,
            use_rerank: bool,
            *extra: Any,
        ) -> Iterator[tuple[Any, ...]]:
            filter_args, (dim_value, date_lo, date_hi) = _split_extra(extra, len(filters))
            message = (message or "").strip()
            session_turns = list(session_turns or [])
            if not message:
                yield history, "", gr.skip(), gr.skip()
                return
            history = [*history, {"role": "user", "content": message}]
            specs = _filter_specs(dict(zip(filters, filter_args, strict=True)), date_lo, date_hi)
            try:
                hits = service.search(
                    message,
                    key,
                    _mode(search_mode),
                    use_rerank,
                    filters=_build_filter(specs),
                    user=_user(request),
                    dim=dim_value,
                )
            except Exception as exc:  # shown to the user, the session stays usable
                log.exception("retrieval failed")
                history.append({"role": "assistant", "content": f"⚠️ Retrieval failed: {exc}"})
                # no turn to mark, but one entry per assistant message keeps 👍/👎 aligned
                yield history, "", "", [*session_turns, None]
                return
            label = service.option(key).label
            turn = service.record_turn(
                message,
                key,
                _mode(search_mode),
                use_rerank,
                dim_value,
                hits,
                user=_user(request),
                session=_session(request),
            )
            session_turns.append(turn)
            note = service.search_note(key, _mode(search_mode), use_rerank, dim_value)
            sources_md = hits_markdown(hits, title=f"Sources · {label}", note=note)
            yield history, "", sources_md, session_turns
            pairs = _pairs(history[:-1])
            history.append({"role": "assistant", "content": ""})
            for text in service.stream_answer(message, hits, pairs):
                history[-1] = {"role": "assistant", "content": text}
                yield history, "", gr.skip(), gr.skip()

        _wants_request(respond, gr.Request)
        # new inputs go last: API clients that pass the filter dropdowns keep working
        inputs = [question, chatbot, turns, retriever, mode, rerank, *filter_inputs]
        inputs += [dim, date_from, date_to]
        # the state is not part of the API: `/ask` clients see the same outputs as before
        outputs = [chatbot, question, sources, turns]
        send.click(respond, inputs, outputs, api_name="ask")
        question.submit(respond, inputs, outputs, api_visibility="private")
        clear.click(lambda: ([], "", "", []), None, [*outputs], api_visibility="private")
        turns.change(
            lambda t: (
                gr.update(choices=_source_choices(t[-1]) if t and t[-1] else [], value=None),
                "",
            ),
            turns,
            [source_pick, feedback_status],
            api_visibility="private",
        )

        if settings.feedback.enabled:

            def mark_source(
                request: gr.Request,
                session_turns: list[dict[str, Any] | None],
                position: Any,
                mark: str,
            ) -> str:
                if not session_turns or session_turns[-1] is None:
                    return "Ask a question first."
                if position in (None, ""):
                    return "Pick a source above, then mark it."
                turn = session_turns[-1]
                hit = next((h for h in turn["hits"] if h["position"] == int(position)), None)
                if hit is None:
                    return "That source is not in the last answer."
                try:
                    service.feedback.mark_source(mark, hit=hit, **_mark_context(turn, request))
                except OSError as exc:
                    log.exception("feedback not saved")
                    return f"⚠️ Not saved: {exc}"
                word = "relevant" if mark == "relevant" else "not relevant"
                return f"Saved: [{hit['position']}] {hit['doc_id']} is {word}."

            for button, mark in ((mark_yes, "relevant"), (mark_no, "not_relevant")):

                def on_mark(request: gr.Request, session_turns, position, _mark=mark) -> str:
                    return mark_source(request, session_turns, position, _mark)

                button.click(
                    _wants_request(on_mark, gr.Request),
                    [turns, source_pick],
                    feedback_status,
                    api_visibility="private",
                )

            def on_like(
                request: gr.Request,
                session_turns: list[dict[str, Any] | None],
                history: list[dict[str, Any]],
                data: gr.LikeData,
            ) -> str:
                index = data.index[0] if isinstance(data.index, list | tuple) else data.index
                answered = sum(1 for m in history[: int(index) + 1] if m.get("role") == "assistant")
                if not answered or answered > len(session_turns):
                    return "That answer is no longer in this session."
                turn = session_turns[answered - 1]
                if turn is None:
                    return "That message is an error, not an answer: nothing to mark."
                mark = "up" if data.liked in (True, "Like") else "down"
                try:
                    service.feedback.mark_answer(
                        mark,
                        answer=_text(data.value),
                        hits=turn["hits"],
                        **_mark_context(turn, request),
                    )
                except OSError as exc:
                    log.exception("feedback not saved")
                    return f"⚠️ Not saved: {exc}"
                return f"Saved: answer marked {'👍' if mark == 'up' else '👎'}."

            on_like.__annotations__["data"] = gr.LikeData
            chatbot.like(
                _wants_request(on_like, gr.Request),
                [turns, chatbot],
                feedback_status,
                api_visibility="private",
            )

        if tuned is not None:

            def compare(
                request: gr.Request,
                query: str,
                search_mode: str,
                use_rerank: bool,
                *extra: Any,
            ) -> str:
                filter_args, (dim_value, date_lo, date_hi) = _split_extra(extra, len(filters))
                specs = _filter_specs(
                    dict(zip(filters, filter_args, strict=True)), date_lo, date_hi
                )
                user = _user(request)
                try:
                    flt = _build_filter(specs)
                    base_hits = service.search(
                        query,
                        BASELINE,
                        _mode(search_mode),
                        use_rerank,
                        flt,
                        user=user,
                        dim=dim_value,
                    )
                    tuned_hits = service.search(
                        query,
                        tuned.key,
                        _mode(search_mode),
                        use_rerank,
                        flt,
                        user=user,
                        dim=dim_value,
                    )
                except Exception as exc:
                    log.exception("compare failed")
                    return f"⚠️ Compare failed: {exc}"
                return compare_markdown(
                    base_hits, tuned_hits, service.option(BASELINE).label, tuned.label
                )

            _wants_request(compare, gr.Request)
            compare_btn.click(
                compare,
                [compare_q, mode, rerank, *filter_inputs, dim, date_from, date_to],
                compare_out,
                api_name="compare",
            )

        def search_api(
            query: str,
            key: str = BASELINE,
            search_mode: str = "hybrid",
            use_rerank: bool = True,
            dim: int | None = None,
            filters: list[str] | None = None,
            request: gr.Request = None,  # type: ignore[assignment]
        ) -> list[dict[str, Any]]:
            """Retrieval only: the ranked passages with their per-stage scores.

            `filters`: specs like the CLI's (`department=Stores`, `effective_date>=2025`);
            `dim`: an indexed embedding dimension (default: the configured one).
            """
            hits = service.search(
                query,
                key,
                _mode(search_mode),
                use_rerank,
                filters=_build_filter(list(filters or [])),
                user=_user(request),
                dim=dim,
            )
            return [_hit_json(h) for h in hits]

        gr.api(_wants_request(search_api, gr.Request), api_name="search")

        def on_load(request: gr.Request):
            user = _user(request)
            own = service.filter_values(tuple(filters), user=user)
            updates = [gr.update(choices=own.get(key, [])) for key in filters]
            return (service.status_markdown(), *updates) if updates else service.status_markdown()

        demo.load(
            _wants_request(on_load, gr.Request),
            None,
            [status, *filter_inputs],
            api_visibility="private",
        )
    return demo


def _pairs(history: list[dict[str, Any]]) -> list[tuple[str, str]]:
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


def _hit_json(hit: Hit) -> dict[str, Any]:
    return {
        "id": hit.chunk.id,
        "doc_id": hit.chunk.doc_id,
        "title": hit.chunk.title,
        "heading_path": hit.chunk.heading_path,
        "text": hit.chunk.text,
        "scores": hit.scores,
        "ranks": hit.ranks,
    }


def check_access_config(settings: Settings) -> None:
    """Refuse to serve an access policy without a login (users could not be told apart)."""
    server = settings.server
    if server.access_policy and not server.auth:
        raise ValueError(
            "server.access_policy is set but server.auth is empty: the chat cannot tell "
            "users apart without a login, so it refuses to start. Set server.auth or remove "
            "the policy."
        )
    if server.access_policy:
        users = {entry.split(":", 1)[0] for entry in server.auth}
        unknown = sorted(set(server.groups) - users)
        if unknown:
            log.warning("server.groups names users without a login: %s", ", ".join(unknown))


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def auth_pairs(settings: Settings) -> list[tuple[str, str]] | None:
    pairs = [tuple(entry.split(":", 1)) for entry in settings.server.auth]
    return pairs or None  # type: ignore[return-value]


def exposure_warning(settings: Settings) -> str | None:
    """A warning when the chat listens beyond this machine without a login."""
    if is_loopback(settings.server.host) or settings.server.auth:
        return None
    return (
        f"the chat listens on {settings.server.host} without a login: anyone who can reach "
        "this machine can read the knowledge base. Set server.auth (RAG_APP_SERVER__AUTH) "
        "or bind 127.0.0.1."
    )


def launch(settings: Settings, *, block: bool = True, service: ChatService | None = None):
    """Start the server; returns (app, local_url). Binds 127.0.0.1 unless configured."""
    demo = build_app(settings, service)
    demo.queue(default_concurrency_limit=4, max_size=64)
    _, url, _ = demo.launch(
        server_name=settings.server.host,
        server_port=settings.server.port,
        auth=auth_pairs(settings),
        prevent_thread_lock=True,
        quiet=True,
        show_error=True,
        footer_links=["api"],
    )
    print(f"chat running at {url}  (Ctrl-C to stop)", flush=True)
    if block:
        try:
            demo.block_thread()
        finally:
            demo.close()
    return demo, url
