"""`rag-app ingest`: a folder of documents -> checksummed chunks in the workspace.

Idempotent: a file whose bytes (and the chunking settings) did not change keeps its chunks
untouched; changed files replace only their own chunks; deleted files drop theirs.
"""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from rag_app import chunkstore
from rag_app.config import Settings
from rag_app.fsutil import sha256_bytes
from rag_app.ingest.chunker import chunk_document, embedder_tokenizer
from rag_app.ingest.readers import UnreadableFile, read_document
from rag_app.ingest.walk import folder_metadata, iter_scalar_items, walk_corpus
from rag_app.models import ModelNotFoundError, offline_env_for, resolve_embedder
from rag_app.types import Chunk

log = logging.getLogger(__name__)

# Bump when extraction or chunking changes in a way that alters chunk text.
READER_VERSION = 2  # 2: headings with "/" kept whole, huge sections split in blocks


@dataclass
class IngestReport:
    """What one ingest run did; printed by the CLI and returned to callers."""

    corpus: Path
    files: int = 0
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    removed: int = 0
    other_types: int = 0
    chunks: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def changed(self) -> bool:
        return bool(self.added or self.updated or self.removed)


def run(
    settings: Settings,
    corpus: Path | None = None,
    *,
    rebuild: bool = False,
    progress: bool = True,
) -> IngestReport:
    """Ingest `corpus` (default `settings.corpus`) into `settings.workspace`."""
    started = time.perf_counter()
    root = Path(corpus or settings.corpus)
    if not root.is_dir():
        raise FileNotFoundError(f"corpus folder not found: {root}")
    report = IngestReport(corpus=root)
    signature = _signature(settings)

    previous: dict[str, Any] | None = None
    old_chunks: dict[str, list[Chunk]] = {}
    if not rebuild:
        try:
            previous = chunkstore.load_manifest(settings.manifest_path)
            if previous is not None and previous.get("signature") == signature:
                for chunk in chunkstore.load_chunks(settings.chunks_path, settings.manifest_path):
                    old_chunks.setdefault(chunk.doc_id, []).append(chunk)
            else:
                previous = None
        except chunkstore.CorruptWorkspaceError as exc:
            log.warning("%s; rebuilding all chunks", exc)
            previous = None
    old_files: dict[str, Any] = (previous or {}).get("files", {})

    exts = {e.lower() for e in settings.ingest.extensions}
    found, problems, report.other_types = walk_corpus(
        root, exts, follow_outside=settings.ingest.follow_symlinks_outside
    )
    report.skipped.extend((p.doc_id, p.reason) for p in problems)
    tokenizer = None
    max_bytes = int(settings.ingest.max_file_mb * 2**20)

    files_meta: dict[str, Any] = {}
    all_chunks: list[Chunk] = []
    # in a log (stderr not a terminal) the bar still reports, every 10 s instead of 10 Hz
    interactive = sys.stderr.isatty()
    bar = tqdm(
        found,
        desc="ingest",
        unit="file",
        disable=not progress,
        mininterval=0.1 if interactive else 10.0,
        file=sys.stderr,
    )
    for item in bar:
        report.files += 1
        try:
            stat = item.path.stat()
            if stat.st_size > max_bytes:
                raise UnreadableFile(
                    f"too large ({stat.st_size / 2**20:.1f} MB > {settings.ingest.max_file_mb} MB; "
                    "raise ingest.max_file_mb to include it)"
                )
            old = old_files.get(item.doc_id)
            if (
                old is not None
                and old["size"] == stat.st_size
                and old["mtime_ns"] == stat.st_mtime_ns
                and item.doc_id in old_chunks
            ):
                files_meta[item.doc_id] = old
                all_chunks.extend(old_chunks[item.doc_id])
                report.unchanged += 1
                continue
            data = item.path.read_bytes()
            digest = sha256_bytes(data)
            if old is not None and old["sha256"] == digest and item.doc_id in old_chunks:
                files_meta[item.doc_id] = {**old, "mtime_ns": stat.st_mtime_ns}
                all_chunks.extend(old_chunks[item.doc_id])
                report.unchanged += 1
                continue
            doc = read_document(item.path, data, max_unpacked_bytes=max_bytes * 10)
            if tokenizer is None:
                tokenizer = _tokenizer(settings)
            base_meta = _base_metadata(root, item.path, item.doc_id, doc.metadata, stat)
            chunks = chunk_document(
                item.doc_id,
                doc,
                chunk_size=settings.ingest.chunk_size,
                chunk_overlap=settings.ingest.chunk_overlap,
                tokenizer=tokenizer,
                base_metadata=base_meta,
            )
            if not chunks:
                raise UnreadableFile("no text to index after extraction")
        except UnreadableFile as exc:
            report.skipped.append((item.doc_id, str(exc)))
            log.info("skipped %s: %s", item.doc_id, exc)
            continue
        except PermissionError:
            report.skipped.append((item.doc_id, "unreadable: permission denied"))
            log.info("skipped %s: permission denied", item.doc_id)
            continue
        except OSError as exc:
            reason = f"unreadable: {exc.strerror or exc}"
            report.skipped.append((item.doc_id, reason))
            log.info("skipped %s: %s", item.doc_id, reason)
            continue
        except ModelNotFoundError:  # not this file's fault: every file would fail
            raise
        except Exception as exc:  # a reader or parser bug on one file never stops the rest
            reason = f"could not be read ({type(exc).__name__}: {_first_line(exc)})"
            report.skipped.append((item.doc_id, reason))
            log.warning("skipped %s: %s", item.doc_id, reason)
            log.debug("while reading %s", item.doc_id, exc_info=True)
            continue
        files_meta[item.doc_id] = {
            "sha256": digest,
            "size": stat.st_size,
            "mtime_ns": stat.st_mtime_ns,
            "n_chunks": len(chunks),
        }
        all_chunks.extend(chunks)
        if old is None:
            report.added += 1
        else:
            report.updated += 1

    report.removed = len(set(old_files) - set(files_meta))
    report.chunks = len(all_chunks)
    skipped = dict(report.skipped)
    unchanged_skips = previous is not None and previous.get("skipped") == skipped
    if report.changed or previous is None or not unchanged_skips:
        if not all_chunks:
            raise ValueError(f"no readable documents in {root} ({len(report.skipped)} skipped)")
        manifest = {
            "corpus": str(root.resolve()),
            "signature": signature,
            "files": files_meta,
            "skipped": skipped,
        }
        chunkstore.save(settings.chunks_path, settings.manifest_path, all_chunks, manifest)
    from rag_app.access import save_policy

    save_policy(settings)  # the policy travels with the chunks it protects
    report.seconds = time.perf_counter() - started
    return report


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else "")[:200]


