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
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

from rag_app.chat import BASELINE, ChatService, RetrieverChoice, RetrieverOption
from rag_app.config import Settings
from rag_app.ui.inputs import (
    DATE_FIELD,
    build_filter,
    filter_specs,
    history_pairs,
    hit_json,
    mark_context,
    message_text,
    session_of,
    split_extra,
    user_of,
    wants_request,
)
from rag_app.ui.render import (
    CARD_CSS,
    MARK_JS,
    answer_markdown,
    compare_markdown,
    hits_html,
    rank_moves,
)

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

log = logging.getLogger(__name__)

FILTER_FIELDS = ("doc_type", "department")
MODES = [("Hybrid (BM25 + dense)", "hybrid"), ("Dense only", "dense"), ("BM25 only", "bm25")]


def build_app(settings: Settings, service: ChatService | None = None):
    """Lay out the chat UI. Returns a `gr.Blocks`; `launch` serves it with `CARD_CSS` and
    `MARK_JS` (the source cards' look and marking buttons).

    The page is built by the parts below, in page order: what the service offers
    (`read_offer`), the chat column, the retriever controls, the sources panel and the
    compare view, then the event wiring (ask, marks, compare, the `/search` API, page load).
    """
    import gradio as gr

    service = service or ChatService(settings)
    check_access_config(settings)
    offer = read_offer(settings, service)
    with gr.Blocks(title="rag-app: domain chat") as demo:
        gr.Markdown("## Ask the knowledge base")
        status = gr.Markdown(elem_id="status")
        with gr.Row():
            with gr.Column(scale=3, min_width=480):  # below ~840 px the sources go under
                chat = chat_column()
            with gr.Column(scale=2, min_width=360):
                controls = retriever_controls(settings, offer)
                panel = sources_panel()
        compare = compare_panel(offer.tuned)
        # this session's answered questions: what each mark refers to (server-side state,
        # so a client can only point at passages it was shown)
        turns = gr.State([])

        wire_ask(service, settings, chat, controls, panel, turns)
        if settings.feedback.enabled:
            wire_marks(service, chat, panel, turns)
        if offer.tuned is not None and compare is not None:
            wire_compare(service, controls, compare, offer.tuned)
        wire_search_api(service)
        wire_load(demo, service, status, controls)
    return demo


# --- what the page offers ----------------------------------------------------------------
@dataclass(frozen=True)
class Offer:
    """What the controls offer, read from the service once per page build."""

    choices: list[tuple[str, str]]  # (label, key) of each retriever
    tuned: RetrieverOption | None  # the fine-tuned run the compare view uses
    can_rerank: bool
    rerank_reason: str
    filter_values: dict[str, list[str]]  # FILTER_FIELDS present in the corpus
    has_dates: bool
    dims: list[int]  # indexed embedding dimensions, full first
    default_dim: int | None


def read_offer(settings: Settings, service: ChatService) -> Offer:
    """Ask the service once what the widgets can offer (retrievers, reranker, filters,
    dimensions), so the layout functions only lay out and a missing index is no error."""
    from rag_app.retrieve import resolve_dim

    options = service.options()
    tuned = service.default_finetuned()
    can_rerank, rerank_reason = service.reranker_status()
    filter_values = service.filter_values(FILTER_FIELDS)
    has_dates = bool(service.filter_values((DATE_FIELD,)))
    try:
        dims = service.dims(BASELINE)
    except Exception as exc:  # no index yet: the first question says what to run
        log.info("no indexed dimensions: %s", exc)
        dims = []
    return Offer(
        choices=[(o.label, o.key) for o in options],
        tuned=tuned,
        can_rerank=can_rerank,
        rerank_reason=rerank_reason,
        filter_values=filter_values,
        has_dates=has_dates,
        dims=dims,
        default_dim=resolve_dim(settings) or (dims[0] if dims else None),
    )


# --- layout ------------------------------------------------------------------------------
@dataclass
class Chat:
    """The chat column's widgets."""

    chatbot: Any
    question: Any
    send: Any
    clear: Any


