"""The ``taogate`` command: ``serve``, ``sim``, ``demo``, ``bench``, ``config check``, ``jobs``,
``keys``, ``degrade``.

This module is the command tree; each command lives with its kind: ``_local`` runs something
on this machine, ``_config`` checks a file, ``_jobs`` and ``_admin`` manage a running service
(through ``_client``). The environment and config files are read at this edge (``_common``),
and nowhere else. Optional dependencies are imported inside the commands that need them.
"""

from __future__ import annotations

from typing import Annotated

import typer

import taogate
from taogate.cli import _admin, _config, _jobs, _local
from taogate.cli._common import console

__all__ = ["app", "main"]

app = typer.Typer(
    name="taogate",
    help="A gateway that makes a scarce Taobao Open Platform quota go as far as it can.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


def _version(value: bool) -> None:
    if value:
        console.print(f"taogate {taogate.__version__}")
        raise typer.Exit


@app.callback()
def _main(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Show the version."),
    ] = False,
) -> None:
    """taogate: quota pool, micro-batching, tiered cache and breaker in front of TOP."""


# in the order ``taogate --help`` lists them (the groups come after the commands)
app.command()(_local.sim)
app.command()(_local.serve)
app.command()(_admin.degrade)
app.command()(_admin.keys)
app.command()(_local.demo)
app.command()(_local.bench)

config_app = typer.Typer(help="Check configuration files.", no_args_is_help=True)
config_app.command("check")(_config.check)
app.add_typer(config_app, name="config")

jobs_app = typer.Typer(help="Bulk jobs of a running service (needs [redis]).", no_args_is_help=True)
jobs_app.command("submit")(_jobs.submit)
jobs_app.command("status")(_jobs.status)
jobs_app.command("results")(_jobs.results)
app.add_typer(jobs_app, name="jobs")


def main() -> None:
    """Console-script entry point."""
    app()