def _signature(settings: Settings) -> dict[str, Any]:
    return {
        "reader_version": READER_VERSION,
        "chunk_size": settings.ingest.chunk_size,
        "chunk_overlap": settings.ingest.chunk_overlap,
        "tokenizer": settings.models.embedder,
    }


def _tokenizer(settings: Settings):
    model = resolve_embedder(settings.models.embedder)
    offline_env_for(model)
    return embedder_tokenizer(model.location)


def _base_metadata(
    root: Path, path: Path, doc_id: str, front_matter: dict[str, Any], stat: Any
) -> dict[str, Any]:
    """Per-chunk metadata: source, document type, date and any author-written fields."""
    from datetime import UTC, datetime

    meta: dict[str, Any] = dict(iter_scalar_items(folder_metadata(root, path)))
    meta.update(iter_scalar_items(front_matter))
    meta["source"] = doc_id
    meta["format"] = path.suffix.lower().lstrip(".")
    if "doc_type" not in meta:
        parts = doc_id.split("/")
        meta["doc_type"] = parts[0] if len(parts) > 1 else "document"
    if "date" not in meta:
        for key in ("effective_date", "issued", "updated"):
            if key in meta:
                meta["date"] = str(meta[key])[:10]
                break
        else:
            meta["date"] = datetime.fromtimestamp(stat.st_mtime, tz=UTC).date().isoformat()
    return meta
