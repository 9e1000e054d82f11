"""Ingestion of every format, the bad-input cases, and idempotent re-ingest."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from rag_app import chunkstore, ingest


def _write_pdf(path: Path, paragraphs: list[str]) -> None:
    from fpdf import FPDF

    pdf = FPDF()
    pdf.set_title("Hydraulic Pump Overhaul")
    pdf.add_page()
    pdf.set_font("Helvetica", size=11)
    for para in paragraphs:
        pdf.multi_cell(0, 6, para)
        pdf.ln(2)
    pdf.output(str(path))


def _write_docx(path: Path) -> None:
    import docx

    document = docx.Document()
    document.add_heading("Stores Receiving", level=1)
    document.add_paragraph("Incoming rotables are quarantined in bay Q3 until released.")
    document.add_heading("Shelf life", level=2)
    document.add_paragraph("Sealant kits expire after eighteen months at room temperature.")
    document.save(str(path))


@pytest.fixture
def corpus(tmp_path) -> Path:
    root = tmp_path / "corpus"
    (root / "manuals").mkdir(parents=True)
    (root / "notes").mkdir()
    (root / "manuals" / "torque.md").write_text(
        "---\ntitle: Propeller Torque\ndepartment: powerplant\naccess: engineering\n"
        "effective_date: 2024-05-01\n---\n# Propeller\n\nIntro to the hub.\n\n"
        "## Bolts\n\nTorque the blade retention bolts to 45 Nm in a star pattern.\n",
        encoding="utf-8",
    )
    (root / "notes" / "cafe.txt").write_bytes(
        "Le café du hangar ouvre à six heures. Ingénieur de garde: poste 4412.\n".encode("latin-1")
    )
    (root / "notes" / "wide.txt").write_text("Borescope port plugs are torqued by hand.", "utf-16")
    (root / "notes" / "page.html").write_text(
        "<html><head><title>Tool Control</title><script>var x=1;</script></head><body>"
        "<h1>Tool Control</h1><p>Shadow boards are checked at shift handover.</p>"
        "<h2>Lost tools</h2><ul><li>Stop work and report to the duty manager.</li></ul>"
        "<table><tr><td>Tool</td><td>Box 12</td></tr></table></body></html>",
        encoding="utf-8",
    )
    _write_pdf(
        root / "manuals" / "pump.pdf", ["Pump overhaul needs seal kit PK-7781.", "Page text."]
    )
    _write_docx(root / "manuals" / "stores.docx")
    (root / "manuals" / "metadata.toml").write_text('owner = "tech-library"\n')
    (root / ".ragignore").write_text("drafts/\n*.tmp.md\n")
    (root / "drafts").mkdir()
    (root / "drafts" / "wip.md").write_text("# Draft\n\nnot for the index\n")
    (root / "notes" / "scratch.tmp.md").write_text("# Scratch\n\nignored\n")
    (root / "notes" / "image.png").write_bytes(b"\x89PNG\r\n")
    return root


def _by_doc(chunks):
    out = {}
    for c in chunks:
        out.setdefault(c.doc_id, []).append(c)
    return out


def test_every_format_is_read_with_headings_offsets_and_metadata(settings_factory, corpus):
    s = settings_factory(corpus=corpus)
    report = ingest.run(s, progress=False)
    assert report.skipped == []
    assert report.other_types == 1
    chunks = chunkstore.load_chunks(s.chunks_path, s.manifest_path)
    docs = _by_doc(chunks)
    assert set(docs) == {
        "manuals/torque.md",
        "manuals/pump.pdf",
        "manuals/stores.docx",
        "notes/cafe.txt",
        "notes/wide.txt",
        "notes/page.html",
    }
    bolts = next(c for c in docs["manuals/torque.md"] if "45 Nm" in c.text)
    assert bolts.title == "Propeller Torque"
    assert bolts.heading_path == "Propeller > Bolts"
    assert bolts.metadata["department"] == "powerplant"
    assert bolts.metadata["access"] == "engineering"
    assert bolts.metadata["date"] == "2024-05-01"
    assert bolts.metadata["doc_type"] == "manuals"
    assert bolts.metadata["owner"] == "tech-library"  # from the folder's sidecar
    assert bolts.end_char - bolts.start_char == len(bolts.text)
    assert (
        "café" in docs["notes/cafe.txt"][0].text and "Ingénieur" in docs["notes/cafe.txt"][0].text
    )
    assert "Borescope" in docs["notes/wide.txt"][0].text
    html = " ".join(c.text for c in docs["notes/page.html"])
    assert "Shadow boards" in html and "var x" not in html and "Box 12" in html
    assert docs["notes/page.html"][0].title == "Tool Control"
    assert any(c.heading_path.endswith("Lost tools") for c in docs["notes/page.html"])
    pdf = docs["manuals/pump.pdf"][0]
    assert (
        "PK-7781" in pdf.text
        and pdf.metadata["page"] == 1
        and pdf.title == "Hydraulic Pump Overhaul"
    )
    docx_chunks = docs["manuals/stores.docx"]
    assert any(c.heading_path == "Stores Receiving > Shelf life" for c in docx_chunks)
    assert len({c.id for c in chunks}) == len(chunks)


def test_bad_files_are_skipped_with_reasons_and_the_rest_is_kept(settings_factory, corpus):
    bad = corpus / "bad"
    bad.mkdir()
    (bad / "empty.md").write_bytes(b"")
    (bad / "blank.txt").write_text("   \n\n\t ")
    rng = random.Random(0)
    (bad / "garbage.txt").write_bytes(bytes(rng.randrange(256) for _ in range(4000)) + b"\0")
    (bad / "fake.html").write_bytes(b"\x00\x01\x02binary\xff\xfe" * 50)
    pdf = (corpus / "manuals" / "pump.pdf").read_bytes()
    (bad / "truncated.pdf").write_bytes(pdf[: len(pdf) // 3])
    (bad / "corrupt.docx").write_bytes(b"PK\x03\x04" + b"garbage" * 100)
    (bad / "huge.txt").write_bytes(b"a" * (2 * 2**20))
    os.symlink(bad, bad / "loop")
    s = settings_factory(corpus=corpus, ingest={"max_file_mb": 1.0})
    report = ingest.run(s, progress=False)
    reasons = dict(report.skipped)
    assert reasons["bad/empty.md"] == "empty file"
    assert "whitespace" in reasons["bad/blank.txt"] or "empty" in reasons["bad/blank.txt"]
    assert "binary" in reasons["bad/garbage.txt"]
    assert "binary" in reasons["bad/fake.html"]
    assert "PDF" in reasons["bad/truncated.pdf"]
    assert "DOCX" in reasons["bad/corrupt.docx"]
    assert "too large" in reasons["bad/huge.txt"] and "max_file_mb" in reasons["bad/huge.txt"]
    assert "symlink loop" in reasons["bad/loop/"]
    docs = {c.doc_id for c in chunkstore.load_chunks(s.chunks_path, s.manifest_path)}
    assert len(docs) == 6  # every good file survived


def test_unreadable_file_is_skipped(settings_factory, corpus, monkeypatch):
    target = corpus / "notes" / "cafe.txt"
    if os.geteuid() != 0:
        target.chmod(0)
    else:  # root reads through permissions; make the read itself fail the same way
        original = Path.read_bytes

        def read_bytes(self):
            if self == target:
                raise PermissionError(13, "Permission denied")
            return original(self)

        monkeypatch.setattr(Path, "read_bytes", read_bytes)
    report = ingest.run(settings_factory(corpus=corpus), progress=False)
    assert dict(report.skipped)["notes/cafe.txt"] == "unreadable: permission denied"
    assert report.added == 5


def test_reingest_is_a_noop_and_changes_touch_only_their_chunks(settings_factory, corpus):
    s = settings_factory(corpus=corpus)
    first = ingest.run(s, progress=False)
    assert first.added == 6 and first.changed
    before = chunkstore.load_chunks(s.chunks_path, s.manifest_path)
    mtime = s.chunks_path.stat().st_mtime_ns
    again = ingest.run(s, progress=False)
    assert not again.changed and again.unchanged == 6
    assert s.chunks_path.stat().st_mtime_ns == mtime  # nothing rewritten
    # touch without changing content: still no change
    os.utime(corpus / "notes" / "page.html")
    assert not ingest.run(s, progress=False).changed
    # change one file, delete another
    (corpus / "manuals" / "torque.md").write_text("# Propeller\n\nNew torque: 50 Nm.\n")
    (corpus / "notes" / "wide.txt").unlink()
    third = ingest.run(s, progress=False)
    assert (third.updated, third.removed, third.unchanged) == (1, 1, 4)
    after = chunkstore.load_chunks(s.chunks_path, s.manifest_path)
    old = {c.id for c in before if c.doc_id not in {"manuals/torque.md", "notes/wide.txt"}}
    new = {c.id for c in after if c.doc_id not in {"manuals/torque.md"}}
    assert old == new
    assert any("50 Nm" in c.text for c in after)


def test_chunk_size_is_in_embedder_tokens_and_ids_are_stable(settings_factory, tmp_path):
    root = tmp_path / "c"
    root.mkdir()
    sentences = " ".join(
        f"Sentence number {i} about the nacelle latch rigging." for i in range(200)
    )
    (root / "long.md").write_text(f"# Long\n\n{sentences}\n")
    s = settings_factory(corpus=root, ingest={"chunk_size": 64, "chunk_overlap": 8})
    ingest.run(s, progress=False)
    chunks = chunkstore.load_chunks(s.chunks_path, s.manifest_path)
    from rag_app.ingest.chunker import embedder_tokenizer
    from rag_app.models import resolve_embedder

    tok = embedder_tokenizer(resolve_embedder("all-MiniLM-L6-v2").location)
    assert len(chunks) > 10
    assert max(len(tok(c.text)) for c in chunks) <= 64
    text = (root / "long.md").read_text()
    for c in chunks:
        assert text[c.start_char : c.end_char] == c.text
    s2 = settings_factory(
        corpus=root, workspace=tmp_path / "ws2", ingest={"chunk_size": 64, "chunk_overlap": 8}
    )
    ingest.run(s2, progress=False)
    assert [c.id for c in chunks] == [
        c.id for c in chunkstore.load_chunks(s2.chunks_path, s2.manifest_path)
    ]


def test_corrupt_chunk_file_is_detected_and_rebuilt(settings_factory, corpus):
    s = settings_factory(corpus=corpus)
    ingest.run(s, progress=False)
    data = s.chunks_path.read_bytes()
    s.chunks_path.write_bytes(data[: len(data) // 2])
    with pytest.raises(chunkstore.CorruptWorkspaceError, match="checksum"):
        chunkstore.load_chunks(s.chunks_path, s.manifest_path)
    report = ingest.run(s, progress=False)
    assert report.added == 6
    assert len(chunkstore.load_chunks(s.chunks_path, s.manifest_path)) == report.chunks


def test_missing_corpus_and_all_bad_are_clear_errors(settings_factory, tmp_path):
    with pytest.raises(FileNotFoundError, match="corpus folder not found"):
        ingest.run(settings_factory(corpus=tmp_path / "missing"), progress=False)
    empty = tmp_path / "only-bad"
    empty.mkdir()
    (empty / "e.md").write_bytes(b"")
    with pytest.raises(ValueError, match="no readable documents"):
        ingest.run(settings_factory(corpus=empty), progress=False)


def test_cli_ingest_prints_summary(corpus, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from rag_app.cli import app

    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["ingest", str(corpus), "-w", str(tmp_path / "ws")])
    assert result.exit_code == 0, result.output
    assert "6 files" in result.output and "6 added" in result.output
    again = CliRunner().invoke(app, ["ingest", str(corpus), "-w", str(tmp_path / "ws")])
    assert "nothing changed" in again.output
    bad = CliRunner().invoke(app, ["ingest", str(tmp_path / "nope"), "-w", str(tmp_path / "ws")])
    assert bad.exit_code == 1 and "corpus folder not found" in bad.output