@dataclass
class Controls:
    """The widgets a session's retriever choice and filters are read from."""

    retriever: Any
    mode: Any
    rerank: Any
    filters: dict[str, Any]  # field -> its multiselect dropdown
    dim: Any
    date_from: Any
    date_to: Any

    def extra_inputs(self) -> list[Any]:
        """The inputs every handler takes after its own: filter dropdowns, then dimension
        and dates (new inputs go last, so API clients that pass fewer keep working)."""
        return [*self.filters.values(), self.dim, self.date_from, self.date_to]


@dataclass
class Sources:
    """The sources panel: the cards, the marks' status line, and the cards' hidden
    marking plumbing."""

    feedback_status: Any
    cards: Any
    mark_request: Any
    mark_submit: Any


@dataclass
class Compare:
    """The compare view's widgets (only with a fine-tuned run)."""

    query: Any
    button: Any
    out: Any


def chat_column() -> Chat:
    """The conversation, the question box and its buttons: what a user types into."""
    import gradio as gr

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
    return Chat(chatbot, question, send, clear)


def retriever_controls(settings: Settings, offer: Offer) -> Controls:
    """Retriever, search mode, rerank, filters, dimension and dates: the per-session
    choice, kept in the widgets (never in globals) so sessions cannot see each other's.
    Controls with nothing to choose are shown disabled (rerank) or hidden (dim, dates)."""
    import gradio as gr

    retriever = gr.Radio(
        offer.choices,
        value=BASELINE,
        label="Retriever",
        info="Switch between the base embedder and a fine-tuned run.",
        elem_id="retriever",
    )
    mode = gr.Radio(MODES, value="hybrid", label="Search", elem_id="mode")
    rerank = gr.Checkbox(
        value=offer.can_rerank and settings.retrieval.rerank,
        interactive=offer.can_rerank,
        label="Rerank with cross-encoder" if offer.can_rerank else "Reranking is off",
        info=None if offer.can_rerank else offer.rerank_reason,
        elem_id="rerank",
    )
    filters = {
        key: gr.Dropdown(
            values,
            multiselect=True,
            label=f"Filter: {key}",
            elem_id=f"filter-{key}",
        )
        for key, values in offer.filter_values.items()
    }
    dims = offer.dims
    dim = gr.Dropdown(
        [(f"{d} (full)" if i == 0 else str(d), d) for i, d in enumerate(dims)],
        value=offer.default_dim if offer.default_dim in dims else None,
        label="Embedding dimension",
        info="Matryoshka truncation; index more with `rag-app index --dim N`.",
        visible=len(dims) > 1,
        elem_id="dim",
    )
    with gr.Row(visible=offer.has_dates):
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
    return Controls(retriever, mode, rerank, filters, dim, date_from, date_to)


def sources_panel() -> Sources:
    """Where the retrieved passages show as cards, with the line that confirms marks."""
    import gradio as gr

    feedback_status = gr.Markdown(elem_id="feedback-status")
    cards = gr.HTML(elem_id="sources")
    # the cards' Relevant / Not relevant buttons write "n:mark" here and press
    # mark-submit (MARK_JS); both are hidden plumbing, not controls
    mark_request = gr.Textbox(elem_id="mark-request", elem_classes=["rag-hidden"])
    mark_submit = gr.Button("mark", elem_id="mark-submit", elem_classes=["rag-hidden"])
    return Sources(feedback_status, cards, mark_request, mark_submit)


def compare_panel(tuned: RetrieverOption | None) -> Compare | None:
    """Baseline and fine-tuned side by side for one query, so the effect of fine-tuning
    can be seen; without a fine-tuned run, the commands that make one (and None)."""
    import gradio as gr

    with gr.Accordion("Compare baseline and fine-tuned", open=tuned is not None):
        if tuned is None:
            gr.Markdown(
                "No fine-tuned retriever yet: run `rag-app synth` and `rag-app finetune`, "
                "then `rag-app index --model <run>`."
            )
            return None
        with gr.Row():
            query = gr.Textbox(label="Query", elem_id="compare-query", scale=4)
            button = gr.Button("Compare", elem_id="compare", scale=1)
        out = gr.Markdown(elem_id="compare-out")
    return Compare(query, button, out)


