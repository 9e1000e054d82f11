"""Serving side of the domain RAG app: config, ingestion, stores, retrieval, answers, UI, CLI.

Nothing here imports from `finetune` or `eval`; those packages depend on this one.

The entry points a user calls from Python, importable from the package itself (loaded on
first use, so `import rag_app` stays cheap)::

    from rag_app import answer_question, build_retriever, load_settings, run_index, run_ingest

    settings = load_settings(corpus="docs/", workspace="workspace/")
    run_ingest(settings)                      # documents -> chunks
    run_index(settings)                       # chunks -> BM25 + the embedder's collection
    retriever = build_retriever(settings)     # hybrid, reranked when a reranker exists
    hits = retriever.retrieve("how do I reset the pump?", k=5)
    print(answer_question("how do I reset the pump?", hits, llm=None).text)
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "Settings": ("rag_app.config", "Settings"),
    "load_settings": ("rag_app.config", "load_settings"),
    "run_ingest": ("rag_app.ingest", "run"),
    "run_index": ("rag_app.index", "run"),
    "build_retriever": ("rag_app.retrieve", "build_retriever"),
    "Retriever": ("rag_app.retrieve", "Retriever"),
    "answer_question": ("rag_app.answer", "answer"),
    "stream_answer": ("rag_app.answer", "stream_answer"),
    "build_llm": ("rag_app.llm.factory", "build_llm"),
    "Chunk": ("rag_app.types", "Chunk"),
    "Hit": ("rag_app.types", "Hit"),
}
__all__ = [
    "Chunk",
    "Hit",
    "Retriever",
    "Settings",
    "__version__",
    "answer_question",
    "build_llm",
    "build_retriever",
    "load_settings",
    "run_index",
    "run_ingest",
    "stream_answer",
]

if TYPE_CHECKING:
    from rag_app.answer import answer as answer_question
    from rag_app.answer import stream_answer
    from rag_app.config import Settings, load_settings
    from rag_app.index import run as run_index
    from rag_app.ingest import run as run_ingest
    from rag_app.llm.factory import build_llm
    from rag_app.retrieve import Retriever, build_retriever
    from rag_app.types import Chunk, Hit


def __getattr__(name: str) -> Any:
    """Import an exported name on first use (PEP 562)."""
    if name not in _EXPORTS:
        raise AttributeError(f"module 'rag_app' has no attribute {name!r}")
    module, attribute = _EXPORTS[name]
    value = getattr(importlib.import_module(module), attribute)
    globals()[name] = value
    return value
