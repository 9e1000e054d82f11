"""The protocol's corpora (bench_protocol.py): each its own workspace, questions split by
document into dev (to choose) and test (to report). See bench_protocol's docstring."""

from __future__ import annotations

import hashlib
import json
import random
import re
import shutil
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from _common import REPO

MEDQUAD = REPO.parent / "shared" / "datasets" / "medquad"
# corpora the query-class benches add to bench_protocol.CORPORA: no people's questions, so
# not the fine-tuning protocol's
CLASS_CORPORA = ("ruff-rules",)


@dataclass
class EvalCorpus:
    """A workspace's settings plus its judged questions, split into dev and test."""

    name: str
    settings: Any
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]  # qid -> {chunk id or doc id: grade}
    splits: dict[str, list[str]]
    granularity: str  # "chunk" or "doc"
    structure: str
    # document -> "dev" / "test": the half of every document with a question (the splits'
    # questions are these halves' questions, capped); a MedQuAD source's document is a title
    doc_split: dict[str, str] = field(default_factory=dict)
    # what the corpus's own questions are, as a query class ("natural": people's questions)
    question_class: str = "natural"
    code_pattern: str | None = None  # codes in titles, when not CODE_IN_TITLE's (bench)


def _document_halves(doc_of: dict[str, str], seed: int) -> dict[str, str]:
    """Every document of `doc_of`'s questions in dev or test, half and half (seeded)."""
    docs = sorted(set(doc_of.values()))
    random.Random(seed).shuffle(docs)
    dev_docs = set(docs[: len(docs) // 2])
    return {doc: "dev" if doc in dev_docs else "test" for doc in docs}


def _split_by_document(doc_of: dict[str, str], seed: int, cap: int) -> dict[str, list[str]]:
    """Questions split by their document, half and half (seeded), at most `cap` a split."""
    half = _document_halves(doc_of, seed)
    splits: dict[str, list[str]] = {"dev": [], "test": []}
    for qid in sorted(doc_of):
        splits[half[doc_of[qid]]].append(qid)
    rng = random.Random(seed + 1)
    for key, qids in splits.items():
        if len(qids) > cap:
            splits[key] = sorted(rng.sample(qids, cap))
    return splits


def _medquad_rows() -> tuple[list[dict], dict[str, dict], dict[str, dict[str, int]]]:
    """MedQuAD's passages, queries and qrels (every split), with reused query ids resolved.

    MedQuAD numbers questions per source, so 1,305 ids are written for two or more
    different questions (10,977 rows, 9,002 ids), and a qrels row names only the id. A
    judged passage belongs to the occurrence whose ``metadata.focus`` is the passage's
    title, as `rag_app.ir.beir.load_beir(on_duplicate_query="disambiguate")` resolves it;
    such occurrences become ``<id>#<n>``, and a pair no occurrence owns is dropped. (Before
    this, the last occurrence won: a CDC question was judged by NIDDK, NINDS and
    NIHSeniorHealth passages, half of NIDDK's judged questions named another focus.)
    """
    with (MEDQUAD / "corpus.jsonl").open(encoding="utf-8") as handle:
        passages = [json.loads(line) for line in handle if line.strip()]
    title = {p["_id"]: str(p.get("title") or "").strip().lower() for p in passages}
    rows: dict[str, list[dict]] = defaultdict(list)
    with (MEDQUAD / "queries.jsonl").open(encoding="utf-8") as handle:
        for row in map(json.loads, handle):
            if row and row not in rows[row["_id"]]:
                rows[row["_id"]].append(row)
    queries: dict[str, dict] = {}
    qrels: dict[str, dict[str, int]] = defaultdict(dict)
    for split in ("train", "dev", "test"):
        for line in (MEDQUAD / "qrels" / f"{split}.tsv").read_text().splitlines()[1:]:
            qid, pid, grade = line.split("\t")
            found = rows.get(qid) or []
            if len(found) == 1:
                key, row = qid, found[0]
            else:
                owners = [
                    n
                    for n, r in enumerate(found, start=1)
                    if str((r.get("metadata") or {}).get("focus") or "").strip().lower()
                    == title.get(pid)
                ]
                if len(owners) != 1:
                    continue
                key, row = f"{qid}#{owners[0]}", found[owners[0] - 1]
            queries[key] = {**row, "_id": key}
            qrels[key][pid] = int(grade)
    return passages, queries, qrels


def medquad_corpus(source: str, root: Path, base: Any, seed: int, cap: int) -> EvalCorpus:
    """One MedQuAD source as a one-passage-a-chunk workspace."""
    from eval.sets import ingest_beir_corpus
    from rag_app.ir.beir import fingerprint, load_beir

    passages, queries, qrels = _medquad_rows()
    keep = [p for p in passages if (p.get("metadata") or {}).get("source") == source]
    ids = {p["_id"] for p in keep}
    folder = root / "data" / source
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "docs").mkdir(exist_ok=True)  # settings.corpus: no eval/ there, so no guard
    title = {p["_id"]: p.get("title") or p["_id"] for p in keep}
    judged = {q: {p: g for p, g in rel.items() if p in ids} for q, rel in qrels.items()}
    judged = {q: rel for q, rel in judged.items() if rel}
    doc_of = {q: title[min(rel)] for q, rel in judged.items()}
    if not (folder / "corpus.jsonl").is_file():
        (folder / "corpus.jsonl").write_text("".join(json.dumps(p) + "\n" for p in keep))
    lines = ["query-id\tcorpus-id\tscore\n"]
    lines += [f"{q}\t{p}\t{g}\n" for q in sorted(judged) for p, g in judged[q].items()]
    (folder / "qrels").mkdir(exist_ok=True)
    for path, text in (
        (folder / "queries.jsonl", "".join(json.dumps(queries[q]) + "\n" for q in sorted(judged))),
        (folder / "qrels" / "test.tsv", "".join(lines)),
    ):  # rewritten when the judgements change (a folder written before the id fix)
        if not path.is_file() or path.read_text() != text:
            path.write_text(text)
    settings = base.model_copy(
        update={"workspace": root / "ws" / source, "corpus": folder / "docs"}
    )
    dataset = load_beir(folder, split="test", name=source, on_duplicate_query="disambiguate")
    ns = ingest_beir_corpus(settings, dataset, fingerprint(folder))
    return EvalCorpus(
        source,
        ns,
        {q: queries[q]["text"] for q in judged},
        judged,
        _split_by_document(doc_of, seed, cap),
        "chunk",
        f"{len(keep)} passages, one a chunk",
        _document_halves(doc_of, seed),
    )


def shipped_corpus(root: Path, base: Any, seed: int, cap: int) -> EvalCorpus:
    """This repository's corpus/, ingested by the product, judged per document."""
    from rag_app import ingest

    docs = root / "data" / "shipped" / "docs"
    if not docs.is_dir():  # a copy without eval/: the default guard must not see the test
        shutil.copytree(REPO / "corpus", docs, ignore=shutil.ignore_patterns("eval"))
    settings = base.model_copy(update={"workspace": root / "ws" / "shipped", "corpus": docs})
    ingest.run(settings, progress=False)
    queries = {
        str(r["_id"]): r["text"]
        for r in map(json.loads, (REPO / "corpus" / "eval" / "queries.jsonl").open())
    }
    qrels: dict[str, dict[str, int]] = defaultdict(dict)
    for line in (REPO / "corpus" / "eval" / "qrels" / "test.tsv").read_text().splitlines()[1:]:
        qid, doc, grade = line.split("\t")
        qrels[qid][doc] = int(grade)
    doc_of = {q: min(rel) for q, rel in qrels.items()}
    from rag_app.chunkstore import load_chunks

    chunks = load_chunks(settings.chunks_path, settings.manifest_path)
    return EvalCorpus(
        "shipped",
        settings,
        {q: queries[q] for q in qrels},
        dict(qrels),
        _split_by_document(doc_of, seed, cap),
        "doc",
        f"{len({c.doc_id for c in chunks})} documents, {len(chunks)} chunks",
        _document_halves(doc_of, seed),
    )


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:80] or "doc"