# --- events ------------------------------------------------------------------------------
def wire_ask(
    service: ChatService,
    settings: Settings,
    chat: Chat,
    controls: Controls,
    panel: Sources,
    turns: Any,
) -> None:
    """The chat's `ask` endpoint (Ask, Enter, and `/ask` for API clients) and Clear: search
    with the session's choice, show the sources, then stream the answer into the chat and
    quote-highlight the cards. Every answered question is recorded in `turns` for marks."""
    import gradio as gr

    filters = controls.filters
    marks_on = settings.feedback.enabled

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
        filter_args, (dim_value, date_lo, date_hi) = split_extra(extra, len(filters))
        message = (message or "").strip()
        session_turns = list(session_turns or [])
        if not message:
            yield history, "", gr.skip(), gr.skip()
            return
        history = [*history, {"role": "user", "content": message}]
        specs = filter_specs(dict(zip(filters, filter_args, strict=True)), date_lo, date_hi)
        started = time.perf_counter()

        def search_with(with_choice: RetrieverChoice) -> list[Any]:
            return service.search(
                message, with_choice, filters=build_filter(specs), user=user_of(request)
            )

        try:
            choice = RetrieverChoice.of(key, search_mode, use_rerank, dim_value)
            hits = search_with(choice)
        except Exception as exc:  # shown to the user, the session stays usable
            log.exception("retrieval failed")
            history.append({"role": "assistant", "content": f"⚠️ Retrieval failed: {exc}"})
            # no turn to mark, but one entry per assistant message keeps 👍/👎 aligned
            yield history, "", "", [*session_turns, None]
            return
        retrieve_ms = (time.perf_counter() - started) * 1000
        label = service.option(key).label
        t0 = time.perf_counter()
        turn = service.record_turn(
            message, choice, hits, user=user_of(request), session=session_of(request)
        )
        session_turns.append(turn)
        note = service.search_note(message, choice)
        moved: dict[int, str] = {}
        if key != BASELINE:  # what fine-tuning changed for this question
            try:
                moved = rank_moves(search_with(replace(choice, key=BASELINE)), hits)
            except Exception:  # the baseline's index may be gone: no badges then
                log.exception("baseline search for rank changes failed")
        title = f"Sources · {label}"
        cards = hits_html(hits, title=title, note=note, moved=moved, marks=marks_on, query=message)
        yield history, "", cards, session_turns
        pairs = history_pairs(history[:-1])
        history.append({"role": "assistant", "content": "⏳ Answering…"})
        yield history, "", gr.skip(), gr.skip()
        final = None
        for final in service.answer_turn(message, hits, pairs, choice=choice):
            history[-1] = {"role": "assistant", "content": final.text}
            yield history, "", gr.skip(), gr.skip()
        if final is None:
            return
        timings = {"retrieve": retrieve_ms, "answer": (time.perf_counter() - t0) * 1000}
        history[-1] = {"role": "assistant", "content": answer_markdown(final, timings)}
        quoted: dict[int, list[str]] = {}
        for quote in final.quotes:
            quoted.setdefault(quote.unit.passage, []).append(quote.unit.core)
        html_out = hits_html(
            hits,
            title=title,
            note=note,
            quoted=quoted,
            moved=moved,
            marks=marks_on,
            query=message,
        )
        yield history, "", html_out, gr.skip()

    wants_request(respond, gr.Request)
    # new inputs go last: API clients that pass the filter dropdowns keep working
    inputs = [
        chat.question,
        chat.chatbot,
        turns,
        controls.retriever,
        controls.mode,
        controls.rerank,
        *controls.extra_inputs(),
    ]
    # the state is not part of the API: `/ask` clients see the same outputs as before
    outputs = [chat.chatbot, chat.question, panel.cards, turns]
    chat.send.click(respond, inputs, outputs, api_name="ask")
    chat.question.submit(respond, inputs, outputs, api_visibility="private")
    chat.clear.click(lambda: ([], "", "", []), None, [*outputs], api_visibility="private")
    turns.change(lambda t: "", turns, panel.feedback_status, api_visibility="private")


