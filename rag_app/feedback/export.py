"""Turn the chat's marks into labelled data: a summary, and a BEIR folder.

`rag-app feedback` prints `summarise`; `rag-app feedback export DIR` calls `export`, which
writes ``queries.jsonl``, ``qrels/train.tsv`` (grade 1 relevant, 0 not relevant) and
``export.json`` (what was used, remapped, dropped and why). `finetune.train_data` and
`rag-app eval retrieval DIR --split train` read that folder; its qrels name *chunk ids*
of the current workspace.

How marks become labels:
- a mark names its passage by chunk id and content hash. After a re-ingest, a mark whose
  chunk id is gone (or whose text changed) is matched to a current chunk with the same
  text by hash; otherwise it is dropped and counted (the passage changed or vanished);
- one voter (the login name, else the browser session) counts once per (question,
  passage): their latest mark wins, so changing one's mind is not a second vote;
- voters are then counted: more "relevant" than "not relevant" gives grade 1, the
  reverse grade 0, a tie is a conflict, dropped and counted;
- questions are grouped by their normalised text (case and whitespace), so the same
  question asked in two sessions is one query with the marks of both.

Answer thumbs (up / down) judge the generated answer, not a passage: they are summarised,
never turned into qrels.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rag_app.config import Settings
from rag_app.feedback import FEEDBACK_FILE, QUERY_LOG_FILE, JsonlLog, content_hash
from rag_app.fsutil import atomic_write_json, atomic_write_text

QRELS_SPLIT = "train"


def normalise_query(text: str) -> str:
    """The grouping key of a question: case-folded, whitespace collapsed."""
    return " ".join(text.split()).casefold()


def query_id(text: str) -> str:
    """A stable id for a question (same text -> same id across exports)."""
    return "fb-" + hashlib.sha256(normalise_query(text).encode("utf-8")).hexdigest()[:12]


def _voter(record: dict[str, Any]) -> str:
    return str(record.get("user") or f"session:{record.get('session') or '?'}")


def _retriever_key(record: dict[str, Any]) -> str:
    retriever = record.get("retriever") or {}
    return str(retriever.get("key") or "?")


def read_marks(settings: Settings, *, strict: bool = True) -> tuple[list[dict[str, Any]], Any]:
    """Every mark record of the workspace's feedback file, and the read result."""
    result = JsonlLog(settings.feedback_dir / FEEDBACK_FILE).read(strict=strict)
    marks = [r for r in result.records if r.get("type") == "mark"]
    return marks, result


def summarise(settings: Settings, *, strict: bool = True) -> dict[str, Any]:
    """Counts of marks by kind, retriever and user, agreement between voters, and the
    number of logged questions."""
    marks, result = read_marks(settings, strict=strict)
    by_mark = Counter(str(m.get("mark")) for m in marks)
    by_run: dict[str, Counter] = defaultdict(Counter)
    by_user: dict[str, Counter] = defaultdict(Counter)
    votes: dict[tuple[str, str], dict[str, str]] = defaultdict(dict)
    for m in marks:
        by_run[_retriever_key(m)][str(m.get("mark"))] += 1
        by_user[str(m.get("user") or "(no login)")][str(m.get("mark"))] += 1
        if m.get("target") == "source":
            chunk = m.get("chunk") or {}
            key = (normalise_query(str(m.get("query", ""))), str(chunk.get("content_hash")))
            votes[key][_voter(m)] = str(m.get("mark"))
    shared = [v for v in votes.values() if len(v) >= 2]
    agreed = sum(1 for v in shared if len(set(v.values())) == 1)
    queries = JsonlLog(settings.feedback_dir / QUERY_LOG_FILE).read(strict=strict)
    return {
        "feedback_file": str(settings.feedback_dir / FEEDBACK_FILE),
        "marks": len(marks),
        "by_mark": dict(by_mark),
        "by_retriever": {k: dict(v) for k, v in sorted(by_run.items())},
        "by_user": {k: dict(v) for k, v in sorted(by_user.items())},
        "questions_marked": len({normalise_query(str(m.get("query", ""))) for m in marks}),
        "passages_with_several_voters": len(shared),
        "agreement": (agreed / len(shared)) if shared else None,
        "queries_logged": len(queries.records),
        "torn_tail": result.torn_tail or queries.torn_tail,
        "skipped_lines": result.skipped + queries.skipped,
    }