def long_corpus(source: str, root: Path, base: Any, seed: int, cap: int) -> EvalCorpus:
    """Each focus of a MedQuAD source as one Markdown document, chunked by the product."""
    from rag_app import ingest
    from rag_app.chunkstore import load_chunks

    name = f"{source}-long"
    passages, queries, qrels = _medquad_rows()
    text = {p["_id"]: p for p in passages if (p.get("metadata") or {}).get("source") == source}
    by_focus: dict[str, list[tuple[str, str, str]]] = defaultdict(list)  # qid, heading, pid
    for qid in sorted(qrels):
        pid = min((p for p in qrels[qid] if p in text), default=None)
        if pid is None:
            continue
        focus = queries[qid]["metadata"].get("focus") or text[pid].get("title") or pid
        by_focus[focus].append((qid, queries[qid]["metadata"].get("qtype") or "answer", pid))
    docs = root / "data" / name / "docs"
    heading_of: dict[str, tuple[str, str]] = {}  # qid -> (doc id, heading)
    docs.mkdir(parents=True, exist_ok=True)
    written: set[str] = set()
    for focus, items in sorted(by_focus.items()):
        doc_id = f"{_slug(focus)}-{hashlib.sha1(focus.encode()).hexdigest()[:6]}.md"
        lines = [f"# {focus}", ""]
        section_of: dict[str, str] = {}
        counts: dict[str, int] = defaultdict(int)
        for qid, qtype, pid in items:
            if pid not in section_of:
                counts[qtype] += 1
                heading = qtype.capitalize() + (f" ({counts[qtype]})" if counts[qtype] > 1 else "")
                section_of[pid] = heading
                lines += [f"## {heading}", "", text[pid]["text"].strip(), ""]
            heading_of[qid] = (doc_id, section_of[pid])
        path = docs / doc_id
        written.add(path.name)
        if not path.is_file() or path.read_text(encoding="utf-8") != "\n".join(lines):
            path.write_text("\n".join(lines), encoding="utf-8")
    for stale in docs.glob("*.md"):  # documents of an earlier build (before the id fix)
        if stale.name not in written:
            stale.unlink()
    settings = base.model_copy(update={"workspace": root / "ws" / name, "corpus": docs})
    ingest.run(settings, progress=False)
    chunks = load_chunks(settings.chunks_path, settings.manifest_path)
    by_section: dict[tuple[str, str], list[str]] = defaultdict(list)
    for chunk in chunks:
        own = chunk.heading_path.split(" > ")[-1] if chunk.heading_path else ""
        by_section[(chunk.doc_id, own)].append(chunk.id)
    judged = {
        qid: dict.fromkeys(by_section[key], 1)
        for qid, key in heading_of.items()
        if by_section.get(key)
    }
    lost = len(heading_of) - len(judged)
    if lost:
        print(f"[{name}] {lost} questions whose section has no chunk: left out")
    doc_of = {q: heading_of[q][0] for q in judged}
    return EvalCorpus(
        name,
        settings,
        {q: queries[q]["text"] for q in judged},
        judged,
        _split_by_document(doc_of, seed, cap),
        "chunk",
        f"{len(by_focus)} long documents, {len(chunks)} chunks",
        _document_halves(doc_of, seed),
    )


