"""Split extracted text into token-sized chunks that remember where they came from.

LlamaIndex's MarkdownNodeParser cuts at headings (and gives the parent heading path);
its SentenceSplitter then packs sentences into chunks of at most `chunk_size` tokens of
the *embedder's* tokenizer, so a chunk never silently overflows the model's window.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from functools import lru_cache
from typing import Any

from rag_app.ingest.readers import ExtractedDoc
from rag_app.types import Chunk

Tokenizer = Callable[[str], list]


@lru_cache(maxsize=4)
def embedder_tokenizer(model_location: str) -> Tokenizer:
    """The embedder's own word-piece tokenizer as a `str -> list` callable."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_location)

    def encode(text: str) -> list:
        return tok.encode(text, add_special_tokens=False, verbose=False)

    return encode


def chunk_document(
    doc_id: str,
    doc: ExtractedDoc,
    *,
    chunk_size: int,
    chunk_overlap: int,
    tokenizer: Tokenizer | None,
    base_metadata: dict[str, Any],
) -> list[Chunk]:
    """Chunks of one document, with heading path, character offsets and a content-hash id."""
    from llama_index.core import Document
    from llama_index.core.node_parser import MarkdownNodeParser, SentenceSplitter

    splitter = SentenceSplitter(
        chunk_size=chunk_size, chunk_overlap=chunk_overlap, tokenizer=tokenizer
    )
    sections = MarkdownNodeParser(header_path_separator=HEADER_SEPARATOR).get_nodes_from_documents(
        [Document(text=doc.text)]
    )
    chunks: list[Chunk] = []
    seen: dict[str, int] = {}
    cursor = 0
    for section in sections:
        section_text = section.get_content()
        # bounded searches: an unbounded find that misses (the parser or splitter
        # normalised whitespace) rescans the rest of the document, which made ingest
        # quadratic in a file's size
        section_start = doc.text.find(section_text, cursor, _window(cursor, section_text))
        if section_start < 0:
            section_start = getattr(section, "start_char_idx", None) or cursor
        heading_path = _heading_path(section.metadata.get("header_path", ""), section_text)
        piece_cursor = section_start
        for piece in _split(splitter, section_text):
            if not piece.strip():
                continue
            start = doc.text.find(piece, piece_cursor, _window(piece_cursor, piece))
            if start < 0:  # the splitter normalised whitespace: fall back to the section
                start = section_start
                end = section_start + len(section_text)
            else:
                end = start + len(piece)
                piece_cursor = start + 1
            chunk_id = _chunk_id(doc_id, piece, seen)
            metadata = dict(base_metadata)
            page = _page_at(doc.page_starts, start)
            if page is not None:
                metadata["page"] = page
            chunks.append(
                Chunk(
                    id=chunk_id,
                    doc_id=doc_id,
                    text=piece,
                    title=doc.title,
                    heading_path=heading_path,
                    start_char=start,
                    end_char=end,
                    metadata=metadata,
                )
            )
        cursor = section_start + 1
    return chunks


BLOCK_CHARS = 50_000


def _split(splitter: Any, text: str) -> Iterator[str]:
    """The splitter's pieces of `text`, fed in paragraph-aligned blocks of at most about
    `BLOCK_CHARS`: its sentence tokenizer's regex runs over the whole input at once, and on
    a 20 MB section without headings it hit its 5 s limit and the file was skipped."""
    if len(text) <= BLOCK_CHARS:
        yield from splitter.split_text(text)
        return
    start = 0
    while start < len(text):
        end = min(len(text), start + BLOCK_CHARS)
        if end < len(text):
            cut = text.rfind("\n\n", start + BLOCK_CHARS // 2, end)
            if cut < 0:
                cut = text.rfind(". ", start + BLOCK_CHARS // 2, end)
            end = cut + 1 if cut >= 0 else end
        yield from splitter.split_text(text[start:end])
        start = end


def _window(cursor: int, text: str) -> int:
    """Where a search for `text` from `cursor` may end: chunks and sections follow each
    other in order, so the next one starts within about one length of the last."""
    return cursor + 2 * len(text) + 4096


# The parser joins parent headings with this; its default "/" split headings such as
# "QAD Instruction QI-07/2" in two.
HEADER_SEPARATOR = "\x1f"


def _heading_path(parent_path: str, section_text: str) -> str:
    """The parser's parent headings plus this section's own heading -> 'A > B > C'."""
    parts = [p for p in parent_path.split(HEADER_SEPARATOR) if p]
    first = section_text.lstrip().split("\n", 1)[0]
    if first.startswith("#"):
        own = first.lstrip("#").strip()
        if own:
            parts.append(own)
    return " > ".join(parts)


def _chunk_id(doc_id: str, text: str, seen: dict[str, int]) -> str:
    """Content hash, stable across runs; repeated identical text in one doc gets a suffix."""
    digest = hashlib.sha256(f"{doc_id}\0{text}".encode()).hexdigest()[:16]
    count = seen.get(digest, 0)
    seen[digest] = count + 1
    return digest if count == 0 else f"{digest}-{count + 1}"


def _page_at(page_starts: list[tuple[int, int]], offset: int) -> int | None:
    page = None
    for start, number in page_starts:
        if start <= offset:
            page = number
        else:
            break
    return page
