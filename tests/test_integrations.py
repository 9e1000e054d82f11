"""The rag-app retriever inside LlamaIndex and LangChain, with real retrieval underneath."""

from __future__ import annotations

import pytest
from _retrieval_data import make_chunks, make_settings, write_workspace

from rag_app import index
from rag_app.filters import parse_filter
from rag_app.retrieve import build_retriever
from rag_app.store import chroma


@pytest.fixture(scope="module")
def hybrid(tmp_path_factory):
    chroma.forget_clients()
    settings = make_settings(tmp_path_factory.mktemp("integrations") / "ws")
    write_workspace(settings, make_chunks())
    index.run(settings, progress=False)
    yield build_retriever(settings, mode="hybrid", rerank=False)
    chroma.forget_clients()


def test_llamaindex_query_engine_uses_our_retriever(hybrid):
    from llama_index.core.llms import MockLLM
    from llama_index.core.query_engine import RetrieverQueryEngine
    from llama_index.core.retrievers import BaseRetriever

    from rag_app.integrations.llamaindex import RagAppRetriever

    retriever = RagAppRetriever(hybrid, k=3)
    assert isinstance(retriever, BaseRetriever)
    # The retrieval is real; only the answer synthesis uses LlamaIndex's own test LLM.
    engine = RetrieverQueryEngine.from_args(retriever, llm=MockLLM(max_tokens=8))
    response = engine.query("How tight should the pump mounting bolts be?")
    nodes = response.source_nodes
    assert len(nodes) == 3
    top = nodes[0]
    assert "Torque the pump mounting bolts" in top.node.get_content()
    assert top.node.metadata["department"] == "Hydraulics"
    assert top.node.metadata["doc_id"] == "manuals/hydraulics.md"
    assert {"bm25", "dense", "fused"} <= set(top.node.metadata["scores"])
    assert top.score == pytest.approx(top.node.metadata["scores"]["fused"])
    assert isinstance(response.response, str)


def test_llamaindex_retriever_applies_filters(hybrid):
    from rag_app.integrations.llamaindex import RagAppRetriever

    retriever = RagAppRetriever(hybrid, k=5, filters=parse_filter("department=Stores"))
    nodes = retriever.retrieve("pump bolts")
    assert nodes and all(n.node.metadata["department"] == "Stores" for n in nodes)


def test_langchain_retriever_in_an_lcel_chain(hybrid):
    from langchain_core.retrievers import BaseRetriever
    from langchain_core.runnables import RunnableLambda, RunnablePassthrough

    from rag_app.integrations.langchain import RagAppRetriever

    retriever = RagAppRetriever(retriever=hybrid, k=2)
    assert isinstance(retriever, BaseRetriever)

    def format_docs(docs):
        return "\n".join(f"[{i}] {d.page_content}" for i, d in enumerate(docs, start=1))

    chain = {"context": retriever | RunnableLambda(format_docs), "question": RunnablePassthrough()}
    chain = chain | RunnableLambda(lambda x: f"Q: {x['question']}\n{x['context']}")
    out = chain.invoke("brake wear pin inspection task")
    assert out.startswith("Q: brake wear pin inspection task")
    assert "[1]" in out and "[2]" in out and "wear pin" in out

    docs = retriever.invoke("brake wear pin inspection task")
    assert docs[0].metadata["department"] == "Landing Gear"
    assert docs[0].metadata["ranks"]["fused"] == 1
    filtered = RagAppRetriever(retriever=hybrid, k=3, filters=parse_filter("doc_type=policy"))
    assert all(d.metadata["doc_type"] == "policy" for d in filtered.invoke("brake wear"))
