"""The Gradio chat: ask the knowledge base, switch baseline / fine-tuned, compare them.

Per-session state lives in the components themselves (chat history, retriever choice,
filters), never in module globals, so concurrent users cannot see each other's choices.
All the work is done by `ChatService`; this module only lays out widgets and wires them.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import socket
from collections.abc import Iterator
from typing import Any

from rag_app.config import Settings
from rag_app.types import Hit
from rag_app.ui.render import compare_markdown, hits_markdown
from rag_app.ui.service import BASELINE, ChatService

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

log = logging.getLogger(__name__)

FILTER_FIELDS = ("doc_type", "department")
MODES = [("Hybrid (BM25 + dense)", "hybrid"), ("Dense only", "dense"), ("BM25 only", "bm25")]


def _filter_specs(values: dict[str, list[str] | None]) -> list[str]:
    return [f"{key}={','.join(v)}" for key, v in values.items() if v]


def _build_filter(specs: list[str]):
    if not specs:
        return None
    from rag_app.filters import parse_filter

    return parse_filter(specs)


def build_app(settings: Settings, service: ChatService | None = None):
    """Lay out the chat UI. Returns a `gr.Blocks` ready for `.queue().launch()`."""
    import gradio as gr

    service = service or ChatService(settings)
    options = service.options()
    choices = [(o.label, o.key) for o in options]
    tuned = service.default_finetuned()
    can_rerank, rerank_reason = service.reranker_status()
    filter_values = service.filter_values(FILTER_FIELDS)

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
                sources = gr.Markdown(elem_id="sources")

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

        def respond(
            message: str,
            history: list[dict[str, Any]],
            key: str,
            search_mode: str,
            use_rerank: bool,
            *filter_args: list[str] | None,
        ) -> Iterator[tuple[list[dict[str, Any]], str, str]]:
            message = (message or "").strip()
            if not message:
                yield history, "", gr.skip()
                return
            history = [*history, {"role": "user", "content": message}]
            specs = _filter_specs(dict(zip(filters, filter_args, strict=True)))
            try:
                hits = service.search(
                    message, key, search_mode, use_rerank, filters=_build_filter(specs)
                )
            except Exception as exc:  # shown to the user, the session stays usable
                log.exception("retrieval failed")
                history.append({"role": "assistant", "content": f"⚠️ Retrieval failed: {exc}"})
                yield history, "", ""
                return
            label = service.option(key).label
            yield history, "", hits_markdown(hits, title=f"Sources · {label}")
            pairs = _pairs(history[:-1])
            history.append({"role": "assistant", "content": ""})
            for text in service.stream_answer(message, hits, pairs):
                history[-1] = {"role": "assistant", "content": text}
                yield history, "", gr.skip()

        inputs = [question, chatbot, retriever, mode, rerank, *filter_inputs]
        outputs = [chatbot, question, sources]
        send.click(respond, inputs, outputs, api_name="ask")
        question.submit(respond, inputs, outputs, api_name=False)
        clear.click(lambda: ([], "", ""), None, [chatbot, question, sources], api_name=False)

        if tuned is not None:

            def compare(
                query: str, search_mode: str, use_rerank: bool, *filter_args: list[str] | None
            ) -> str:
                specs = _filter_specs(dict(zip(filters, filter_args, strict=True)))
                flt = _build_filter(specs)
                base_hits = service.search(query, BASELINE, search_mode, use_rerank, filters=flt)
                tuned_hits = service.search(query, tuned.key, search_mode, use_rerank, flt)
                return compare_markdown(
                    base_hits, tuned_hits, service.option(BASELINE).label, tuned.label
                )

            compare_btn.click(
                compare,
                [compare_q, mode, rerank, *filter_inputs],
                compare_out,
                api_name="compare",
            )

        def search_api(
            query: str, key: str = BASELINE, search_mode: str = "hybrid", use_rerank: bool = True
        ) -> list[dict[str, Any]]:
            """Retrieval only: the ranked passages with their per-stage scores."""
            return [_hit_json(h) for h in service.search(query, key, search_mode, use_rerank)]

        gr.api(search_api, api_name="search")
        demo.load(lambda: service.status_markdown(), None, status, api_name=False)
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
