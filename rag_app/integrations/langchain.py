"""rag-app retrieval as a LangChain `BaseRetriever` (so also an LCEL Runnable).

Example:
    >>> retriever = RagAppRetriever(retriever=build_retriever(settings), k=5)
    >>> chain = retriever | RunnableLambda(format_docs)
    >>> chain.invoke("How tight are the pump bolts?")
"""

from __future__ import annotations

from typing import Any

from langchain_core.callbacks import CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever
from pydantic import ConfigDict

from rag_app.types import Hit


def hit_to_document(hit: Hit) -> Document:
    """A LangChain `Document` with the chunk's metadata plus stage scores and ranks."""
    chunk = hit.chunk
    return Document(
        id=chunk.id,
        page_content=chunk.text,
        metadata={
            **chunk.metadata,
            "chunk_id": chunk.id,
            "doc_id": chunk.doc_id,
            "title": chunk.title,
            "heading_path": chunk.heading_path,
            "score": hit.score,
            "scores": dict(hit.scores),
            "ranks": dict(hit.ranks),
        },
    )


class RagAppRetriever(BaseRetriever):
    """Wraps a rag-app `Retriever` (hybrid, reranked, ...) for LangChain.

    `filters` is a `rag_app.filters.Filter` applied to every query.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    retriever: Any
    k: int = 5
    filters: Any = None

    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun
    ) -> list[Document]:
        hits = self.retriever.retrieve(query, k=self.k, filters=self.filters)
        return [hit_to_document(h) for h in hits]
