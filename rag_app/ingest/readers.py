"""Turn one file into text, or a clear reason why it cannot be read.

Every format is converted to Markdown-like text (headings as `#` lines) so one node
parser finds heading paths in all of them. Failures raise `UnreadableFile` with a reason a
user can act on; the caller skips the file and carries on with the rest.
"""

from __future__ import annotations

import codecs
import io
import logging
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

log = logging.getLogger(__name__)

MARKDOWN_EXT = {".md", ".markdown"}
TEXT_EXT = {".txt"}
HTML_EXT = {".html", ".htm"}
PDF_EXT = {".pdf"}
DOCX_EXT = {".docx"}


class UnreadableFile(Exception):
    """The file cannot be turned into text; `str(exc)` is the reason shown to the user."""


@dataclass
class ExtractedDoc:
    """A document's text plus what we learned about it while reading."""

    text: str
    title: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)
    # (char offset, page number) pairs for paged formats, so chunks can cite a page.
    page_starts: list[tuple[int, int]] = field(default_factory=list)


def read_document(path: Path, data: bytes, max_unpacked_bytes: int = 200 << 20) -> ExtractedDoc:
    """Dispatch on the extension; `data` is the file's bytes (read once by the caller).

    `max_unpacked_bytes` bounds what a compressed container (DOCX) may expand to, so a
    small zip bomb cannot exhaust memory.
    """
    if not data.strip():
        raise UnreadableFile("empty file")
    ext = path.suffix.lower()
    if ext in MARKDOWN_EXT:
        return _read_markdown(data)
    if ext in TEXT_EXT:
        text = decode_text(data, path.name)
        return ExtractedDoc(text=text, title=_first_line_title(text))
    if ext in HTML_EXT:
        return _read_html(data)
    if ext in PDF_EXT:
        return _read_pdf(data)
    if ext in DOCX_EXT:
        return _read_docx(data, max_unpacked_bytes)
    raise UnreadableFile(f"unsupported file type '{ext}'")


# --- text decoding ------------------------------------------------------------------------

_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)


def decode_text(data: bytes, name: str = "") -> str:
    """Decode bytes to str without silently mangling them.

    Order: a BOM, strict UTF-8, then charset-normalizer's best guess. Bytes that look
    binary (NUL bytes, or mostly control characters after decoding) are refused rather
    than indexed as garbage.
    """
    for bom, encoding in _BOMS:
        if data.startswith(bom):
            try:
                return _check_printable(data.decode(encoding))
            except UnicodeDecodeError as exc:
                raise UnreadableFile(f"invalid {encoding} text: {exc.reason}") from exc
    if b"\x00" in data[:8192]:
        raise UnreadableFile("binary content (NUL bytes), not text")
    try:
        return _check_printable(data.decode("utf-8"))
    except UnicodeDecodeError:
        pass
    from charset_normalizer import from_bytes

    matches = list(from_bytes(data))
    best = matches[0] if matches else None
    if best is None:
        raise UnreadableFile("unknown text encoding (not UTF-8, no confident guess)")
    # On short text the guesses tie (no language evidence): "crème" came out as cp1250's
    # "crčme". Windows-1252 (a superset of Latin-1's letters) is what such files nearly
    # always are, so a tie goes to it.
    western = next((m for m in matches if m.encoding == "cp1252"), None)
    if western is not None and western.chaos <= best.chaos and western.coherence >= best.coherence:
        best = western
    if best.coherence < 0.2:
        log.warning(
            "%s: not UTF-8; guessed %s without language evidence (%d bytes): check the text, "
            "or save the file as UTF-8",
            name or "a text file",
            best.encoding,
            len(data),
        )
    return _check_printable(str(best))