RULE_CODE = r"\b[A-Z]{1,4}[0-9]{3,4}\b"  # a ruff rule code: F401, PLR0913, FURB101


def ruff_rules_corpus(root: Path, base: Any, seed: int, cap: int) -> EvalCorpus:
    """An identifier-rich technical corpus reachable offline: the documentation of every
    rule of the installed ruff (`ruff rule --all`, MIT), one Markdown page a rule as on its
    website ("# unused-import (F401)", the linter, fix availability, the explanation),
    chunked by the product and judged per document. Its questions are each rule's message
    as a user pastes it from ruff's output (placeholders such as `{name}` filled with
    "x", without the code), class "pasted message"; the rule codes in the titles make the
    identifier class. There are no people's questions."""
    import subprocess
    import sys

    from rag_app import ingest
    from rag_app.chunkstore import load_chunks

    out = subprocess.run(
        [sys.executable, "-m", "ruff", "rule", "--all", "--output-format", "json"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    rules = sorted((r for r in json.loads(out) if r.get("code")), key=lambda r: r["code"])
    docs = root / "data" / "ruff-rules" / "docs"
    docs.mkdir(parents=True, exist_ok=True)
    queries: dict[str, str] = {}
    doc_of: dict[str, str] = {}
    written = set()
    for rule in rules:
        page = (
            f"# {rule['name']} ({rule['code']})\n\nDerived from the **{rule['linter']}** "
            f"linter. {rule['fix']}\n\n{rule['explanation'].strip()}\n"
        )
        path = docs / f"{rule['code']}.md"
        written.add(path.name)
        if not path.is_file() or path.read_text(encoding="utf-8") != page:
            path.write_text(page, encoding="utf-8")
        message = re.sub(r"\{[^}]*\}", "x", (rule["message_formats"] or [rule["summary"]])[0])
        qid = f"msg-{rule['code']}"
        queries[qid] = message
        doc_of[qid] = path.name
    for stale in docs.glob("*.md"):  # a rule an older ruff had
        if stale.name not in written:
            stale.unlink()
    settings = base.model_copy(update={"workspace": root / "ws" / "ruff-rules", "corpus": docs})
    ingest.run(settings, progress=False)
    chunks = load_chunks(settings.chunks_path, settings.manifest_path)
    return EvalCorpus(
        "ruff-rules",
        settings,
        queries,
        {q: {d: 1} for q, d in doc_of.items()},
        _split_by_document(doc_of, seed, cap),
        "doc",
        f"{len(rules)} rule pages of ruff {_ruff_version()}, {len(chunks)} chunks",
        _document_halves(doc_of, seed),
        question_class="pasted message",
        code_pattern=RULE_CODE,
    )


def _ruff_version() -> str:
    import subprocess
    import sys

    return subprocess.run(
        [sys.executable, "-m", "ruff", "--version"], capture_output=True, text=True
    ).stdout.split()[-1]


def load_corpus(name: str, root: Path, base: Any, seed: int, cap: int) -> EvalCorpus:
    if name == "ruff-rules":
        return ruff_rules_corpus(root, base, seed, cap)
    if name == "shipped":
        return shipped_corpus(root, base, seed, cap)
    if name.endswith("-long"):
        return long_corpus(name.removesuffix("-long"), root, base, seed, cap)
    return medquad_corpus(name, root, base, seed, cap)
