"""Compile the hand-written evaluation questions into the BEIR layout.

Reads every ``corpus/eval/src/*.yaml`` (lists of questions, see ``corpus/README.md``) and
writes ``corpus/eval/queries.jsonl`` and ``corpus/eval/qrels/test.tsv``. Corpus-ids are
document paths relative to ``corpus/``. Output order is deterministic (files by name,
questions in file order), so the committed files can be compared with a fresh build.

    .venv/bin/python corpus/tools/build_eval.py          # write
    .venv/bin/python corpus/tools/build_eval.py --check  # exit 1 if the committed files differ
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import yaml

CORPUS = Path(__file__).resolve().parents[1]
EVAL = CORPUS / "eval"
SRC = EVAL / "src"
QUERIES = EVAL / "queries.jsonl"
QRELS = EVAL / "qrels" / "test.tsv"
REQUIRED = ("id", "text", "hard", "kind", "relevant")
ALLOWED = set(REQUIRED) | {"answer"}


class EvalSourceError(ValueError):
    """A malformed question in a YAML source; the message names the file and question."""


def relevance(question: dict[str, Any], where: str) -> dict[str, int]:
    """``relevant`` as {path: grade}: a list means grade 1 for each path."""
    rel = question["relevant"]
    if isinstance(rel, list):
        grades = {str(p): 1 for p in rel}
        if len(grades) != len(rel):
            raise EvalSourceError(f"{where}: duplicate path in 'relevant'")
    elif isinstance(rel, dict):
        grades = {}
        for path, grade in rel.items():
            if not isinstance(grade, int) or isinstance(grade, bool) or grade not in (1, 2):
                raise EvalSourceError(f"{where}: grade for {path} must be 1 or 2")
            grades[str(path)] = grade
    else:
        raise EvalSourceError(f"{where}: 'relevant' must be a list or a mapping")
    if not grades:
        raise EvalSourceError(f"{where}: 'relevant' is empty")
    for path in grades:
        if path.startswith("/") or "\\" in path or ".." in path.split("/"):
            raise EvalSourceError(f"{where}: relevant path must be relative to corpus/: {path}")
    return grades


def load_questions(src: Path = SRC) -> list[dict[str, Any]]:
    """All questions from all source files, validated for shape (not for paths)."""
    out: list[dict[str, Any]] = []
    for path in sorted(src.glob("*.yaml")):
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or []
        if not isinstance(data, list):
            raise EvalSourceError(f"{path.name}: top level must be a list of questions")
        for i, q in enumerate(data):
            where = f"{path.name}[{i}]"
            if not isinstance(q, dict):
                raise EvalSourceError(f"{where}: a question must be a mapping")
            missing = [k for k in REQUIRED if k not in q]
            if missing:
                raise EvalSourceError(f"{where}: missing {missing}")
            unknown = set(q) - ALLOWED
            if unknown:
                raise EvalSourceError(f"{where}: unknown keys {sorted(unknown)}")
            if not isinstance(q["hard"], bool):
                raise EvalSourceError(f"{where}: 'hard' must be true or false")
            for key in ("id", "text", "kind"):
                if not isinstance(q[key], str) or not q[key].strip():
                    raise EvalSourceError(f"{where}: '{key}' must be a non-empty string")
            if "answer" in q and (not isinstance(q["answer"], str) or not q["answer"].strip()):
                raise EvalSourceError(f"{where}: 'answer' must be a non-empty string")
            item = dict(q)
            item["relevant"] = relevance(q, where)
            item["source"] = path.name
            out.append(item)
    return out


def render(questions: list[dict[str, Any]]) -> tuple[str, str]:
    """(queries.jsonl text, qrels/test.tsv text)."""
    lines = []
    rows = ["query-id\tcorpus-id\tscore"]
    for q in questions:
        meta: dict[str, Any] = {}
        if "answer" in q:
            meta["answer"] = q["answer"].strip()
        meta["hard"] = q["hard"]
        meta["kind"] = q["kind"].strip()
        record = {"_id": q["id"].strip(), "text": q["text"].strip(), "metadata": meta}
        lines.append(json.dumps(record, ensure_ascii=False))
        for path, grade in q["relevant"].items():
            rows.append(f"{q['id'].strip()}\t{path}\t{grade}")
    return "\n".join(lines) + "\n", "\n".join(rows) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare only, write nothing")
    args = parser.parse_args(argv)
    queries, qrels = render(load_questions())
    targets = ((QUERIES, queries), (QRELS, qrels))
    if args.check:
        stale = [p for p, text in targets if not p.is_file() or p.read_text("utf-8") != text]
        for p in stale:
            print(f"differs: {p.relative_to(CORPUS)}")
        return 1 if stale else 0
    for path, text in targets:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8", newline="\n")
    print(f"{queries.count(chr(10))} questions, {qrels.count(chr(10)) - 1} qrels")
    return 0


if __name__ == "__main__":
    sys.exit(main())
