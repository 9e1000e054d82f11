"""Find the files of a corpus: recursive, `.ragignore`-aware, safe with symlink loops."""

from __future__ import annotations

import json
import os
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pathspec

IGNORE_FILE = ".ragignore"
SIDECAR_FILES = ("metadata.toml", "metadata.json")


@dataclass(frozen=True)
class FoundFile:
    path: Path
    doc_id: str  # relative to the corpus root, forward slashes


@dataclass(frozen=True)
class WalkProblem:
    doc_id: str
    reason: str


def walk_corpus(
    root: Path, extensions: set[str], *, follow_outside: bool = False
) -> tuple[list[FoundFile], list[WalkProblem], int]:
    """Files to ingest, problems met on the way, and how many files had other types.

    Symlinks are followed while they stay inside the corpus root; one that leads out of it
    (a link to /etc/passwd, a folder link to /etc) is skipped with a reason unless
    `follow_outside` (`ingest.follow_symlinks_outside`). Each real directory is visited
    once, so a link pointing back up the tree cannot loop forever. File names that are not
    valid UTF-8 keep a stable, printable id ("caf\\xe9.md").
    """
    root = root.resolve()
    spec = _load_ignore(root)
    found: list[FoundFile] = []
    problems: list[WalkProblem] = []
    other_types = 0
    visited: set[tuple[int, int]] = set()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True, onerror=None):
        current = Path(dirpath)
        try:
            st = current.stat()
        except OSError as exc:
            problems.append(WalkProblem(_rel(current, root) + "/", f"unreadable folder: {exc}"))
            dirnames[:] = []
            continue
        if current != root and not follow_outside and not _inside(current, root):
            problems.append(
                WalkProblem(_rel(current, root) + "/", "symlink to a folder outside the corpus")
            )
            dirnames[:] = []
            continue
        key = (st.st_dev, st.st_ino)
        if key in visited:
            problems.append(WalkProblem(_rel(current, root) + "/", "symlink loop, skipped"))
            dirnames[:] = []
            continue
        visited.add(key)
        dirnames[:] = sorted(
            d
            for d in dirnames
            if not d.startswith(".") and not spec.match_file(_rel(current / d, root) + "/")
        )
        for name in sorted(filenames):
            path = current / name
            doc_id = _rel(path, root)
            if name.startswith(".") or name in SIDECAR_FILES or spec.match_file(doc_id):
                continue
            if path.suffix.lower() not in extensions:
                other_types += 1
                continue
            if path.is_symlink() and not path.exists():
                problems.append(WalkProblem(doc_id, "broken symlink or symlink loop"))
                continue
            if not follow_outside and not _inside(path, root):
                problems.append(WalkProblem(doc_id, "symlink to a file outside the corpus"))
                continue
            found.append(FoundFile(path=path, doc_id=doc_id))
    return found, problems, other_types


def _inside(path: Path, root: Path) -> bool:
    """Whether `path`, with every symlink resolved, is under `root` (itself resolved)."""
    try:
        real = path.resolve(strict=True)
    except (OSError, RuntimeError):
        return False
    return real == root or root in real.parents


def _rel(path: Path, root: Path) -> str:
    rel = os.path.relpath(path, root)
    rel = "" if rel == "." else Path(rel).as_posix()
    # a name that is not UTF-8 arrives with surrogates (PEP 383): escape them, so the id
    # is printable, JSON-safe and the same on every run
    return rel.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _load_ignore(root: Path) -> pathspec.PathSpec:
    ignore = root / IGNORE_FILE
    lines = ignore.read_text(encoding="utf-8").splitlines() if ignore.is_file() else []
    return pathspec.PathSpec.from_lines("gitignore", lines)


def folder_metadata(root: Path, file_path: Path) -> dict[str, Any]:
    """Fields from `metadata.toml` / `metadata.json` sidecars, outer folders first."""
    root = root.resolve()
    merged: dict[str, Any] = {}
    folders = []
    folder = file_path.parent
    while True:
        folders.append(folder)
        if folder == root or folder.parent == folder or root not in folder.parents:
            break
        folder = folder.parent
    for folder in reversed(folders):
        for name in SIDECAR_FILES:
            sidecar = folder / name
            if sidecar.is_file():
                merged.update(_read_sidecar(sidecar))
    return merged


def _read_sidecar(path: Path) -> dict[str, Any]:
    try:
        if path.suffix == ".toml":
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        else:
            data = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, OSError) as exc:
        raise ValueError(f"invalid metadata sidecar {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise ValueError(f"metadata sidecar {path} must hold a table/object")
    return data


def iter_scalar_items(data: dict[str, Any]) -> Iterator[tuple[str, Any]]:
    """Metadata values that filters and Chroma can hold: str, int, float, bool, dates as str."""
    for key, value in data.items():
        if isinstance(value, bool | int | float | str):
            yield key, value
        elif hasattr(value, "isoformat"):
            yield key, value.isoformat()
        elif isinstance(value, list) and all(isinstance(v, str) for v in value):
            yield key, ",".join(value)