@dataclass
class ExportReport:
    """What `export` wrote and what it left out, with reasons (also in export.json)."""

    path: str
    marks: int = 0  # source marks read
    used: int = 0  # marks behind a written label
    remapped: int = 0  # matched to a current chunk by content hash (id changed)
    dropped_stale: int = 0  # the passage changed or vanished since the mark
    superseded: int = 0  # a voter's earlier mark on the same (question, passage)
    conflicts: int = 0  # (question, passage) pairs with tied votes: no label
    queries: int = 0
    relevant: int = 0
    not_relevant: int = 0
    answer_marks: int = 0  # thumbs, summarised only
    skipped_lines: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return (
            f"exported {self.queries} questions ({self.relevant} relevant, "
            f"{self.not_relevant} not relevant) from {self.marks} source marks to {self.path}; "
            f"{self.remapped} matched by content after a re-ingest, {self.dropped_stale} "
            f"dropped (passage changed or gone), {self.conflicts} tied votes dropped, "
            f"{self.superseded} earlier marks superseded"
        )


def export(
    settings: Settings, out: Path, *, force: bool = False, strict: bool = True
) -> ExportReport:
    """Write the workspace's source marks as a BEIR folder at `out` (see module docstring).

    Raises FileExistsError when `out` exists (unless `force`), FileNotFoundError when there
    is no feedback file, ValueError when no mark names a passage of the current workspace.
    """
    from rag_app.chunkstore import load_chunks

    out = Path(out)
    if out.exists() and not force:
        raise FileExistsError(f"{out} exists; choose a new folder or pass --force to replace it")
    source = settings.feedback_dir / FEEDBACK_FILE
    if not source.is_file():
        raise FileNotFoundError(
            f"no feedback yet: {source} does not exist (mark sources in the chat)"
        )
    marks, result = read_marks(settings, strict=strict)
    report = ExportReport(path=str(out), skipped_lines=list(result.skipped))
    report.answer_marks = sum(1 for m in marks if m.get("target") == "answer")
    chunks = load_chunks(settings.chunks_path, settings.manifest_path)
    hash_of = {c.id: content_hash(c.text) for c in chunks}
    by_hash: dict[str, list[str]] = defaultdict(list)
    for c in chunks:
        by_hash[hash_of[c.id]].append(c.id)

    latest: dict[tuple[str, str, str], dict[str, Any]] = {}  # (query, chunk, voter) -> mark
    text_of: dict[str, str] = {}  # normalised query -> first wording seen
    for m in marks:
        if m.get("target") != "source":
            continue
        report.marks += 1
        chunk = m.get("chunk") or {}
        cid, digest = str(chunk.get("chunk_id", "")), str(chunk.get("content_hash", ""))
        if hash_of.get(cid) != digest:
            same = by_hash.get(digest, [])
            if not same:
                report.dropped_stale += 1
                continue
            cid = same[0]
            report.remapped += 1
        query = str(m.get("query", "")).strip()
        if not query:
            report.dropped_stale += 1
            continue
        key_q = normalise_query(query)
        text_of.setdefault(key_q, query)
        key = (key_q, cid, _voter(m))
        if key in latest:
            report.superseded += 1
        latest[key] = m  # file order is time order: the last one wins

    tally: dict[tuple[str, str], Counter] = defaultdict(Counter)
    for (key_q, cid, _), m in latest.items():
        tally[(key_q, cid)][str(m["mark"])] += 1
    qrels: dict[str, dict[str, int]] = defaultdict(dict)
    for (key_q, cid), count in tally.items():
        yes, no = count["relevant"], count["not_relevant"]
        if yes == no:
            report.conflicts += 1
            continue
        qrels[key_q][cid] = 1 if yes > no else 0
        report.used += yes + no
    if not qrels:
        raise ValueError(
            f"{source}: none of {report.marks} source marks names a passage of the current "
            f"workspace ({report.dropped_stale} stale, {report.conflicts} tied)"
        )
    report.queries = len(qrels)
    report.relevant = sum(1 for q in qrels.values() for g in q.values() if g > 0)
    report.not_relevant = sum(1 for q in qrels.values() for g in q.values() if g <= 0)

    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        atomic_write_text(
            staging / "queries.jsonl",
            "".join(
                json.dumps({"_id": query_id(text_of[q]), "text": text_of[q]}, ensure_ascii=False)
                + "\n"
                for q in sorted(qrels)
            ),
        )
        lines = ["query-id\tcorpus-id\tscore\n"]
        for q in sorted(qrels):
            lines += [
                f"{query_id(text_of[q])}\t{cid}\t{g}\n" for cid, g in sorted(qrels[q].items())
            ]
        atomic_write_text(staging / "qrels" / f"{QRELS_SPLIT}.tsv", "".join(lines))
        atomic_write_json(staging / "export.json", {**asdict(report), "source": str(source)})
        if out.exists():
            shutil.rmtree(out)
        staging.rename(out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return report
