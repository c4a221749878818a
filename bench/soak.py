"""Soak: ten minutes of mixed load on one ``taogate serve``; nothing may grow without bound.

Starts the simulator (3 keys × 10 calls/s, 200–500 ms), a redis-server of its own (for jobs, L2
and invalidations) and one ``taogate serve`` (one worker, so the process measured is the one
serving). Open-loop load, every kind at a fixed rate, bounded in count and in time:

* hits: ``GET /v1/items/{id}`` over 1,000 hot ids (warmed first, 150/s);
* misses: ``GET`` of ids never asked before (8/s);
* batches: ``POST /v1/items:batch`` of 15 hot and 5 new ids (2/s);
* invalidations: ``POST /v1/items:invalidate`` of 3 hot ids (0.5/s), so hot ids miss again;
* jobs: a 400-id job every 30 s (at most 3 running), polled, and its rows read when done;
* ``/metrics`` scraped every 10 s (as Prometheus would).

In the middle of the run the simulator answers every call with 503 for 30 s (an upstream
outage): the breaker opens, hits go on, misses fail fast or are served stale, jobs wait.

Every ``--interval`` seconds the server's RSS and open file descriptors are read from /proc,
and its asyncio task count from ``GET /v1/admin/state`` (``process.asyncio_tasks``). Samples in
the first ``--warmup`` seconds (L1 filling up to its bound, pools opening) are left out. Passes
when, after the warm-up, RSS grows less than 5 % (last sample against the first) and tasks and
fds are flat (over the samples of steady load, outage left out: the median of the last quarter
at most the median of the first quarter plus 10 % or 5, whichever is more). Writes
bench/results/soak.json and .png; exits 1 on a fail.

    .venv/bin/python bench/soak.py [--seconds 600] [--warmup 120] [--interval 10]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

import aiohttp
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

sys.path.insert(0, str(Path(__file__).parent))
from _common import RESULTS, run_and_report
from taogate.bench import Check, GatewayProcess, SimProcess, SimSpec
from taogate.testing import RedisServer

TOKEN = "bench-soak-token-0123456789abcdef0123"
HOT = 1_000
L1_MAX_ENTRIES = 4_000  # small, so the L1 reaches its bound during the warm-up
MAX_AGE_S = 120.0  # hot ids expire and are refreshed ahead during the run
RSS_GROWTH_PCT = 5.0
#: requests of one kind in progress at most; beyond it the generator counts a drop
MAX_IN_PROGRESS = 2_000


def rss_bytes(pid: int) -> int:
    """Resident set size of process ``pid`` (Linux /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


class Load:
    """Open-loop generators, one per kind of request, each at its own fixed rate."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        gw: GatewayProcess,
        hot: list[str],
        cold: Iterator[str],
    ) -> None:
        self.s = session
        self.base = gw.base_url
        self.hot = hot
        self._cold = cold
        self.outcomes: Counter[str] = Counter()
        self._tasks: set[asyncio.Task[None]] = set()
        self._stop = asyncio.Event()
        self._n = 0
        self.jobs_running = 0

    def _hot_id(self) -> str:
        self._n += 1
        # a skewed draw without a generator: the first ids come up far more often
        i = (self._n * 7919) % (HOT * HOT)
        return self.hot[int((i / (HOT * HOT)) ** 2 * HOT)]

    def _new_ids(self, n: int) -> list[str]:
        return [next(self._cold) for _ in range(n)]

    async def every(self, rate: float, one: Callable[[], Awaitable[None]], kind: str) -> None:
        """Start ``one()`` ``rate`` times a second until stopped (never waiting for it)."""
        start = time.monotonic()
        n = 0
        while not self._stop.is_set():
            delay = start + n / rate - time.monotonic()
            if delay > 0:
                try:
                    await asyncio.wait_for(self._stop.wait(), timeout=delay)
                    return
                except TimeoutError:
                    pass
            n += 1
            if sum(1 for t in self._tasks if t.get_name() == kind) >= MAX_IN_PROGRESS:
                self.outcomes[f"{kind}_dropped"] += 1
                continue
            task = asyncio.create_task(self._count(kind, one), name=kind)
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _count(self, kind: str, one: Callable[[], Awaitable[None]]) -> None:
        try:
            await one()
        except (aiohttp.ClientError, TimeoutError, StopIteration) as exc:
            self.outcomes[f"{kind}_{type(exc).__name__}"] += 1

    async def _get(self, kind: str, num_iid: str) -> None:
        async with self.s.get(f"{self.base}/v1/items/{num_iid}") as r:
            await r.read()
            self.outcomes[f"{kind}_{r.status}"] += 1

    async def hit(self) -> None:
        await self._get("hit", self._hot_id())

    async def miss(self) -> None:
        await self._get("miss", self._new_ids(1)[0])

    async def batch(self) -> None:
        ids = [self._hot_id() for _ in range(15)] + self._new_ids(5)
        async with self.s.post(f"{self.base}/v1/items:batch", json={"ids": ids}) as r:
            await r.read()
            self.outcomes[f"batch_{r.status}"] += 1

    async def invalidate(self) -> None:
        ids = [self._hot_id() for _ in range(3)]
        async with self.s.post(f"{self.base}/v1/items:invalidate", json={"ids": ids}) as r:
            await r.read()
            self.outcomes[f"invalidate_{r.status}"] += 1

    async def scrape(self) -> None:
        async with self.s.get(f"{self.base}/metrics") as r:
            await r.read()
            self.outcomes[f"metrics_{r.status}"] += 1

    async def job(self) -> None:
        """Submit 400 new ids, poll until the job ends (at most 5 min), read its rows."""
        if self.jobs_running >= 3:
            self.outcomes["job_skipped"] += 1
            return
        self.jobs_running += 1
        try:
            async with self.s.post(f"{self.base}/v1/jobs", json={"ids": self._new_ids(400)}) as r:
                self.outcomes[f"job_submit_{r.status}"] += 1
                if r.status != 202:
                    await r.read()
                    return
                job = (await r.json())["job"]
            ends = time.monotonic() + 300
            state = "queued"
            while time.monotonic() < ends:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), timeout=5.0)
                    break
                async with self.s.get(f"{self.base}/v1/jobs/{job}") as r:
                    if r.status == 200:
                        state = (await r.json())["state"]
                    else:
                        await r.read()
                if state in ("done", "failed", "cancelled"):
                    break
            self.outcomes[f"job_{state}"] += 1
            if state == "done":
                rows = 0
                async with self.s.get(f"{self.base}/v1/jobs/{job}/results") as r:
                    async for line in r.content:
                        rows += bool(line.strip())
                self.outcomes["job_rows"] += rows
        finally:
            self.jobs_running -= 1

    def generators(self) -> list[Coroutine[Any, Any, None]]:
        return [
            self.every(150.0, self.hit, "hit"),
            self.every(8.0, self.miss, "miss"),
            self.every(2.0, self.batch, "batch"),
            self.every(0.5, self.invalidate, "invalidate"),
            self.every(1 / 30, self.job, "job"),
            self.every(0.1, self.scrape, "metrics"),
        ]

    async def stop(self) -> None:
        self._stop.set()
        if self._tasks:
            _, pending = await asyncio.wait(list(self._tasks), timeout=30)
            for task in pending:
                task.cancel()


async def sample(
    session: aiohttp.ClientSession, gw: GatewayProcess, t: float, phase: str
) -> dict[str, Any]:
    async with session.get(f"{gw.base_url}/v1/admin/state") as r:
        state = await r.json()
    return {
        "t": round(t, 1),
        "phase": phase,
        "rss_bytes": rss_bytes(gw.pid),
        "fds": open_fds(gw.pid),
        "tasks": state["process"]["asyncio_tasks"],
        "l1_entries": state["cache"]["l1_entries"],
        "breaker": state["breaker"],
        "queue": {k: v for k, v in state["queue"].items() if k != "wait_ms"},
    }


def flat(values: list[int]) -> tuple[bool, float, float]:
    """Whether the last quarter's median stays within the first quarter's + max(10 %, 5)."""
    quarter = max(1, len(values) // 4)
    first = statistics.median(values[:quarter])
    last = statistics.median(values[-quarter:])
    return last <= first + max(0.10 * first, 5.0), first, last


def judge(samples: list[dict[str, Any]], warmup: float) -> list[Check]:
    after = [s for s in samples if s["phase"] != "warm-up"]
    if len(after) < 2:
        return [Check("samples after the warm-up", ">= 2", len(after), False)]
    base, end = after[0], after[-1]
    growth = 100.0 * (end["rss_bytes"] - base["rss_bytes"]) / base["rss_bytes"]
    # under steady load: while the breaker is open requests end at once (fewer tasks)
    steady = [s for s in after if s["phase"] == "steady"] or after
    tasks_flat, t0, t1 = flat([s["tasks"] for s in steady])
    fds_flat, f0, f1 = flat([s["fds"] for s in steady])
    mb = 1024 * 1024
    return [
        Check(
            f"RSS growth after the warm-up ({warmup:g} s)",
            f"< {RSS_GROWTH_PCT:g} %",
            f"{base['rss_bytes'] / mb:.1f} MB at {base['t']:g} s -> "
            f"{end['rss_bytes'] / mb:.1f} MB at {end['t']:g} s = {growth:+.2f} %",
            growth < RSS_GROWTH_PCT,
        ),
        Check(
            "asyncio tasks flat (median of last vs first quarter of steady samples)",
            "last <= first + max(10 %, 5)",
            f"{t0:g} -> {t1:g}",
            tasks_flat,
        ),
        Check(
            "open fds flat (median of last vs first quarter of steady samples)",
            "last <= first + max(10 %, 5)",
            f"{f0:g} -> {f1:g}",
            fds_flat,
        ),
    ]


def _cold_ids(ids: list[str]) -> Iterator[str]:
    while True:  # a long run wraps around: by then the first ones left the bounded L1
        yield from ids


async def run(args: argparse.Namespace) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="taogate-soak-"))
    redis = RedisServer(tmp)
    redis.start()
    # enough new ids for the misses, the batches and the jobs of the whole run
    size = HOT + int(args.seconds * (8 + 2 * 5) + (args.seconds / 30 + 1) * 400) + 1_000
    spec = SimSpec(keys=3, qps=10.0, catalog_size=size, latency_ms=(200.0, 500.0))
    try:
        async with SimProcess(spec) as sim:
            ids = await sim.catalog(size)
            gw = GatewayProcess(
                sim,
                token=TOKEN,
                max_age_s=MAX_AGE_S,
                redis_url=redis.url,
                redis_prefix="soak" + os.urandom(3).hex(),
                log=tmp / "serve.log",
                admin=True,
                l1_max_entries=L1_MAX_ENTRIES,
            )
            async with gw:
                result = await measure(args, sim, gw, ids[:HOT], ids[HOT:])
            result["server_log_errors"] = sum(
                '"level": "error"' in line or '"level":"error"' in line
                for line in (tmp / "serve.log").read_text(errors="replace").splitlines()
            )
            return result
    finally:
        redis.stop()
        shutil.rmtree(tmp, ignore_errors=True)


async def measure(
    args: argparse.Namespace, sim: SimProcess, gw: GatewayProcess, hot: list[str], cold: list[str]
) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    connector = aiohttp.TCPConnector(limit=200)  # the server's client sockets stay bounded
    timeout = aiohttp.ClientTimeout(total=60)
    outage_s = min(args.outage_s, args.seconds / 4)
    outage_at = args.seconds / 2 - outage_s / 2
    async with aiohttp.ClientSession(connector=connector, headers=headers, timeout=timeout) as s:

        async def warm(chunk: list[str]) -> None:
            async with s.post(f"{gw.base_url}/v1/items:batch", json={"ids": chunk}) as r:
                await r.read()

        # the hot ids, cached before the clock starts
        await asyncio.gather(*(warm(hot[i : i + 40]) for i in range(0, HOT, 40)))
        load = Load(s, gw, hot, _cold_ids(cold))
        samples: list[dict[str, Any]] = []
        start = time.monotonic()
        generators = [asyncio.create_task(g) for g in load.generators()]
        outage_started = False
        try:
            with Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                TextColumn("{task.completed:.0f}/{task.total:.0f} s"),
                TimeElapsedColumn(),
                TextColumn("{task.fields[last]}"),
            ) as bar:
                task = bar.add_task("soak", total=args.seconds, last="")
                n = 0
                while True:
                    due = start + n * args.interval
                    if due > start + args.seconds + 1e-6:
                        break
                    while (now := time.monotonic()) < due:
                        if not outage_started and now - start >= outage_at:
                            outage_started = True
                            await sim.fault("outage", outage_s)
                        bar.update(task, completed=min(args.seconds, now - start))
                        await asyncio.sleep(min(0.5, max(0.0, due - now)))
                    t = time.monotonic() - start
                    if t < args.warmup:
                        phase = "warm-up"
                    elif outage_at <= t < outage_at + outage_s:
                        phase = "outage"
                    else:
                        phase = "steady"
                    one = await sample(s, gw, t, phase)
                    samples.append(one)
                    bar.update(
                        task,
                        completed=min(args.seconds, t),
                        last=(
                            f"{phase}: RSS {one['rss_bytes'] / 2**20:.1f} MB, "
                            f"tasks {one['tasks']}, fds {one['fds']}, L1 {one['l1_entries']}"
                        ),
                    )
                    n += 1
        finally:
            await load.stop()
            for g in generators:
                g.cancel()
            await asyncio.gather(*generators, return_exceptions=True)
        await asyncio.sleep(3.0)  # the last answers settle
        quiet = await sample(s, gw, time.monotonic() - start, "after load")
        stats = await sim.stats()
    checks = judge(samples, args.warmup)
    keys = stats["keys"]
    return {
        "seconds": args.seconds,
        "warmup_s": args.warmup,
        "interval_s": args.interval,
        "outage": {"at_s": round(outage_at, 1), "seconds": outage_s},
        "rates_per_s": {
            "hit": 150,
            "miss": 8,
            "batch": 2,
            "invalidate": 0.5,
            "job": 1 / 30,
            "metrics": 0.1,
        },
        "l1_max_entries": L1_MAX_ENTRIES,
        "samples": samples,
        "after_load": quiet,
        "outcomes": dict(sorted(load.outcomes.items())),
        "sim": {
            "code7": sum(k["code7"] for k in keys.values()),
            "max_calls_in_1s": max(k["max_calls_in_1s"] for k in keys.values()),
        },
        "checks": [c.as_dict() for c in checks],
        "passed": all(c.passed for c in checks),
    }


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    samples = result["samples"]
    ts = [x["t"] for x in samples]
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.2))
    series = [
        ("rss_bytes", "RSS, MB", 1 / 2**20),
        ("tasks", "asyncio tasks", 1.0),
        ("fds", "open file descriptors", 1.0),
    ]
    outage = result["outage"]
    after = [x for x in samples if x["phase"] != "warm-up"]
    for ax, (key, label, scale) in zip(axes, series, strict=True):
        ax.plot(ts, [x[key] * scale for x in samples], marker=".", label=label)
        ax.axvspan(0, result["warmup_s"], color="grey", alpha=0.12, label="warm-up (left out)")
        ax.axvspan(
            outage["at_s"],
            outage["at_s"] + outage["seconds"],
            color="tab:red",
            alpha=0.12,
            label="upstream outage",
        )
        if key == "rss_bytes" and after:
            limit = after[0][key] * scale * (1 + RSS_GROWTH_PCT / 100)
            ax.axhline(limit, color="red", linestyle="--", label=f"+{RSS_GROWTH_PCT:g} % limit")
        ax.set_xlabel("second of the run")
        ax.set_ylabel(label)
        ax.set_ylim(bottom=0)
        ax.legend(fontsize="small", loc="lower right")
    verdict = "passed" if result["passed"] else "FAILED"
    axes[0].set_title(f"soak {result['seconds']:g} s: {verdict}")
    axes[1].set_title("mixed load: hits, misses, batches, jobs, invalidations")
    axes[2].set_title(f"samples every {result['interval_s']:g} s")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main(argv: list[str] | None = None, results: Path = RESULTS) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--seconds", type=float, default=600.0, help="length of the load")
    parser.add_argument("--warmup", type=float, default=120.0, help="seconds left out")
    parser.add_argument("--interval", type=float, default=10.0, help="seconds between samples")
    parser.add_argument("--outage-s", type=float, default=30.0, help="upstream outage length")
    parser.add_argument("--out", default="soak", help="results name under bench/results/")
    args = parser.parse_args(argv)
    return run_and_report("soak.py", args.out, lambda: asyncio.run(run(args)), plot, results)


if __name__ == "__main__":
    sys.exit(0 if main()["passed"] else 1)
