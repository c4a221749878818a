"""``taogate jobs submit | status | results``: bulk jobs of a running service."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from taogate.cli._client import TokenOption, UrlOption, call, service_address
from taogate.cli._common import ConfigOption, console

__all__ = ["results", "status", "submit"]


def submit(
    file: Annotated[Path, typer.Argument(help="One item id a line.")],
    config: ConfigOption,
    url: UrlOption = None,
    token_env: TokenOption = None,
    wait: Annotated[bool, typer.Option(help="Follow the job with a progress bar.")] = False,
) -> None:
    """Submit FILE as a bulk job; prints the job id and the estimate."""
    import time

    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    base, headers = service_address(config, url, token_env)
    body = file.read_bytes()
    doc = call(
        "POST", f"{base}/v1/jobs", {**headers, "content-type": "text/plain"}, data=body
    ).json()
    est = doc["estimate"]
    console.print(
        f"job {doc['job']}: {doc['total']:,} ids, {est['fresh_in_cache']:,} fresh in cache, "
        f"{est['upstream_calls']:,} upstream calls, about {est['seconds']} s at "
        f"{est['spare_calls_per_s']} spare calls/s, cost {est['cost']}",
        highlight=False,
    )
    if not wait:
        return
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed:,}/{task.total:,}"),
        TimeElapsedColumn(),
        console=console,
    ) as progress:
        task = progress.add_task(f"job {doc['job']}", total=doc["total"])
        while True:
            job = call("GET", f"{base}/v1/jobs/{doc['job']}", headers).json()
            progress.update(
                task, completed=job["done"], description=f"job {doc['job']} {job['state']}"
            )
            if job["state"] not in ("queued", "running"):
                break
            time.sleep(1.0)
    console.print(
        f"{job['state']}: {job['found']:,} found, {job['not_found']:,} not found, "
        f"{job['failed']:,} failed",
        highlight=False,
    )


def status(
    job: Annotated[str, typer.Argument(help="The job id.")],
    config: ConfigOption,
    url: UrlOption = None,
    token_env: TokenOption = None,
) -> None:
    """Show a job's state and progress."""
    base, headers = service_address(config, url, token_env)
    console.print_json(call("GET", f"{base}/v1/jobs/{job}", headers).text)


def results(
    job: Annotated[str, typer.Argument(help="The job id.")],
    config: ConfigOption,
    url: UrlOption = None,
    token_env: TokenOption = None,
    csv: Annotated[bool, typer.Option("--csv", help="CSV instead of NDJSON.")] = False,
) -> None:
    """Write a job's rows to standard output (NDJSON, one row per id; or CSV)."""
    import sys

    base, headers = service_address(config, url, token_env)
    suffix = "?format=csv" if csv else ""
    sys.stdout.buffer.write(call("GET", f"{base}/v1/jobs/{job}/results{suffix}", headers).content)
