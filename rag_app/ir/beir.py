"""Datasets in the BEIR layout: ``corpus.jsonl``, ``queries.jsonl``, ``qrels/<split>.tsv``.

::

    <dataset>/
      corpus.jsonl        {"_id": ..., "title": ..., "text": ..., "metadata": {...}}  (optional)
      queries.jsonl       {"_id": ..., "text": ..., "metadata": {...}}
      qrels/test.tsv      query-id <TAB> corpus-id <TAB> score   (header line optional)
      qrels/dev.tsv ...

``corpus.jsonl`` is optional. Without it ``corpus`` is empty and the corpus-ids in the qrels are
taken as given: the project's shipped ``corpus/eval/`` set uses document paths relative to the
corpus folder, and the harness maps retrieved chunks to those documents. Unknown corpus-ids are
therefore an error only when a ``corpus.jsonl`` exists to check them against.

Files are read line by line (the full MedQuAD corpus is 18 MB), and every problem is reported as
a ``DatasetError`` naming the file and line: a broken eval set should fail loudly, not quietly
evaluate on fewer queries. Writing the layout is `rag_app.ir.beir_write.write_beir`.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rag_app.errors import RagAppError

CORPUS_FILE = "corpus.jsonl"
QUERIES_FILE = "queries.jsonl"
QRELS_DIR = "qrels"
QRELS_HEADER = ("query-id", "corpus-id", "score")


class DatasetError(RagAppError, ValueError):
    """A malformed or inconsistent dataset file; the message names the file and line."""


@dataclass
class BeirDataset:
    """One split of a BEIR-layout dataset.

    ``queries`` / ``query_metadata`` hold only the queries that appear in this split's qrels
    (in ``queries.jsonl`` order). ``corpus`` maps doc id to ``{"title", "text", "metadata"}``
    and is empty when the dataset has no ``corpus.jsonl``. ``qrels`` is
    ``{query_id: {corpus_id: score}}`` with integer grades, 0 included as written.
    """

    corpus: dict[str, dict[str, Any]]
    queries: dict[str, str]
    query_metadata: dict[str, dict[str, Any]]
    qrels: dict[str, dict[str, int]]
    name: str
    path: Path | None = None
    split: str = "test"
    repaired: dict[str, str] = field(default_factory=dict)

    @property
    def has_corpus(self) -> bool:
        """Whether the dataset came with a ``corpus.jsonl`` (non-empty corpus)."""
        return bool(self.corpus)

    @property
    def n_qrels(self) -> int:
        """Number of (query, doc) judgements, i.e. rows of the qrels file without duplicates."""
        return sum(len(docs) for docs in self.qrels.values())

    def summary(self) -> dict[str, Any]:
        """Counts for reports."""
        return {
            "name": self.name,
            "split": self.split,
            "n_docs": len(self.corpus),
            "n_queries": len(self.queries),
            "n_qrels": self.n_qrels,
            "n_repaired_query_ids": len(self.repaired),
        }


def _where(path: Path, lineno: int) -> str:
    return f"{path}:{lineno}"


def _iter_jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) for each non-blank line, streaming."""
    with path.open(encoding="utf-8-sig") as handle:
        for lineno, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DatasetError(
                    f"{_where(path, lineno)}: malformed JSON line ({exc.msg}, column {exc.colno})"
                ) from None
            if not isinstance(obj, dict):
                raise DatasetError(
                    f"{_where(path, lineno)}: expected a JSON object, got {type(obj).__name__}"
                )
            yield lineno, obj


def _read_id(obj: Mapping[str, Any], path: Path, lineno: int) -> str:
    if "_id" not in obj:
        raise DatasetError(f"{_where(path, lineno)}: missing field '_id'")
    value = obj["_id"]
    # Some exports write numeric ids; qrels ids are read as strings, so normalise.
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not value.strip():
        raise DatasetError(f"{_where(path, lineno)}: '_id' must be a non-empty string")
    return value


