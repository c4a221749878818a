"""``taogate bench``: the pipeline's benchmark scenarios against the simulator.

Each scenario starts its own simulator process, drives a gateway in this process, judges with
the simulator's own ``/_sim/stats`` and ``/_sim/truth``, and reports the figures the issues
name as checks (target, measured, met). Results go to ``bench/results/pipeline.json`` and a PNG.
The scripts under ``bench/`` build their own scenarios from the same parts, exported here.
"""

from __future__ import annotations

import platform
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from taogate.bench._harness import (
    ACCOUNT,
    Check,
    GatewayProcess,
    LatencyLog,
    SimProcess,
    SimSpec,
)
from taogate.bench._zipf import ZipfIds

__all__ = [
    "ACCOUNT",
    "SCENARIOS",
    "Check",
    "GatewayProcess",
    "LatencyLog",
    "SimProcess",
    "SimSpec",
    "ZipfIds",
    "run_bench",
]

SCENARIOS = ("cold", "zipf", "outage", "dup", "micro")


async def run_bench(
    console: Console,
    *,
    scenarios: Sequence[str] = SCENARIOS,
    quick: bool = False,
    out: Path = Path("bench/results"),
    name: str = "pipeline",
) -> dict[str, Any]:
    """Run ``scenarios`` (full length, or ``quick`` for a smoke run) and write the report."""
    from taogate.bench._flood import cold_flood, duplicate_burst
    from taogate.bench._micro import l1_micro
    from taogate.bench._report import plot, write_json
    from taogate.bench._zipf import hot_zipf

    results: dict[str, Any] = {}
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TimeElapsedColumn(),
        console=console,
    ) as progress:
        for scenario in scenarios:
            if scenario == "cold":
                results["cold_flood"] = await (
                    cold_flood(
                        progress, duration_s=6, naive_duration_s=3, callers=1000, n_ids=20_000
                    )
                    if quick
                    else cold_flood(progress)
                )
            elif scenario == "zipf":
                results["hot_zipf"] = await (
                    hot_zipf(progress, duration_s=8, rate=500, universe=20_000)
                    if quick
                    else hot_zipf(progress)
                )
            elif scenario == "outage":
                results["outage"] = await (
                    hot_zipf(
                        progress,
                        duration_s=14,
                        rate=500,
                        universe=20_000,
                        max_age_s=3,
                        outage=(4.0, 3.0),
                    )
                    if quick
                    else hot_zipf(progress, duration_s=40, max_age_s=5.0, outage=(15.0, 10.0))
                )
            elif scenario == "dup":
                results["duplicate_burst"] = await duplicate_burst(progress)
            elif scenario == "micro":
                results["l1_micro"] = await (
                    l1_micro(progress, rounds=50, big=50_000) if quick else l1_micro(progress)
                )
            else:
                raise ValueError(f"unknown scenario {scenario!r}; one of {', '.join(SCENARIOS)}")
    report = {
        "quick": quick,
        "machine": {
            "python": platform.python_version(),
            "platform": platform.platform(),
            "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        },
        "command": "taogate bench"
        + (" --quick" if quick else "")
        + "".join(f" --scenario {s}" for s in scenarios if tuple(scenarios) != SCENARIOS),
        **results,
    }
    json_path, png_path = out / f"{name}.json", out / f"{name}.png"
    write_json(json_path, report)
    plot(png_path, results)
    _summary(console, results)
    console.print(f"wrote {json_path} and {png_path}")
    return report


def _summary(console: Console, results: dict[str, Any]) -> None:
    table = Table(title="taogate bench: the figures the issues name")
    for column in ("scenario", "check", "target", "measured", "met"):
        table.add_column(column)
    for name, r in results.items():
        for c in r.get("checks", []):
            table.add_row(
                name,
                c["name"],
                c["target"],
                str(c["measured"]),
                "[green]yes[/]" if c["passed"] else "[red]NO[/]",
            )
    console.print(table)
