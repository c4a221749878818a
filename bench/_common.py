"""Helpers shared by the benchmark scripts: results files, process CPU, a free port."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import platform
import socket
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import aiohttp

RESULTS = Path(__file__).parent / "results"


def free_port() -> int:
    """A TCP port on loopback that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def process_cpu_s(pid: int) -> float:
    """CPU seconds (user + system) used so far by process ``pid`` (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    return {
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def write_json(name: str, data: dict[str, Any], results: Path = RESULTS) -> Path:
    """Write ``bench/results/<name>.json`` (or under ``results``) and return its path."""
    results.mkdir(parents=True, exist_ok=True)
    path = results / f"{name}.json"
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return path


def run_and_report(
    script: str,
    out: str,
    run: Callable[[], dict[str, Any]],
    plot: Callable[[dict[str, Any], Path], None],
    results: Path = RESULTS,
) -> dict[str, Any]:
    """Run a benchmark, record the machine (and how busy it was: other work skews latency and
    pacing), write ``bench/results/<out>.json`` and ``.png``, and print each check."""
    load_before = os.getloadavg()
    result = run()
    result["machine"] = machine() | {"loadavg_before_after": [load_before, os.getloadavg()]}
    result["command"] = f"python bench/{script} " + " ".join(sys.argv[1:])
    write_json(out, result, results)
    plot(result, results / f"{out}.png")
    for c in result.get("checks", []):
        verdict = "met" if c["passed"] else "NOT met"
        print(f"{c['name']}: {c['measured']} (target {c['target']}) {verdict}")
    print(f"wrote {results / out}.json and .png")
    return result


class Flood:
    """``callers`` clients posting batches of ``per_request`` cold ids to ``gateways`` (their
    ``base_url``) in turn, until ``end``; ``statuses`` counts the answers (599: no answer)."""

    def __init__(
        self, gateways: Sequence[Any], ids: Iterable[str], per_request: int, callers: int = 120
    ) -> None:
        self.gateways = gateways
        self.cold = iter(ids)
        self.per_request = per_request
        self.callers = callers
        self.turn = itertools.count()
        self.statuses: dict[int, int] = {}

    async def run(self, session: aiohttp.ClientSession, end: float) -> None:
        async def caller() -> None:
            while time.monotonic() < end:
                gw = self.gateways[next(self.turn) % len(self.gateways)]
                body = {"ids": [next(self.cold) for _ in range(self.per_request)]}
                try:
                    async with session.post(f"{gw.base_url}/v1/items:batch", json=body) as r:
                        await r.read()
                        status = r.status
                except aiohttp.ClientError:
                    status = 599
                self.statuses[status] = self.statuses.get(status, 0) + 1

        await asyncio.gather(*(caller() for _ in range(self.callers)))


def rate_series(timeline: Sequence[tuple[float, int]], span_s: float = 2.0) -> list[list[float]]:
    """A counter's rate per second at each sample ``(t, count)``, averaged over the last
    ``span_s`` (none before the first span), for a plot."""
    out = []
    for i, (t, n) in enumerate(timeline):
        before = next((x for x in reversed(timeline[:i]) if t - x[0] >= span_s), None)
        if before is not None:
            out.append([round(t, 2), round((n - before[1]) / (t - before[0]), 3)])
    return out