def _read_text(obj: Mapping[str, Any], key: str, path: Path, lineno: int, *, required: bool) -> str:
    if key not in obj or obj[key] is None:
        if required:
            raise DatasetError(f"{_where(path, lineno)}: missing field {key!r}")
        return ""
    value = obj[key]
    if not isinstance(value, str):
        raise DatasetError(
            f"{_where(path, lineno)}: field {key!r} must be a string, got {type(value).__name__}"
        )
    return value


def _read_metadata(obj: Mapping[str, Any], path: Path, lineno: int) -> dict[str, Any]:
    value = obj.get("metadata")
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise DatasetError(
            f"{_where(path, lineno)}: field 'metadata' must be an object, "
            f"got {type(value).__name__}"
        )
    return value


def _parse_score(raw: str) -> int | None:
    try:
        return int(raw)
    except ValueError:
        pass
    try:
        value = float(raw)
    except ValueError:
        return None
    return int(value) if value.is_integer() else None


def _read_qrels(
    path: Path,
) -> tuple[dict[str, dict[str, int]], dict[str, int], dict[tuple[str, str], int]]:
    """qrels, first line of each query id, line of each (query, doc) pair."""
    qrels: dict[str, dict[str, int]] = {}
    query_lines: dict[str, int] = {}
    pair_lines: dict[tuple[str, str], int] = {}
    first = True
    with path.open(encoding="utf-8-sig") as handle:
        for lineno, line in enumerate(handle, start=1):
            line = line.rstrip("\r\n")
            if not line.strip():
                continue
            fields = line.split("\t")
            is_first, first = first, False
            if len(fields) != 3:
                raise DatasetError(
                    f"{_where(path, lineno)}: expected 3 tab-separated columns "
                    f"(query-id, corpus-id, score), got {len(fields)}"
                )
            qid, doc_id, raw_score = (f.strip() for f in fields)
            score = _parse_score(raw_score)
            if score is None:
                if is_first:  # header, e.g. "query-id\tcorpus-id\tscore"
                    continue
                raise DatasetError(
                    f"{_where(path, lineno)}: score must be an integer, got {raw_score!r}"
                )
            if not qid or not doc_id:
                raise DatasetError(f"{_where(path, lineno)}: empty query-id or corpus-id")
            previous = pair_lines.get((qid, doc_id))
            if previous is not None:
                if qrels[qid][doc_id] != score:
                    raise DatasetError(
                        f"{_where(path, lineno)}: ({qid!r}, {doc_id!r}) judged {score} here and "
                        f"{qrels[qid][doc_id]} at line {previous}"
                    )
                continue  # an exact duplicate row says nothing new
            qrels.setdefault(qid, {})[doc_id] = score
            query_lines.setdefault(qid, lineno)
            pair_lines[(qid, doc_id)] = lineno
    return qrels, query_lines, pair_lines


def available_splits(path: str | os.PathLike[str]) -> list[str]:
    """Split names with a ``qrels/<split>.tsv`` file, sorted; [] if there is none."""
    qrels_dir = Path(path) / QRELS_DIR
    if not qrels_dir.is_dir():
        return []
    return sorted(p.stem for p in qrels_dir.glob("*.tsv") if p.is_file())


