"""Exact dense search over a workspace's passages with cached vectors, for the benches that
score many adapter runs on the same queries (bench_protocol, bench_feedback_curve).

The passage vectors are the base model's (`finetune.adapter.passage_vectors`, cached on
disk); a query adapter changes only the query side, so every run is scored against the same
matrix, exactly (no HNSW approximation between runs).
"""

from __future__ import annotations

from pathlib import Path


class ExactDense:
    """Base-model passage vectors of a workspace, and the top passages of any run's queries."""

    def __init__(self, ns) -> None:
        from finetune.adapter import passage_vectors
        from finetune.split import Passages
        from rag_app.chunkstore import load_chunks
        from rag_app.embedder import Embedder

        self.chunks = load_chunks(ns.chunks_path, ns.manifest_path)
        passages = Passages.from_chunks(self.chunks)
        self.base = Embedder.load(ns.models.embedder, device="cpu")
        self.ids = passages.ids()
        self.texts = [passages.text[i] for i in self.ids]
        self.docs = passage_vectors(ns, self.base, passages, progress=False)
        self.batch_size = ns.models.embed_batch_size
        self.qvec: dict = {}
        self.queries: dict[str, str] = {}
        self._full: dict[Path, tuple] = {}  # a fully fine-tuned run: its passage matrix, queries

    def encode(self, queries: dict[str, str]) -> None:
        """Encode (once) the base query vectors of `queries` (id -> text)."""
        qids = list(queries)
        vectors = self.base.encode_queries([queries[q] for q in qids])
        self.qvec.update(zip(qids, vectors, strict=True))
        self.queries.update(queries)

    def _full_run(self, run: Path):
        """A fully fine-tuned run re-encodes every passage (and the queries), once."""
        if run not in self._full:
            from rag_app.embedder import Embedder

            model = Embedder.load(str(run), device="cpu")
            docs = model.encode_documents(self.texts, batch_size=self.batch_size)
            qids = list(self.queries)
            qvec = dict(
                zip(qids, model.encode_queries([self.queries[q] for q in qids]), strict=True)
            )
            self._full = {run: (docs, qvec)}  # one at a time: a matrix per run adds up
        return self._full[run]

    def top(self, qids: list[str], run: Path | None, k: int) -> dict[str, list[tuple[str, float]]]:
        """The `k` best (passage id, cosine) of each query, with `run` (adapter or model)."""
        import numpy as np

        from rag_app.query_adapter import QueryAdapter, is_adapter_dir

        docs = self.docs
        if run is not None and not is_adapter_dir(run):
            docs, qvec = self._full_run(run)
            q = np.stack([qvec[i] for i in qids])
        else:
            q = np.stack([self.qvec[i] for i in qids])
            if run is not None:
                q = QueryAdapter.load(run).apply(q)
        scores = q @ docs.T
        top = np.argsort(-scores, axis=1)[:, :k]
        return {
            qid: [(self.ids[j], float(scores[i, j])) for j in row]
            for i, (qid, row) in enumerate(zip(qids, top, strict=True))
        }
