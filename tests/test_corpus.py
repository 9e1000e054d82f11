"""The shipped corpus: size, front matter, reproducible generated files, eval set, bad inputs."""

from __future__ import annotations

import datetime as dt
import importlib.util
import json
import re
import sys
from functools import cache
from pathlib import Path

import pytest

from rag_app import chunkstore, ingest
from rag_app.ingest.readers import read_document
from rag_app.ingest.walk import walk_corpus

REPO = Path(__file__).resolve().parents[1]
CORPUS = REPO / "corpus"
FIXTURES = REPO / "tests" / "fixtures"
TOOLS = CORPUS / "tools"
INGESTIBLE = {".md", ".txt", ".html", ".pdf", ".docx"}
FRONT_MATTER_KEYS = {"title", "doc_type", "department", "effective_date", "access"}


def _load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses need the module registered
    spec.loader.exec_module(module)
    return module


@cache
def _tool(name: str):
    return _load(f"corpus_tools_{name}", TOOLS / f"{name}.py")


@cache
def _documents() -> dict[str, str]:
    """doc_id -> extracted text for every file the ingest walk would take."""
    found, problems, _ = walk_corpus(CORPUS, INGESTIBLE)
    assert problems == []
    return {f.doc_id: read_document(f.path, f.path.read_bytes()).text for f in found}


def test_ragignore_keeps_tooling_and_eval_out_of_the_index():
    docs = _documents()
    assert not any(d.startswith(("eval/", "tools/")) for d in docs)
    assert "README.md" not in docs and ".ragignore" not in docs
    spec = _tool("check_eval").ignore_spec()
    for rel in ("eval/queries.jsonl", "tools/sources/binary/cmp-61-05.md", "README.md"):
        assert _tool("check_eval").is_ignored(rel, spec), rel
    assert not _tool("check_eval").is_ignored("task_cards/tc-32-41-11.md", spec)


def test_corpus_is_big_enough():
    docs = _documents()
    words = sum(len(text.split()) for text in docs.values())
    formats = {Path(d).suffix for d in docs}
    assert formats >= INGESTIBLE, f"missing formats: {INGESTIBLE - formats}"
    assert sum(d.endswith(".pdf") for d in docs) >= 2
    assert len(docs) >= 60, f"only {len(docs)} documents"
    assert words >= 40_000, f"only {words} words"


def test_every_markdown_document_has_the_front_matter_keys():
    pattern = re.compile(r"\A---\n(.*?)\n---\n", re.DOTALL)
    import yaml

    for doc_id in _documents():
        if not doc_id.endswith(".md"):
            continue
        text = (CORPUS / doc_id).read_text(encoding="utf-8")
        match = pattern.match(text)
        assert match, f"{doc_id}: no front matter"
        meta = yaml.safe_load(match.group(1))
        assert set(meta) >= FRONT_MATTER_KEYS, f"{doc_id}: missing {FRONT_MATTER_KEYS - set(meta)}"
        assert meta["access"] in {"public", "internal", "restricted"}, doc_id
        assert isinstance(meta["effective_date"], dt.date), f"{doc_id}: date not YYYY-MM-DD"


def test_families_render_byte_identically():
    rendered = _tool("render_families").render_all()
    assert len(rendered) >= 20
    for rel, text in rendered.items():
        assert (CORPUS / rel).read_bytes() == text.encode("utf-8"), f"{rel} is stale"


def test_family_siblings_share_wording_but_differ_in_the_deciding_detail():
    rf = _tool("render_families")
    family = rf.render_family(rf.FAMILIES / "brake_accumulator.yaml")
    left = family["task_cards/tc-32-44-11-l.md"]
    right = family["task_cards/tc-32-44-11-r.md"]
    shared = set(left.split()) & set(right.split())
    assert len(shared) / len(set(left.split())) > 0.7
    assert "**100 bar**" in left and "**130 bar**" in right


def test_binary_documents_contain_their_source_text():
    bd = _tool("build_binary_docs")
    sources = bd.sources()
    assert {s.fmt for s in sources} == {"pdf", "docx"}
    assert sum(s.fmt == "pdf" for s in sources) >= 2
    for source in sources:
        path = CORPUS / source.output
        doc = read_document(path, path.read_bytes())
        assert doc.title == source.title
        flat = re.sub(r"\s+", "", doc.text)
        for line in bd.expected_text(source):
            assert re.sub(r"\s+", "", line) in flat, f"{source.output}: missing {line[:60]!r}"
        if source.fmt == "docx":  # headings survive as Heading styles
            headings = [b.text for b in source.blocks if b.kind in ("h1", "h2")]
            lines = doc.text.splitlines()
            for h in headings:
                assert any(ln.lstrip("#").strip() == h and ln.startswith("#") for ln in lines), h


def test_eval_set_compiles_to_the_committed_beir_files():
    be = _tool("build_eval")
    queries, qrels = be.render(be.load_questions())
    assert (be.QUERIES).read_text(encoding="utf-8") == queries
    assert (be.QRELS).read_text(encoding="utf-8") == qrels
    first = json.loads(queries.splitlines()[0])
    assert set(first) == {"_id", "text", "metadata"}
    assert {"hard", "kind"} <= set(first["metadata"])


def test_eval_set_passes_its_checks():
    assert _tool("check_eval").problems() == []


def test_eval_set_loads_with_the_harness():
    from rag_app.ir.beir import load_beir

    dataset = load_beir(CORPUS / "eval")
    assert len(dataset.queries) >= 80
    assert all(dataset.qrels[q] for q in dataset.queries)


def test_bad_fixture_files_are_skipped_with_reasons_and_latin1_is_read(settings_factory):
    maker = _tool_fixture()
    bad = FIXTURES / "bad"
    for name, data in maker.files().items():  # the committed files are the generator's output
        if name.endswith((".pdf", ".docx")):  # library-made bytes: only presence is checked
            assert (bad / name).is_file(), name
        else:
            assert (bad / name).read_bytes() == data, f"{name} differs from make_bad_files.py"
    settings = settings_factory(corpus=bad)
    report = ingest.run(settings, progress=False)
    reasons = dict(report.skipped)
    assert set(reasons) == set(maker.EXPECTED_REASONS)
    for name, word in maker.EXPECTED_REASONS.items():
        assert word in reasons[name], f"{name}: {reasons[name]!r}"
    chunks = chunkstore.load_chunks(settings.chunks_path, settings.manifest_path)
    assert {c.doc_id for c in chunks} == {"latin1-notice.txt"}
    text = " ".join(c.text for c in chunks)
    for marker in maker.LATIN1_MARKERS:
        assert marker in text


@cache
def _tool_fixture():
    return _load("make_bad_files", FIXTURES / "make_bad_files.py")


# build_binary_docs is compared by extracted text above: its bytes depend on library versions.
@pytest.mark.parametrize("script", ["render_families", "build_eval"])
def test_generators_report_clean_in_check_mode(script, capsys):
    assert _tool(script).main(["--check"]) == 0, capsys.readouterr().out
