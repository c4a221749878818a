"""``taogate config check``: validate a config file and show it, every secret masked."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from taogate.cli._common import console, load

__all__ = ["check"]


def check(
    file: Annotated[Path, typer.Argument(help="The taogate.toml to validate.")],
) -> None:
    """Validate FILE (with TAOGATE_* overrides) and print it with every secret masked."""
    settings = load(file)
    console.print_json(json.dumps(settings.masked(), ensure_ascii=False))
    creds = len(settings.credentials)
    console.print(
        f"[green]ok[/]: {file} — {creds} credential{'s' * (creds != 1)}, "
        f"upstream {settings.upstream.kind} {settings.upstream.method}",
        highlight=False,
    )
