"""Training pairs, their train / validation split, and imports of real labelled pairs.

A `Pair` is (query, passage id); the passage texts live in a `Passages` table (the
workspace's chunks, plus any imported corpus). The split is by *group*, never by pair:
by document (default) or by chunk, so no chunk's queries, and with "document" no sibling
chunk of the same document, sits on both sides. Otherwise validation would reward
memorising near-duplicate passages.

Real labelled pairs can replace or join the synthetic ones:

- a BEIR-layout folder (``queries.jsonl``, ``qrels/<split>.tsv``, optional
  ``corpus.jsonl``): corpus ids may be chunk ids, ids of the folder's own
  ``corpus.jsonl`` (those passages are added to the table), or document paths (the
  shipped ``corpus/eval`` style), which map to the document's best BM25 chunk;
- a CSV with header ``query,passage_id`` (same id rules, no corpus file).

Example:
    >>> train, val = split_pairs(pairs, val_fraction=0.2, by="document", seed=42)
"""

from __future__ import annotations

import csv
import json
import random
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Literal

from rag_app.store.bm25 import BM25Index
from rag_app.types import Chunk


class Origin(StrEnum):
    """Where a training query came from; written as its value in the synth and pair files.

    Every decision that depends on a query's origin (which filters apply, which recipe
    keeps it, how much a real pair weighs) asks `kind`, never the string.
    """

    LLM_QUESTION = "llm:question"
    LLM_KEYWORD = "llm:keyword"
    HEADING = "structure:heading"
    TERMS = "structure:terms"
    LABELLED = "labelled"

    @classmethod
    def llm(cls, style: str) -> Origin:
        """The origin of an LLM reply written in `style` ("keyword" or "question")."""
        return cls.LLM_KEYWORD if style == "keyword" else cls.LLM_QUESTION

    @property
    def kind(self) -> Literal["llm", "structural", "real"]:
        return kind_of(self)


def kind_of(source: str) -> Literal["llm", "structural", "real"]:
    """ "llm" (the generator's queries), "real" (labelled questions) or "structural" (titles,
    headings, terms: anything else, as older files may name it)."""
    if source.startswith("llm:"):
        return "llm"
    return "real" if source == Origin.LABELLED else "structural"


@dataclass(frozen=True)
class Pair:
    """A query and the id of the passage that answers it."""

    query: str
    passage_id: str
    doc_id: str  # the split group for "document"; the passage id when unknown
    source: str = "synthetic"  # an `Origin` value (plain strings from older files)

    @property
    def kind(self) -> Literal["llm", "structural", "real"]:
        return kind_of(self.source)


class Passages:
    """Passage texts by id, with the document each belongs to."""

    def __init__(self) -> None:
        self.text: dict[str, str] = {}
        self.doc: dict[str, str] = {}

    @classmethod
    def from_chunks(cls, chunks: Sequence[Chunk]) -> Passages:
        table = cls()
        for chunk in chunks:
            table.add(chunk.id, chunk.embedding_text(), chunk.doc_id)
        return table

    def add(self, pid: str, text: str, doc_id: str | None = None) -> None:
        self.text[pid] = text
        self.doc[pid] = doc_id or pid

    def __len__(self) -> int:
        return len(self.text)

    def __contains__(self, pid: object) -> bool:
        return pid in self.text

    def ids(self) -> list[str]:
        return list(self.text)


def split_pairs(
    pairs: Sequence[Pair], *, val_fraction: float, by: str = "document", seed: int = 42
) -> tuple[list[Pair], list[Pair]]:
    """Seeded split with whole groups (documents or chunks) on one side only.

    Groups are shuffled and moved to validation until it holds about `val_fraction` of
    the pairs; with two or more groups both sides get at least one.
    """
    if by not in ("document", "chunk"):
        raise ValueError(f"split_by must be 'document' or 'chunk', not {by!r}")
    groups: dict[str, list[Pair]] = defaultdict(list)
    for pair in pairs:
        groups[pair.doc_id if by == "document" else pair.passage_id].append(pair)
    # With "document", a passage shared by two groups would leak; pairs keep their doc.
    names = sorted(groups)
    random.Random(seed).shuffle(names)
    target = val_fraction * len(pairs)
    val_names: set[str] = set()
    count = 0
    for name in names:
        if count >= target or len(val_names) >= len(names) - 1:
            break
        val_names.add(name)
        count += len(groups[name])
    train = [p for p in pairs if _group(p, by) not in val_names]
    val = [p for p in pairs if _group(p, by) in val_names]
    return train, val


def split_real(
    pairs: Sequence[Pair], *, guard_fraction: float, seed: int
) -> tuple[list[Pair], list[Pair]]:
    """Real labelled pairs as (training side, guard): whole documents, seeded. The one
    definition `finetune.data.prepare` (the guard) and `finetune.synth` (few-shot
    examples, training side only) share, so a guard question never reaches a prompt."""
    if not pairs or guard_fraction <= 0 or len({p.doc_id for p in pairs}) < 2:
        return list(pairs), []
    train, guard = split_pairs(pairs, val_fraction=guard_fraction, by="document", seed=seed)
    check_no_leak(train, guard, "document")
    return train, guard


