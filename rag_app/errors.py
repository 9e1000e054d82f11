"""The base of every error this project raises on purpose.

Each one says what went wrong and what to do in one line ("no BM25 index in ...; run
`rag-app index`"), so a command-line entry point catches `RagAppError` once and prints it,
instead of listing a module's error classes by hand and missing the next one. Each class
keeps its builtin base too (`ValueError`, `RuntimeError`), so callers that caught those
still do.
"""

from __future__ import annotations


class RagAppError(Exception):
    """An expected failure with a message meant for the user (see the module docstring)."""
