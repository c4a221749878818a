"""What every command shares: the consoles, the ``--config`` option, reading the settings,
ending with one clear line, and running a coroutine.

The environment and config files are read here, at the edge, and nowhere else.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape

from taogate._errors import ConfigurationError
from taogate._settings import Settings, load_settings

__all__ = ["ConfigOption", "console", "err_console", "fail", "load", "run"]

console = Console()
err_console = Console(stderr=True)

ConfigOption = Annotated[
    Path,
    typer.Option("--config", "-c", help="taogate.toml (TAOGATE_* variables override it)."),
]


def fail(message: object, code: int = 2) -> NoReturn:
    """End the command with one clear line on stderr and ``code`` (2: bad configuration)."""
    err_console.print(
        f"[bold red]error:[/] {escape(str(message))}", highlight=False, soft_wrap=True
    )
    raise typer.Exit(code)


def load(path: Path | None) -> Settings:
    """Settings from ``path``; a wrong file ends the command with one message and exit code 2."""
    try:
        return load_settings(path)
    except ConfigurationError as exc:
        fail(exc)


def run(coro: Any) -> Any:
    """Run ``coro`` on uvloop where available (the asyncio loop otherwise)."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is optional
        return asyncio.run(coro)
    return uvloop.run(coro)