def load_beir(
    path: str | os.PathLike[str],
    split: str = "test",
    name: str | None = None,
    on_duplicate_query: str = "error",
) -> BeirDataset:
    """Load one split of a BEIR-layout dataset (see the module docstring).

    Raises FileNotFoundError for a missing folder, ``queries.jsonl`` or split (listing the
    splits that exist) and DatasetError (a ValueError) naming file and line for malformed JSON,
    missing or mistyped fields, duplicate ids, bad qrels rows, a qrel whose query is not in
    ``queries.jsonl``, or, when ``corpus.jsonl`` exists, a qrel whose doc is not in it.

    A query id written twice is an error unless ``on_duplicate_query`` is "drop" or
    "disambiguate" (see ``_resolve_duplicates``; what was done is in ``dataset.repaired``).
    Real data needs this: medquad-small reuses 564 ids for different questions.
    """
    if on_duplicate_query not in ("error", "drop", "disambiguate"):
        raise ValueError("on_duplicate_query must be 'error', 'drop' or 'disambiguate'")
    root = Path(path)
    if not root.is_dir():
        raise FileNotFoundError(f"dataset folder not found: {root}")
    qrels_path = root / QRELS_DIR / f"{split}.tsv"
    if not qrels_path.is_file():
        raise FileNotFoundError(
            f"no qrels for split {split!r}: {qrels_path} does not exist; "
            f"available splits: {available_splits(root)}"
        )
    queries_path = root / QUERIES_FILE
    if not queries_path.is_file():
        raise FileNotFoundError(f"{queries_path} does not exist")

    qrels, query_lines, pair_lines = _read_qrels(qrels_path)

    queries: dict[str, str] = {}
    query_metadata: dict[str, dict[str, Any]] = {}
    seen_queries: dict[str, int] = {}
    duplicates: dict[str, list[tuple[int, str, dict[str, Any]]]] = {}
    for lineno, obj in _iter_jsonl(queries_path):
        qid = _read_id(obj, queries_path, lineno)
        text = _read_text(obj, "text", queries_path, lineno, required=True)
        metadata = _read_metadata(obj, queries_path, lineno)
        if qid in seen_queries:
            if on_duplicate_query == "error":
                raise DatasetError(
                    f"{_where(queries_path, lineno)}: duplicate query id {qid!r} "
                    f"(first at line {seen_queries[qid]}); load with "
                    "on_duplicate_query='drop' or 'disambiguate' to go on without it"
                )
            if qid in qrels:
                duplicates.setdefault(
                    qid, [(seen_queries[qid], queries[qid], query_metadata[qid])]
                ).append((lineno, text, metadata))
            continue
        seen_queries[qid] = lineno
        if qid in qrels:
            queries[qid] = text
            query_metadata[qid] = metadata
    unknown_queries = [qid for qid in qrels if qid not in seen_queries]
    if unknown_queries:
        qid = unknown_queries[0]
        raise DatasetError(
            f"{_where(qrels_path, query_lines[qid])}: query-id {qid!r} is not in {QUERIES_FILE} "
            f"({len(unknown_queries)} unknown query ids in all)"
        )

    corpus: dict[str, dict[str, Any]] = {}
    corpus_path = root / CORPUS_FILE
    if corpus_path.is_file():
        corpus_lines: dict[str, int] = {}
        for lineno, obj in _iter_jsonl(corpus_path):
            doc_id = _read_id(obj, corpus_path, lineno)
            if doc_id in corpus_lines:
                raise DatasetError(
                    f"{_where(corpus_path, lineno)}: duplicate doc id {doc_id!r} "
                    f"(first at line {corpus_lines[doc_id]})"
                )
            corpus_lines[doc_id] = lineno
            corpus[doc_id] = {
                # BEIR corpora often omit the title or leave it empty; the text is what counts.
                "title": _read_text(obj, "title", corpus_path, lineno, required=False),
                "text": _read_text(obj, "text", corpus_path, lineno, required=True),
                "metadata": _read_metadata(obj, corpus_path, lineno),
            }
        unknown_docs = [pair for pair in pair_lines if pair[1] not in corpus]
        if unknown_docs:
            qid, doc_id = unknown_docs[0]
            raise DatasetError(
                f"{_where(qrels_path, pair_lines[(qid, doc_id)])}: corpus-id {doc_id!r} is not "
                f"in {CORPUS_FILE} ({len(unknown_docs)} unknown corpus ids in all)"
            )

    repaired = _resolve_duplicates(
        duplicates, queries, query_metadata, qrels, corpus, on_duplicate_query
    )
    return BeirDataset(
        corpus=corpus,
        queries=queries,
        query_metadata=query_metadata,
        qrels=qrels,
        name=name if name is not None else root.resolve().name,
        path=root,
        split=split,
        repaired=repaired,
    )


