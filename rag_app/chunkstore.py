"""The workspace's chunk table: `chunks.jsonl` plus a manifest holding its checksum.

Every later stage (BM25, dense index, synth, eval) reads chunks from here, so a damaged
file must be detected, never half-read: the manifest stores the file's sha256 and
`load_chunks` refuses a mismatch with the command that rebuilds it.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from rag_app.errors import RagAppError
from rag_app.fsutil import atomic_write_json, atomic_writer
from rag_app.types import Chunk

MANIFEST_VERSION = 1


class CorruptWorkspaceError(RagAppError, RuntimeError):
    """A workspace file does not match its recorded checksum or cannot be parsed."""


class NotIngestedError(RagAppError, RuntimeError):
    """No chunks yet: the corpus has not been ingested into this workspace."""


def save(chunks_path: Path, manifest_path: Path, chunks: list[Chunk], manifest: dict) -> None:
    """Write chunks then the manifest (which names the chunks' checksum) atomically.

    Line by line, hashing as it goes: a million chunks never exist twice in memory as text.
    """
    digest = hashlib.sha256()
    with atomic_writer(chunks_path) as handle:
        for chunk in chunks:
            line = (json.dumps(chunk.to_json(), ensure_ascii=False) + "\n").encode("utf-8")
            digest.update(line)
            handle.write(line)
    manifest = dict(manifest)
    manifest["version"] = MANIFEST_VERSION
    manifest["chunks_sha256"] = digest.hexdigest()
    manifest["n_chunks"] = len(chunks)
    atomic_write_json(manifest_path, manifest)


def load_manifest(manifest_path: Path) -> dict[str, Any] | None:
    if not manifest_path.is_file():
        return None
    try:
        data = json.loads(manifest_path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise CorruptWorkspaceError(
            f"{manifest_path} is not valid JSON ({exc}); re-run `rag-app ingest`"
        ) from exc
    if not isinstance(data, dict) or data.get("version") != MANIFEST_VERSION:
        raise CorruptWorkspaceError(
            f"{manifest_path} has an unknown format; re-run `rag-app ingest`"
        )
    return data


def load_chunks(chunks_path: Path, manifest_path: Path) -> list[Chunk]:
    """All chunks, verified against the manifest's checksum."""
    manifest = load_manifest(manifest_path)
    if manifest is None or not chunks_path.is_file():
        raise NotIngestedError(
            f"no chunks in {chunks_path.parent}; run `rag-app ingest <corpus folder>` first"
        )
    # Parsed while hashing (one pass, no second copy of the file in memory); a line that
    # does not parse is reported only once the checksum says the file is the one written.
    digest = hashlib.sha256()
    chunks: list[Chunk] = []
    problem: CorruptWorkspaceError | None = None
    with chunks_path.open("rb") as handle:
        for number, line in enumerate(handle, start=1):
            digest.update(line)
            if problem is not None:
                continue
            try:
                chunks.append(Chunk.from_json(json.loads(line)))
            except (ValueError, TypeError) as exc:
                problem = CorruptWorkspaceError(f"{chunks_path}:{number}: {exc}")
    if digest.hexdigest() != manifest.get("chunks_sha256"):
        raise CorruptWorkspaceError(
            f"{chunks_path} does not match the checksum in {manifest_path.name} "
            "(truncated or edited); re-run `rag-app ingest --rebuild`"
        )
    if problem is not None:
        raise problem
    return chunks
