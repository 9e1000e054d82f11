"""Serving side of the domain RAG app: config, ingestion, stores, retrieval, answers, UI, CLI.

Nothing here imports from `finetune` or `eval`; those packages depend on this one.
"""

__version__ = "0.1.0"
