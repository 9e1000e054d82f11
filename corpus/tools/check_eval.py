"""Check the compiled evaluation set against the corpus.

- every qrels corpus-id is an existing ingestible file that ``corpus/.ragignore`` does not exclude;
- query ids are unique, and every query has qrels and every qrels row a query;
- counts: at least MIN_QUESTIONS questions, MIN_ANSWERS with a reference answer, MIN_HARD hard.

    .venv/bin/python corpus/tools/check_eval.py   # prints problems, exit 1 if any
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

import pathspec

CORPUS = Path(__file__).resolve().parents[1]
EVAL = CORPUS / "eval"
INGESTIBLE = {".md", ".txt", ".html", ".pdf", ".docx"}
MIN_QUESTIONS, MIN_ANSWERS, MIN_HARD = 80, 40, 25


def ignore_spec(corpus: Path = CORPUS) -> pathspec.PathSpec:
    path = corpus / ".ragignore"
    lines = path.read_text(encoding="utf-8").splitlines() if path.is_file() else []
    return pathspec.PathSpec.from_lines("gitignore", lines)


def is_ignored(rel: str, spec: pathspec.PathSpec) -> bool:
    """True if the file or any folder above it is excluded (as the ingest walk does)."""
    parts = rel.split("/")
    for i in range(1, len(parts)):
        if spec.match_file("/".join(parts[:i]) + "/"):
            return True
    return spec.match_file(rel)


def problems(
    corpus: Path = CORPUS,
    *,
    min_questions: int = MIN_QUESTIONS,
    min_answers: int = MIN_ANSWERS,
    min_hard: int = MIN_HARD,
) -> list[str]:
    out: list[str] = []
    eval_dir = corpus / "eval"
    queries_path = eval_dir / "queries.jsonl"
    qrels_path = eval_dir / "qrels" / "test.tsv"
    for p in (queries_path, qrels_path):
        if not p.is_file():
            return [f"missing {p.relative_to(corpus)}; run corpus/tools/build_eval.py"]
    queries = [json.loads(line) for line in queries_path.read_text("utf-8").splitlines() if line]
    ids = Counter(q["_id"] for q in queries)
    out += [f"duplicate query id {qid}" for qid, n in ids.items() if n > 1]
    lines = qrels_path.read_text("utf-8").splitlines()
    if not lines or lines[0].split("\t") != ["query-id", "corpus-id", "score"]:
        out.append("qrels/test.tsv: header must be query-id<TAB>corpus-id<TAB>score")
    spec = ignore_spec(corpus)
    judged: set[str] = set()
    seen_pairs: set[tuple[str, str]] = set()
    for n, line in enumerate(lines[1:], start=2):
        cols = line.split("\t")
        if len(cols) != 3:
            out.append(f"qrels line {n}: expected 3 columns")
            continue
        qid, doc, score = cols
        judged.add(qid)
        if (qid, doc) in seen_pairs:
            out.append(f"qrels line {n}: duplicate pair {qid} {doc}")
        seen_pairs.add((qid, doc))
        if qid not in ids:
            out.append(f"qrels line {n}: unknown query id {qid}")
        if not score.isdigit() or int(score) < 1:
            out.append(f"qrels line {n}: score must be a positive integer")
        target = corpus / doc
        if not target.is_file():
            out.append(f"qrels line {n}: {doc} does not exist")
        elif target.suffix.lower() not in INGESTIBLE:
            out.append(f"qrels line {n}: {doc} is not an ingestible format")
        elif is_ignored(doc, spec):
            out.append(f"qrels line {n}: {doc} is excluded by .ragignore")
    out += [f"query {qid} has no qrels" for qid in ids if qid not in judged]
    n_answers = sum(1 for q in queries if q.get("metadata", {}).get("answer"))
    n_hard = sum(1 for q in queries if q.get("metadata", {}).get("hard") is True)
    if len(ids) < min_questions:
        out.append(f"only {len(ids)} questions (need >= {min_questions})")
    if n_answers < min_answers:
        out.append(f"only {n_answers} questions with answers (need >= {min_answers})")
    if n_hard < min_hard:
        out.append(f"only {n_hard} hard questions (need >= {min_hard})")
    return out


def main() -> int:
    found = problems()
    for p in found:
        print(p)
    if not found:
        print("eval set OK")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
