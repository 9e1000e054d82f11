"""rag-app retrieval as a LlamaIndex `BaseRetriever`.

Example:
    >>> from llama_index.core.query_engine import RetrieverQueryEngine
    >>> retriever = RagAppRetriever(build_retriever(settings), k=5)
    >>> engine = RetrieverQueryEngine.from_args(retriever, llm=my_llamaindex_llm)
    >>> engine.query("How tight are the pump bolts?").source_nodes
"""

from __future__ import annotations

from typing import Any

from llama_index.core.retrievers import BaseRetriever
from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode

from rag_app.filters import Filter
from rag_app.retrieve import Retriever
from rag_app.types import Hit


def hit_to_node(hit: Hit) -> NodeWithScore:
    """A `NodeWithScore` whose TextNode carries the chunk's metadata and stage scores."""
    chunk = hit.chunk
    metadata: dict[str, Any] = {
        **chunk.metadata,
        "doc_id": chunk.doc_id,
        "title": chunk.title,
        "heading_path": chunk.heading_path,
        "scores": dict(hit.scores),
        "ranks": dict(hit.ranks),
    }
    node = TextNode(
        id_=chunk.id,
        text=chunk.text,
        metadata=metadata,
        start_char_idx=chunk.start_char,
        end_char_idx=chunk.end_char,
        # Scores and ranks are for people and tools, not for the LLM's prompt.
        excluded_llm_metadata_keys=["scores", "ranks"],
        excluded_embed_metadata_keys=list(metadata),
    )
    return NodeWithScore(node=node, score=hit.score)


class RagAppRetriever(BaseRetriever):
    """Wraps a rag-app `Retriever` (hybrid, reranked, ...) for LlamaIndex."""

    def __init__(self, retriever: Retriever, k: int = 5, filters: Filter | None = None, **kwargs):
        self._rag_retriever = retriever
        self._k = k
        self._filters = filters
        super().__init__(**kwargs)

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        hits = self._rag_retriever.retrieve(
            query_bundle.query_str, k=self._k, filters=self._filters
        )
        return [hit_to_node(h) for h in hits]
