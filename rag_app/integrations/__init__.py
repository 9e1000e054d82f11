"""The rag-app retriever as LlamaIndex and LangChain retrievers.

- `rag_app.integrations.llamaindex.RagAppRetriever` is a LlamaIndex `BaseRetriever`: use it in
  a `RetrieverQueryEngine` or anywhere LlamaIndex takes a retriever.
- `rag_app.integrations.langchain.RagAppRetriever` is a LangChain `BaseRetriever` (a
  Runnable): compose it in LCEL chains (`retriever | format_docs | prompt | llm`).

Both wrap any `rag_app.retrieve.Retriever` and keep the chunk's metadata plus every stage's
score and rank. Each module imports only its own framework.
"""
