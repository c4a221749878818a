"""How many 40-id calls per second the simulator answers at zero latency, in one process.

The simulator runs as its own process (``taogate sim``) on one core; this script drives it from
another with pooled keep-alive connections and pre-signed 40-id calls, then reports calls/s,
items/s, latency and how busy each process was, so the reader can tell which side was the limit.
Writes ``bench/results/sim_capacity.json`` and ``.png``.

    .venv/bin/python bench/sim_capacity.py [--seconds 10] [--concurrency 64]
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

sys.path.insert(0, str(Path(__file__).parent))
from _common import RESULTS, free_port, machine, process_cpu_s, write_json
from taogate import Credential
from taogate.providers import TopProvider
from taogate.testing import Catalog

T = TypeVar("T")

APP_KEY = "30000001"
SECRET = "bench-only-secret"
CATALOG_SIZE = 100_000
SEED = 11

CONFIG = f"""
[[credentials]]
app_key = "{APP_KEY}"
secret = "{SECRET}"
qps = 1000000

[sim]
latency_ms = [0, 0]
catalog_size = {CATALOG_SIZE}
seed = {SEED}
"""


async def wait_ready(url: str, deadline_s: float = 20.0) -> None:
    stop = time.monotonic() + deadline_s
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < stop:
            try:
                async with session.get(url) as resp:
                    if resp.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
    raise RuntimeError(f"simulator did not answer at {url}")


async def drive(base: str, seconds: float, concurrency: int, console: Console) -> dict[str, object]:
    ids = Catalog(size=CATALOG_SIZE, seed=SEED).ids()
    signer = TopProvider(url=base + "/router/rest")
    cred = Credential(app_key=APP_KEY, secret=SECRET)
    bodies = [signer.build_params(ids[i : i + 40], cred) for i in range(0, 40 * 500, 40)]
    per_second: list[int] = []
    latencies: list[float] = []
    errors = 0
    done = 0
    started = time.perf_counter()
    stop_at = started + seconds
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker(offset: int) -> None:
            nonlocal done, errors
            n = offset
            while (now := time.perf_counter()) < stop_at:
                body = bodies[n % len(bodies)]
                n += concurrency
                async with session.post(base + "/router/rest", data=body) as resp:
                    payload = await resp.read()
                end = time.perf_counter()
                if resp.status != 200 or b"error_response" in payload:
                    errors += 1
                    continue
                latencies.append(end - now)
                second = int(end - started)
                while len(per_second) <= second:
                    per_second.append(0)
                per_second[second] += 1
                done += 1

        with Progress(
            TextColumn("driving the simulator"),
            BarColumn(),
            TextColumn("{task.fields[calls]:>8,} calls"),
            TimeRemainingColumn(),
            console=console,
        ) as progress:
            task = progress.add_task("run", total=seconds, calls=0)
            workers = [asyncio.create_task(worker(i)) for i in range(concurrency)]
            while not all(w.done() for w in workers):
                await asyncio.sleep(0.25)
                progress.update(
                    task, completed=min(seconds, time.perf_counter() - started), calls=done
                )
            await asyncio.gather(*workers)
    elapsed = time.perf_counter() - started
    latencies.sort()
    return {
        "calls": done,
        "errors": errors,
        "elapsed_s": round(elapsed, 3),
        "per_second": per_second[: int(seconds)],
        "p50_ms": round(latencies[len(latencies) // 2] * 1000, 3) if latencies else None,
        "p99_ms": round(latencies[int(len(latencies) * 0.99)] * 1000, 3) if latencies else None,
    }


def plot(result: dict[str, object], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    per_second = result["per_second"]
    assert isinstance(per_second, list)
    fig, ax = plt.subplots(figsize=(8, 4))
    ax.plot(range(1, len(per_second) + 1), per_second, marker="o")
    ax.axhline(float(str(result["calls_per_s"])), linestyle="--", color="grey", label="mean")
    ax.set_xlabel("second of the run")
    ax.set_ylabel("40-id calls answered per second")
    ax.set_ylim(bottom=0)
    ax.set_title("taogate sim capacity at zero latency (one process)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run on uvloop: the load generator should cost as little CPU as it can."""
    import uvloop

    return uvloop.run(coro)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=64)
    args = parser.parse_args()
    console = Console()
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "sim.toml"
        config.write_text(CONFIG, encoding="utf-8")
        taogate = Path(sys.executable).with_name("taogate")
        proc = subprocess.Popen(
            [str(taogate), "sim", "--config", str(config), "--port", str(port)],
            stdout=subprocess.DEVNULL,
        )
        try:
            base = f"http://127.0.0.1:{port}"
            run(wait_ready(base + "/_sim/stats"))
            sim_cpu0, own_cpu0 = process_cpu_s(proc.pid), time.process_time()
            result = run(drive(base, args.seconds, args.concurrency, console))
            sim_cpu = process_cpu_s(proc.pid) - sim_cpu0
            own_cpu = time.process_time() - own_cpu0
        finally:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
    elapsed = float(str(result["elapsed_s"]))
    calls = int(str(result["calls"]))
    result.update(
        calls_per_s=round(calls / elapsed, 1),
        items_per_s=round(calls * 40 / elapsed, 1),
        simulator_cpu_share=round(sim_cpu / elapsed, 3),
        load_generator_cpu_share=round(own_cpu / elapsed, 3),
        concurrency=args.concurrency,
        machine=machine(),
        command=f"python bench/sim_capacity.py --seconds {args.seconds:g} "
        f"--concurrency {args.concurrency}",
    )
    path = write_json("sim_capacity", result)
    plot(result, RESULTS / "sim_capacity.png")
    limit = "simulator" if result["simulator_cpu_share"] >= 0.9 else "load generator"  # type: ignore[operator]
    console.print(
        f"[bold]{result['calls_per_s']:,} 40-id calls/s[/] ({result['items_per_s']:,} items/s), "
        f"p50 {result['p50_ms']} ms, p99 {result['p99_ms']} ms, errors {result['errors']}; "
        f"simulator CPU {result['simulator_cpu_share']:.0%}, load generator CPU "
        f"{result['load_generator_cpu_share']:.0%} (the {limit} was the limit)\n"
        f"wrote {path} and {RESULTS / 'sim_capacity.png'}",
        highlight=False,
    )


if __name__ == "__main__":
    main()
