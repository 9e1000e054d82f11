"""The synthetic-query run's resumable raw log (`synth/raw.jsonl`): one JSON line per chunk
and prompt version with the LLM's replies, appended whole and fsynced, so a killed run
resumes where it stopped and loses at most its last line. Used by `finetune.synth`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rag_app.llm.base import LLM

log = logging.getLogger(__name__)

RAW_FILE = "raw.jsonl"


def raw_key(chunk_id: str, prompt_version: str, generator: str = "") -> str:
    """A row's key: the chunk, the prompt version and the generator that answered
    (`generator_id`), so replies of one model are never served as another's."""
    if not generator:
        return f"{chunk_id}:{prompt_version}"
    digest = hashlib.sha256(generator.encode()).hexdigest()[:12]
    return f"{chunk_id}:{prompt_version}:{digest}"


def generator_id(llm: LLM, temperature: float, max_new_tokens: int, max_chunk_chars: int) -> str:
    """The generator's identity as the raw log keys it: backend and model (the LLM's name,
    e.g. "llamacpp:SmolLM2-135M-Instruct") and the sampling settings that change replies."""
    name = getattr(llm, "name", type(llm).__name__)
    return f"{name}|temperature={temperature:g}|max_new_tokens={max_new_tokens}|chars={max_chunk_chars}"


def read_raw(path: Path) -> dict[str, dict[str, Any]]:
    """Rows of the raw log by key; a truncated or corrupt last line is cut off the file.

    Only the final line can be partial (rows are appended whole, then flushed); an invalid
    line elsewhere is skipped with a warning and its chunk is generated again.
    """
    if not path.is_file():
        return {}
    data = path.read_bytes()
    rows: dict[str, dict[str, Any]] = {}
    good_end = 0
    pos = 0
    while pos < len(data):
        nl = data.find(b"\n", pos)
        if nl == -1:  # no newline: a partial last line from a killed writer
            break
        line = data[pos:nl]
        pos = nl + 1
        try:
            row = json.loads(line)
            rows[row["key"]] = row
        except (ValueError, KeyError, TypeError):
            if pos >= len(data):
                break  # a damaged last line: cut it like a partial one
            log.warning("%s: skipping an unreadable line", path)
        good_end = pos
    if good_end < len(data):
        log.warning("%s: repairing a truncated last line (%d bytes)", path, len(data) - good_end)
        with path.open("r+b") as handle:
            handle.truncate(good_end)
    return rows


def append_rows(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    """Append whole lines, flushed and fsynced, so a kill loses at most the last line."""
    if not rows:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    body = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    with path.open("a", encoding="utf-8") as handle:
        handle.write(body)
        handle.flush()
        os.fsync(handle.fileno())
