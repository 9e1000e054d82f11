"""What every settings section shares: unknown keys are errors that suggest the right one.

A misspelled key used to be dropped without a word: `[server] auht = [...]` left the chat
without a login, `[feedback] log_querys = false` left query logging on (issue 30). Every
section forbids extra keys, and `explain` turns pydantic's "extra inputs are not permitted"
into "unknown key server.auht; did you mean server.auth?".
"""

from __future__ import annotations

import difflib
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from rag_app.errors import RagAppError


class Section(BaseModel):
    """A settings section: unknown keys are refused (see the module docstring)."""

    model_config = ConfigDict(extra="forbid")


class ConfigError(RagAppError, ValueError):
    """The configuration (TOML, RAG_APP_* variables or arguments) is invalid."""


def _fields_at(model: type[BaseModel], path: tuple[Any, ...]) -> list[str]:
    """The field names of the section at `path` below `model` ([] when it is not a model)."""
    for part in path:
        field = model.model_fields.get(str(part))
        annotation = getattr(field, "annotation", None)
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return []
        model = annotation
    return list(model.model_fields)


def explain(exc: ValidationError, model: type[BaseModel]) -> str:
    """One line per error; unknown keys name the closest valid key."""
    lines = []
    for error in exc.errors():
        loc = tuple(error.get("loc", ()))
        where = ".".join(str(p) for p in loc)
        if error.get("type") == "extra_forbidden" and loc:
            known = _fields_at(model, loc[:-1])
            close = difflib.get_close_matches(str(loc[-1]), known, n=1, cutoff=0.6)
            parent = ".".join(str(p) for p in loc[:-1])
            hint = f"; did you mean {parent + '.' if parent else ''}{close[0]}?" if close else ""
            lines.append(f"unknown key {where}{hint}")
        else:
            lines.append(f"{where}: {error.get('msg')}")
    return "; ".join(lines)
