"""Helpers shared by the benchmark scripts: results files, process CPU, a free port."""

from __future__ import annotations

import json
import os
import platform
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

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