def _group(pair: Pair, by: str) -> str:
    return pair.doc_id if by == "document" else pair.passage_id


def check_no_leak(train: Sequence[Pair], val: Sequence[Pair], by: str = "document") -> None:
    """Raise ValueError when a chunk (or a document, with by="document") is on both sides."""
    for key in ("passage_id", "doc_id") if by == "document" else ("passage_id",):
        both = {getattr(p, key) for p in train} & {getattr(p, key) for p in val}
        if both:
            raise ValueError(f"{len(both)} {key}s in both train and validation: {sorted(both)[:3]}")


# --- real labelled pairs ------------------------------------------------------------------
def load_labelled(
    path: Path, passages: Passages, chunks: Sequence[Chunk], *, split: str = "train"
) -> list[Pair]:
    """Pairs from a BEIR folder or a CSV (see the module docstring); passages are added."""
    path = Path(path)
    if path.is_dir():
        return _load_beir(path, passages, chunks, split)
    if path.suffix.lower() in (".csv", ".tsv"):
        return _load_csv(path, passages, chunks)
    raise ValueError(f"{path}: expected a BEIR folder or a .csv of query,passage_id")


def _resolver(passages: Passages, chunks: Sequence[Chunk]):
    by_doc: dict[str, list[Chunk]] = defaultdict(list)
    for chunk in chunks:
        by_doc[chunk.doc_id].append(chunk)
    cache: dict[str, BM25Index] = {}

    def resolve(query: str, cid: str) -> tuple[str, str] | None:
        if cid in passages:
            return cid, passages.doc[cid]
        if cid in by_doc:  # a document id: the chunk of that document BM25 likes best
            index = cache.get(cid)
            if index is None:
                index = cache[cid] = BM25Index.build(by_doc[cid])
            scores = index.scores(query)
            best = max(range(len(scores)), key=lambda i: (scores[i], -i))
            return index.ids[best], cid
        return None

    return resolve


def _load_beir(path: Path, passages: Passages, chunks: Sequence[Chunk], split: str) -> list[Pair]:
    """Pairs of one qrels split, read as the eval reads it (`rag_app.ir.beir.load_beir`,
    reused query ids disambiguated), so training, guard and eval agree on every question."""
    from rag_app.ir.beir import load_beir

    try:
        dataset = load_beir(path, split=split, on_duplicate_query="disambiguate")
    except FileNotFoundError as exc:
        raise FileNotFoundError(f"{exc} (finetune.train_data_split={split!r})") from exc
    for doc_id, row in dataset.corpus.items():
        if doc_id in passages:  # already a workspace chunk: keep it
            continue
        title = row.get("title") or ""
        passages.add(doc_id, f"{title}\n{row['text']}" if title else row["text"], doc_id)
    resolve = _resolver(passages, chunks)
    qrels_file = path / "qrels" / f"{split}.tsv"
    pairs = []
    for qid, judged in dataset.qrels.items():
        for cid, grade in judged.items():
            if grade <= 0:
                continue
            found = resolve(dataset.queries[qid], cid)
            if found is None:
                raise ValueError(f"{qrels_file}: unknown corpus id {cid!r} (query {qid!r})")
            pairs.append(Pair(dataset.queries[qid], found[0], found[1], Origin.LABELLED))
    return pairs


def _load_csv(path: Path, passages: Passages, chunks: Sequence[Chunk]) -> list[Pair]:
    resolve = _resolver(passages, chunks)
    pairs = []
    with path.open(encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle, delimiter="\t" if path.suffix == ".tsv" else ",")
        if not reader.fieldnames or not {"query", "passage_id"} <= set(reader.fieldnames):
            raise ValueError(f"{path}: needs a header with columns query,passage_id")
        for number, row in enumerate(reader, start=2):
            found = resolve(row["query"], row["passage_id"])
            if found is None:
                raise ValueError(f"{path}:{number}: unknown passage id {row['passage_id']!r}")
            pairs.append(Pair(row["query"], found[0], found[1], Origin.LABELLED))
    return pairs


def load_general_pairs(path: Path) -> list[tuple[str, str]]:
    """(query, passage text) pairs from a CSV (query,passage) or JSONL ({query, passage})."""
    path = Path(path)
    out = []
    if path.suffix.lower() == ".jsonl":
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                row = json.loads(line)
                out.append((row["query"], row["passage"]))
    else:
        with path.open(encoding="utf-8", newline="") as handle:
            reader = csv.DictReader(handle)
            if not reader.fieldnames or not {"query", "passage"} <= set(reader.fieldnames):
                raise ValueError(f"{path}: needs a header with columns query,passage")
            out = [(r["query"], r["passage"]) for r in reader]
    return out