def wire_marks(service: ChatService, chat: Chat, panel: Sources, turns: Any) -> None:
    """With `feedback.enabled`: a card's Relevant / Not relevant buttons and the chat's
    👍/👎 write marks to the feedback file, each tied to the turn that showed it."""
    import gradio as gr

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
            service.feedback.mark_source(mark, hit=hit, **mark_context(turn, request))
        except OSError as exc:
            log.exception("feedback not saved")
            return f"⚠️ Not saved: {exc}"
        word = "relevant" if mark == "relevant" else "not relevant"
        return f"Saved: [{hit['position']}] {hit['doc_id']} is {word}."

    def on_card_mark(request: gr.Request, session_turns, wanted: str) -> str:
        position, _, mark = (wanted or "").partition(":")
        if mark not in ("relevant", "not_relevant") or not position.isdigit():
            return "Use a card's Relevant / Not relevant buttons."
        return mark_source(request, session_turns, int(position), mark)

    panel.mark_submit.click(
        wants_request(on_card_mark, gr.Request),
        [turns, panel.mark_request],
        panel.feedback_status,
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
                answer=message_text(data.value),
                hits=turn["hits"],
                **mark_context(turn, request),
            )
        except OSError as exc:
            log.exception("feedback not saved")
            return f"⚠️ Not saved: {exc}"
        return f"Saved: answer marked {'👍' if mark == 'up' else '👎'}."

    on_like.__annotations__["data"] = gr.LikeData
    chat.chatbot.like(
        wants_request(on_like, gr.Request),
        [turns, chat.chatbot],
        panel.feedback_status,
        api_visibility="private",
    )


def wire_compare(
    service: ChatService, controls: Controls, compare: Compare, tuned: RetrieverOption
) -> None:
    """The `compare` endpoint: one query searched with the baseline and the fine-tuned
    run under the session's mode, rerank, filters and dimension."""
    import gradio as gr

    filters = controls.filters

    def compare_runs(
        request: gr.Request,
        query: str,
        search_mode: str,
        use_rerank: bool,
        *extra: Any,
    ) -> str:
        filter_args, (dim_value, date_lo, date_hi) = split_extra(extra, len(filters))
        specs = filter_specs(dict(zip(filters, filter_args, strict=True)), date_lo, date_hi)
        user = user_of(request)
        try:
            flt = build_filter(specs)
            choice = RetrieverChoice.of(BASELINE, search_mode, use_rerank, dim_value)
            base_hits = service.search(query, choice, flt, user=user)
            tuned_hits = service.search(query, replace(choice, key=tuned.key), flt, user=user)
        except Exception as exc:
            log.exception("compare failed")
            return f"⚠️ Compare failed: {exc}"
        return compare_markdown(base_hits, tuned_hits, service.option(BASELINE).label, tuned.label)

    wants_request(compare_runs, gr.Request)
    compare.button.click(
        compare_runs,
        [compare.query, controls.mode, controls.rerank, *controls.extra_inputs()],
        compare.out,
        api_name="compare",
    )


def wire_search_api(service: ChatService) -> None:
    """`/search`: retrieval only, for API clients (no widgets)."""
    import gradio as gr

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
            RetrieverChoice.of(key, search_mode, use_rerank, dim),
            filters=build_filter(list(filters or [])),
            user=user_of(request),
        )
        return [hit_json(h) for h in hits]

    gr.api(wants_request(search_api, gr.Request), api_name="search")


def wire_load(demo: Any, service: ChatService, status: Any, controls: Controls) -> None:
    """On page load: the status line, and the filter dropdowns narrowed to the values the
    logged-in user may read (the layout offered the whole corpus's)."""
    import gradio as gr

    filters = controls.filters

    def on_load(request: gr.Request):
        user = user_of(request)
        own = service.filter_values(tuple(filters), user=user)
        updates = [gr.update(choices=own.get(key, [])) for key in filters]
        return (service.status_markdown(), *updates) if updates else service.status_markdown()

    demo.load(
        wants_request(on_load, gr.Request),
        None,
        [status, *filters.values()],
        api_visibility="private",
    )


def check_access_config(settings: Settings) -> None:
    """Refuse to serve an access policy without a login (users could not be told apart)."""
    from rag_app.access import AccessPolicy

    server = settings.server
    if AccessPolicy.from_settings(settings).enforced and not server.auth:
        raise ValueError(
            "an access policy is in force (server.access_policy, or the one recorded in "
            f"{settings.workspace}/access-policy.json when the corpus was ingested) but "
            "server.auth is empty: the chat cannot tell users apart without a login, so it "
            "refuses to start. Set server.auth, or remove the policy (and that file)."
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
        css=CARD_CSS,
        js=MARK_JS,
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