def _check_printable(text: str) -> str:
    sample = text[:20000]
    if not sample.strip():
        raise UnreadableFile("no text content (whitespace only)")
    controls = sum(1 for c in sample if ord(c) < 32 and c not in "\n\r\t\f")
    if controls > max(8, len(sample) // 100):
        raise UnreadableFile("binary content (control characters), not text")
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _first_line_title(text: str) -> str:
    for line in text.splitlines():
        line = line.strip().lstrip("#").strip()
        if line:
            return line[:200]
    return ""


# --- Markdown -----------------------------------------------------------------------------

_FRONT_MATTER = re.compile(r"\A---[ \t]*\n(.*?)\n---[ \t]*(?:\n|\Z)", re.DOTALL)


def _read_markdown(data: bytes) -> ExtractedDoc:
    text = decode_text(data)
    metadata: dict[str, Any] = {}
    match = _FRONT_MATTER.match(text)
    if match:
        try:
            loaded = yaml.safe_load(match.group(1))
        except yaml.YAMLError as exc:
            raise UnreadableFile(f"invalid YAML front matter: {exc}") from exc
        if isinstance(loaded, dict):
            metadata = {str(k): v for k, v in loaded.items()}
        text = text[match.end() :]
    if not text.strip():
        raise UnreadableFile("no text after the front matter")
    title = str(metadata.pop("title", "") or "") or _markdown_h1(text) or ""
    return ExtractedDoc(text=text, title=title, metadata=metadata)


def _markdown_h1(text: str) -> str:
    for line in text.splitlines():
        if line.startswith("# "):
            return line[2:].strip()
    return ""


# --- HTML ---------------------------------------------------------------------------------


def _read_html(data: bytes) -> ExtractedDoc:
    from bs4 import BeautifulSoup

    text = decode_text(data)
    soup = BeautifulSoup(text, "html.parser")
    for tag in soup(["script", "style", "nav", "noscript", "template", "svg"]):
        tag.decompose()
    title = soup.title.get_text(" ", strip=True) if soup.title else ""
    body = soup.body or soup
    lines: list[str] = []
    blocks = ["h1", "h2", "h3", "h4", "h5", "h6", "p", "li", "tr", "pre", "blockquote", "dt", "dd"]
    for element in body.find_all(blocks):
        if element.find_parent(["li", "tr", "pre", "blockquote", "p"]):
            continue  # already taken with its parent block
        if element.name == "tr":
            cells = [c.get_text(" ", strip=True) for c in element.find_all(["td", "th"])]
            line = " | ".join(c for c in cells if c)
        else:
            line = element.get_text(" ", strip=True)
        if not line:
            continue
        if element.name[0] == "h" and element.name[1:].isdigit():
            lines.append("#" * int(element.name[1]) + " " + line)
        elif element.name == "li":
            lines.append("- " + line)
        else:
            lines.append(line)
    if not lines:
        # Pages without block tags: fall back to all visible text.
        lines = [t for t in body.get_text("\n", strip=True).splitlines() if t]
    if not lines:
        raise UnreadableFile("HTML page has no visible text")
    return ExtractedDoc(text="\n\n".join(lines), title=title or _first_line_title(lines[0]))


# --- PDF ----------------------------------------------------------------------------------


def _read_pdf(data: bytes) -> ExtractedDoc:
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    try:
        reader = PdfReader(io.BytesIO(data), strict=False)
        if reader.is_encrypted:
            raise UnreadableFile("encrypted PDF")
        pages: list[str] = []
        for page in reader.pages:
            pages.append((page.extract_text() or "").strip())
        title = ""
        if reader.metadata and reader.metadata.title:
            title = str(reader.metadata.title)
    except UnreadableFile:
        raise
    except (PdfReadError, ValueError, KeyError, TypeError, OSError, IndexError) as exc:
        raise UnreadableFile(f"corrupt or truncated PDF: {exc}") from exc
    text_parts: list[str] = []
    page_starts: list[tuple[int, int]] = []
    offset = 0
    for number, page_text in enumerate(pages, start=1):
        if not page_text:
            continue
        page_starts.append((offset, number))
        text_parts.append(page_text)
        offset += len(page_text) + 2
    if not text_parts:
        raise UnreadableFile("PDF has no extractable text (scanned images need OCR first)")
    text = "\n\n".join(text_parts)
    return ExtractedDoc(text=text, title=title or _first_line_title(text), page_starts=page_starts)


# --- DOCX ---------------------------------------------------------------------------------

_HEADING_STYLE = re.compile(r"^(?:Heading|Überschrift|Titre)\s*(\d)$", re.IGNORECASE)


def _read_docx(data: bytes, max_unpacked_bytes: int) -> ExtractedDoc:
    import docx
    from docx.opc.exceptions import PackageNotFoundError

    if not zipfile.is_zipfile(io.BytesIO(data)):
        raise UnreadableFile("corrupt DOCX (not a zip archive)")
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            unpacked = sum(info.file_size for info in archive.infolist())
    except (zipfile.BadZipFile, OSError) as exc:
        raise UnreadableFile(f"corrupt DOCX: {exc}") from exc
    if unpacked > max_unpacked_bytes:
        raise UnreadableFile(
            f"DOCX expands to {unpacked / 2**20:.0f} MB, over the "
            f"{max_unpacked_bytes / 2**20:.0f} MB limit (zip bomb?)"
        )
    try:
        document = docx.Document(io.BytesIO(data))
    except (PackageNotFoundError, zipfile.BadZipFile, KeyError, ValueError) as exc:
        raise UnreadableFile(f"corrupt DOCX: {exc}") from exc
    lines: list[str] = []
    title = (document.core_properties.title or "").strip()
    for block in _docx_blocks(document):
        lines.append(block)
    if not lines:
        raise UnreadableFile("DOCX has no text")
    text = "\n\n".join(lines)
    return ExtractedDoc(text=text, title=title or _first_line_title(text))


def _docx_blocks(document: Any) -> list[str]:
    """Paragraphs and tables in document order, headings as Markdown `#` lines."""
    from docx.table import Table
    from docx.text.paragraph import Paragraph

    out: list[str] = []
    for item in document.iter_inner_content():
        if isinstance(item, Paragraph):
            text = item.text.strip()
            if not text:
                continue
            style = item.style.name if item.style is not None else ""
            if style == "Title":
                out.append("# " + text)
                continue
            match = _HEADING_STYLE.match(style)
            out.append("#" * int(match.group(1)) + " " + text if match else text)
        elif isinstance(item, Table):
            for row in item.rows:
                cells = [c.text.strip() for c in row.cells]
                line = " | ".join(c for c in cells if c)
                if line:
                    out.append(line)
    return out
