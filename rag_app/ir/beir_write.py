"""Writing datasets in the BEIR layout (`write_beir`), the inverse of
`rag_app.ir.beir.load_beir`: every file replaced atomically, and a dataset refused when
the result would not load.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from rag_app.ir.beir import CORPUS_FILE, QRELS_DIR, QRELS_HEADER, QUERIES_FILE

__all__ = ["write_beir"]


def _field(dataset: Any, key: str, default: Any = None) -> Any:
    if isinstance(dataset, Mapping):
        return dataset.get(key, default)
    return getattr(dataset, key, default)


def _check_id(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value or any(c in value for c in "\t\r\n"):
        raise ValueError(f"{what} {value!r} must be a non-empty string without tabs or newlines")
    return value


def _atomic_write(target: Path, lines: Iterator[str]) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as handle:
            for line in lines:
                handle.write(line)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_beir(dataset: Any, path: str | os.PathLike[str], split: str | None = None) -> Path:
    """Write ``dataset`` in the BEIR layout under ``path`` and return the folder.

    ``dataset`` is a ``BeirDataset`` or anything with the same fields as attributes or mapping
    keys: ``queries`` (``{qid: text}``), ``qrels`` (``{qid: {doc_id: score}}``), optionally
    ``corpus`` (``{doc_id: {"title", "text", "metadata"}}`` or ``{doc_id: text}``),
    ``query_metadata`` and ``split`` (default "test"; the ``split`` argument wins).

    Writes ``queries.jsonl``, ``qrels/<split>.tsv`` (with header) and, when the corpus is not
    empty, ``corpus.jsonl``; each file is replaced atomically, other splits' qrels are left
    alone. Raises ValueError when a qrel names a query (or, with a corpus, a doc) that the
    dataset does not have, since the result would not load, and FileExistsError when the
    corpus is empty but the folder already holds a ``corpus.jsonl`` that the qrels would then
    be checked against.
    """
    root = Path(path)
    queries: Mapping[str, str] = _field(dataset, "queries") or {}
    qrels: Mapping[str, Mapping[str, int]] = _field(dataset, "qrels") or {}
    corpus: Mapping[str, Any] = _field(dataset, "corpus") or {}
    query_metadata: Mapping[str, Mapping[str, Any]] = _field(dataset, "query_metadata") or {}
    split = split or _field(dataset, "split") or "test"
    _check_id(split, "split")
    if "/" in split or "\\" in split:
        raise ValueError(f"split {split!r} must be a plain file name")

    for qid, docs in qrels.items():
        _check_id(qid, "query id")
        if qid not in queries:
            raise ValueError(f"qrels name query {qid!r}, which is not in queries")
        for doc_id, score in docs.items():
            _check_id(doc_id, "corpus id")
            if corpus and doc_id not in corpus:
                raise ValueError(f"qrels of {qid!r} name doc {doc_id!r}, which is not in corpus")
            if isinstance(score, bool) or not float(score).is_integer():
                raise ValueError(f"qrel ({qid!r}, {doc_id!r}): score {score!r} is not an integer")
    if not corpus and (root / CORPUS_FILE).exists():
        raise FileExistsError(
            f"{root / CORPUS_FILE} exists but the dataset has no corpus; remove it or write "
            "to another folder"
        )

    def corpus_lines() -> Iterator[str]:
        for doc_id, doc in corpus.items():
            _check_id(doc_id, "doc id")
            if isinstance(doc, str):
                doc = {"text": doc}
            record: dict[str, Any] = {
                "_id": doc_id,
                "title": doc.get("title") or "",
                "text": doc["text"],
            }
            if doc.get("metadata"):
                record["metadata"] = doc["metadata"]
            yield json.dumps(record, ensure_ascii=False) + "\n"

    def query_lines() -> Iterator[str]:
        for qid, text in queries.items():
            _check_id(qid, "query id")
            record: dict[str, Any] = {"_id": qid, "text": text}
            if query_metadata.get(qid):
                record["metadata"] = dict(query_metadata[qid])
            yield json.dumps(record, ensure_ascii=False) + "\n"

    def qrel_lines() -> Iterator[str]:
        yield "\t".join(QRELS_HEADER) + "\n"
        for qid, docs in qrels.items():
            for doc_id, score in docs.items():
                yield f"{qid}\t{doc_id}\t{int(score)}\n"

    if corpus:
        _atomic_write(root / CORPUS_FILE, corpus_lines())
    _atomic_write(root / QUERIES_FILE, query_lines())
    _atomic_write(root / QRELS_DIR / f"{split}.tsv", qrel_lines())
    return root
