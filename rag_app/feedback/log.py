"""Append-only JSONL logs that survive concurrent writers and crashes.

The chat's feedback marks and its query log are one JSON object a line. Several server
threads (and, behind a process manager, several processes) append to the same file, and
a server can be killed at any moment, so every append:

- builds the whole line first and hands it to the kernel in one `O_APPEND` write under an
  exclusive `flock`, so two writers never interleave and no reader sees half a record
  from a writer that is still alive;
- repairs a torn tail before writing: a line without its newline can only be the last
  write of a process that died mid-append; it is cut off (and counted in the log) so the
  new record starts on a line of its own instead of being glued to garbage;
- fsyncs, so a mark the user saw acknowledged is on disk.

Reading skips a torn last line with a warning (a crash, not an error) and refuses any
other malformed line with the file and line number, because that is damage or a hand
edit the user should see (`strict=False` counts and skips those too).
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rag_app.errors import RagAppError

log = logging.getLogger(__name__)

_TAIL_BLOCK = 1 << 16
# one thread lock per file for the whole process: flock is per open file description, and
# the thread lock keeps a process's threads from queueing on the kernel lock
_LOCKS: dict[Path, threading.Lock] = {}
_LOCKS_GUARD = threading.Lock()


class LogFormatError(RagAppError, ValueError):
    """A malformed line in the middle of a log file (names the file and line)."""


@dataclass
class ReadResult:
    """The records of a log, and what was skipped on the way."""

    records: list[dict[str, Any]] = field(default_factory=list)
    torn_tail: bool = False  # the last line had no newline (a crash mid-append)
    skipped: list[str] = field(default_factory=list)  # "file:line: reason" (strict=False)


class JsonlLog:
    """One append-only JSONL file; thread- and process-safe appends (see module docstring)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        with _LOCKS_GUARD:
            self._lock = _LOCKS.setdefault(self.path.resolve(), threading.Lock())

    def append(self, record: dict[str, Any]) -> None:
        """Write `record` as one whole line (see the module docstring for the guarantees)."""
        line = (json.dumps(record, ensure_ascii=False, sort_keys=True) + "\n").encode("utf-8")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._lock:
            # 0o600: the logs hold users' questions; only the operator reads them
            fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                self._cut_torn_tail(fd)
                view = memoryview(line)
                while view:
                    written = os.write(fd, view)
                    view = view[written:]
                os.fsync(fd)
            finally:
                os.close(fd)  # releases the flock

    def _cut_torn_tail(self, fd: int) -> None:
        """Truncate a last line that lacks its newline (held under the exclusive lock)."""
        size = os.fstat(fd).st_size
        if size == 0 or os.pread(fd, 1, size - 1) == b"\n":
            return
        end = size
        while end > 0:
            start = max(0, end - _TAIL_BLOCK)
            block = os.pread(fd, end - start, start)
            cut = block.rfind(b"\n")
            if cut >= 0:
                keep = start + cut + 1
                break
            end = start
        else:
            keep = 0
        log.warning(
            "%s: dropped a torn last record (%d bytes, a write cut off by a crash)",
            self.path,
            size - keep,
        )
        os.ftruncate(fd, keep)

    def read(self, *, strict: bool = True) -> ReadResult:
        """Every whole record in file order; see the module docstring for bad lines."""
        result = ReadResult()
        if not self.path.is_file():
            return result
        for number, raw, complete in _lines(self.path):
            if not raw.strip():
                continue
            try:
                record = json.loads(raw)
                if not isinstance(record, dict):
                    raise ValueError("not a JSON object")
            except (ValueError, UnicodeDecodeError) as exc:
                where = f"{self.path}:{number}"
                if not complete:
                    result.torn_tail = True
                    log.warning("%s: skipped a torn last line (a write cut off by a crash)", where)
                    continue
                if strict:
                    raise LogFormatError(
                        f"{where}: malformed record ({exc}); fix or delete that line, or "
                        "read with --skip-invalid"
                    ) from exc
                result.skipped.append(f"{where}: {exc}")
                continue
            if not complete:  # parsed, but the newline never made it: still a whole record
                log.info("%s:%d: last record lacks its newline", self.path, number)
            result.records.append(record)
        return result


def _lines(path: Path) -> Iterator[tuple[int, bytes, bool]]:
    """(line number, bytes without the newline, whether the newline was there)."""
    with path.open("rb") as handle:
        for number, line in enumerate(handle, start=1):
            complete = line.endswith(b"\n")
            yield number, line.rstrip(b"\n"), complete
