"""Build the corpus's PDF and DOCX documents from reviewable Markdown sources.

Sources live in ``corpus/tools/sources/binary/*.md``. Each has a small front matter block
(``output``, ``format`` = pdf | docx, ``title``, ``author``, ``subject``) and a body in a
Markdown subset: ``#``/``##``/``###`` headings, ``- `` bullets and plain paragraphs.

Output is deterministic: fixed creation/modification dates in the document metadata, and
for DOCX fixed timestamps on the zip entries, so rebuilding gives the same bytes.

    .venv/bin/python corpus/tools/build_binary_docs.py          # write the files
    .venv/bin/python corpus/tools/build_binary_docs.py --check  # exit 1 if any text differs
"""

from __future__ import annotations

import argparse
import io
import re
import sys
import zipfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import yaml

CORPUS = Path(__file__).resolve().parents[1]
SOURCES = CORPUS / "tools" / "sources" / "binary"
FIXED_DATE = datetime(2025, 2, 3, 9, 0, 0, tzinfo=UTC)
_FRONT = re.compile(r"\A---\n(.*?)\n---\n", re.DOTALL)


@dataclass
class Block:
    kind: str  # "h1" | "h2" | "h3" | "bullet" | "para"
    text: str


@dataclass
class Source:
    path: Path
    output: str
    fmt: str
    title: str
    author: str
    subject: str
    blocks: list[Block]


def parse_source(path: Path) -> Source:
    raw = path.read_text(encoding="utf-8")
    match = _FRONT.match(raw)
    if not match:
        raise ValueError(f"{path.name}: missing front matter")
    meta = yaml.safe_load(match.group(1))
    blocks: list[Block] = []
    para: list[str] = []

    def flush() -> None:
        if para:
            blocks.append(Block("para", " ".join(para)))
            para.clear()

    for line in raw[match.end() :].splitlines():
        stripped = line.strip()
        if not stripped:
            flush()
        elif stripped.startswith("#"):
            flush()
            level = len(stripped) - len(stripped.lstrip("#"))
            blocks.append(Block(f"h{min(level, 3)}", stripped[level:].strip()))
        elif stripped.startswith("- "):
            flush()
            blocks.append(Block("bullet", stripped[2:].strip()))
        else:
            para.append(stripped)
    flush()
    fmt = str(meta["format"])
    if fmt not in {"pdf", "docx"}:
        raise ValueError(f"{path.name}: unknown format {fmt}")
    return Source(
        path=path,
        output=str(meta["output"]),
        fmt=fmt,
        title=str(meta["title"]),
        author=str(meta.get("author", "")),
        subject=str(meta.get("subject", "")),
        blocks=blocks,
    )


def expected_text(source: Source) -> list[str]:
    """The text lines a reader should find in the built document (for the tests)."""
    return [b.text for b in source.blocks]


def build_pdf(source: Source) -> bytes:
    from fpdf import FPDF

    for block in source.blocks:
        block.text.encode("latin-1")  # core fonts: fail loudly rather than mangle
    pdf = FPDF(format="A4")
    pdf.set_creation_date(FIXED_DATE)
    pdf.set_title(source.title)
    pdf.set_author(source.author)
    pdf.set_subject(source.subject)
    pdf.set_creator("corpus/tools/build_binary_docs.py")
    pdf.set_producer("fpdf2")
    pdf.set_auto_page_break(auto=True, margin=18)
    pdf.set_margins(20, 18, 20)
    pdf.add_page()
    sizes = {"h1": 15, "h2": 12.5, "h3": 11}
    for block in source.blocks:
        if block.kind in sizes:
            pdf.ln(3)
            pdf.set_font("Helvetica", style="B", size=sizes[block.kind])
            pdf.multi_cell(0, 7, block.text, new_x="LMARGIN", new_y="NEXT")
            pdf.ln(1)
        elif block.kind == "bullet":
            pdf.set_font("Helvetica", size=10.5)
            pdf.set_x(26)
            pdf.multi_cell(0, 5.5, "- " + block.text, new_x="LMARGIN", new_y="NEXT")
            pdf.ln(0.5)
        else:
            pdf.set_font("Helvetica", size=10.5)
            pdf.multi_cell(0, 5.5, block.text, new_x="LMARGIN", new_y="NEXT")
            pdf.ln(2)
    return bytes(pdf.output())


def build_docx(source: Source) -> bytes:
    import docx

    document = docx.Document()
    props = document.core_properties
    props.title = source.title
    props.author = source.author
    props.subject = source.subject
    props.last_modified_by = source.author
    props.revision = 1
    props.created = FIXED_DATE.replace(tzinfo=None)
    props.modified = FIXED_DATE.replace(tzinfo=None)
    props.last_printed = FIXED_DATE.replace(tzinfo=None)
    for block in source.blocks:
        if block.kind.startswith("h"):
            document.add_heading(block.text, level=int(block.kind[1]))
        elif block.kind == "bullet":
            document.add_paragraph(block.text, style="List Bullet")
        else:
            document.add_paragraph(block.text)
    buffer = io.BytesIO()
    document.save(buffer)
    return _fixed_zip(buffer.getvalue())


def _fixed_zip(data: bytes) -> bytes:
    """Rewrite a zip with fixed entry timestamps so the bytes do not depend on the clock."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as src, zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            fixed = zipfile.ZipInfo(info.filename, date_time=(2025, 2, 3, 9, 0, 0))
            fixed.compress_type = zipfile.ZIP_DEFLATED
            fixed.external_attr = 0o644 << 16
            dst.writestr(fixed, src.read(info.filename))
    return out.getvalue()


def sources() -> list[Source]:
    return [parse_source(p) for p in sorted(SOURCES.glob("*.md"))]


def build(source: Source) -> bytes:
    return build_pdf(source) if source.fmt == "pdf" else build_docx(source)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare bytes only, write nothing")
    args = parser.parse_args(argv)
    stale = []
    for source in sources():
        data = build(source)
        target = CORPUS / source.output
        if target.is_file() and target.read_bytes() == data:
            continue
        stale.append(source.output)
        if not args.check:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
    for rel in stale:
        print(("differs: " if args.check else "written: ") + rel)
    return 1 if (args.check and stale) else 0


if __name__ == "__main__":
    sys.exit(main())