def _resolve_duplicates(
    duplicates: dict[str, list[tuple[int, str, dict[str, Any]]]],
    queries: dict[str, str],
    query_metadata: dict[str, dict[str, Any]],
    qrels: dict[str, dict[str, int]],
    corpus: Mapping[str, Mapping[str, Any]],
    mode: str,
) -> dict[str, str]:
    """Handle query ids written more than once in queries.jsonl; returns {qid: what was done}.

    Identical repeats are harmless. A reused id with *different* texts makes its qrels rows
    ambiguous (which question do they judge?). "drop" removes such a query from the split;
    "disambiguate" splits it into ``<id>#<n>`` (n-th occurrence) when every judged doc can be
    given to exactly one occurrence, by the doc's ``title`` equalling the occurrence's
    ``metadata.focus`` (case-insensitive; MedQuAD's layout), and drops it otherwise.
    """
    repaired: dict[str, str] = {}
    for qid, occurrences in duplicates.items():
        if len({text for _, text, _ in occurrences}) == 1:
            continue
        docs = qrels.pop(qid)
        queries.pop(qid, None)
        query_metadata.pop(qid, None)
        if mode == "disambiguate" and corpus:
            owner: dict[str, int] = {}
            for doc_id in docs:
                title = str((corpus.get(doc_id) or {}).get("title") or "").strip().lower()
                matches = [
                    n
                    for n, (_, _, meta) in enumerate(occurrences, start=1)
                    if title and str(meta.get("focus") or "").strip().lower() == title
                ]
                if len(matches) != 1:
                    break
                owner[doc_id] = matches[0]
            else:
                for doc_id, n in owner.items():
                    new_id = f"{qid}#{n}"
                    _, text, meta = occurrences[n - 1]
                    queries[new_id] = text
                    query_metadata[new_id] = meta
                    qrels.setdefault(new_id, {})[doc_id] = docs[doc_id]
                repaired[qid] = f"split into {len(set(owner.values()))} queries by focus/title"
                continue
        repaired[qid] = "dropped: id reused for different questions"
    return repaired


def _data_files(root: Path) -> list[Path]:
    files = [root / CORPUS_FILE, root / QUERIES_FILE]
    qrels_dir = root / QRELS_DIR
    if qrels_dir.is_dir():
        files.extend(qrels_dir.glob("*.tsv"))
    return sorted((p for p in files if p.is_file()), key=lambda p: p.relative_to(root).as_posix())


def fingerprint(path: str | os.PathLike[str]) -> str:
    """sha256 hex digest identifying the data a report was computed on.

    Covers ``corpus.jsonl``, ``queries.jsonl`` and every ``qrels/*.tsv`` (not READMEs), in
    sorted relative-path order; for each file the hash takes its relative POSIX path, a NUL,
    its size in bytes, a NUL, then its bytes, so renaming a split or moving bytes from one file
    to the next changes the digest. Streams the files.
    """
    root = Path(path)
    files = _data_files(root)
    if not files:
        raise FileNotFoundError(
            f"no dataset files ({CORPUS_FILE}, {QUERIES_FILE}, {QRELS_DIR}/*.tsv) in {root}"
        )
    digest = hashlib.sha256()
    for file in files:
        digest.update(file.relative_to(root).as_posix().encode("utf-8") + b"\0")
        digest.update(str(file.stat().st_size).encode("ascii") + b"\0")
        with file.open("rb") as handle:
            for block in iter(functools.partial(handle.read, 1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


__all__ = [
    "BeirDataset",
    "DatasetError",
    "available_splits",
    "fingerprint",
    "load_beir",
]
