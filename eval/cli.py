"""`rag-app` commands of the eval side, added to the CLI as an entry-point plugin."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add the eval commands to the `rag-app` CLI."""
