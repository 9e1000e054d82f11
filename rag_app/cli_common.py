"""What every `rag-app` command module shares: the common options, settings loading with
readable errors, and the one way a command fails. `rag_app.cli`, `finetune.cli` and
`eval.cli` all import it (dependencies point down), so the three stay alike."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

from rag_app.config import Settings

ConfigOpt = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="TOML config file (default: ./rag-app.toml if present)."),
]
WorkspaceOpt = Annotated[
    Path | None, typer.Option("--workspace", "-w", help="Folder holding all of the app's state.")
]


def fail(message: str, code: int = 1) -> NoReturn:
    """Print `error: message` in red on stderr and exit with `code` (no traceback)."""
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


def settings_or_exit(config: Path | None, **overrides: Any) -> Settings:
    """`load_settings(config, **overrides)`; an invalid configuration is an error message."""
    from rag_app.config import load_settings

    try:
        return load_settings(config, **overrides)
    except Exception as exc:  # validation errors: show them, not a traceback
        fail(f"invalid configuration: {exc}")
