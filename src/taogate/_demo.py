"""``taogate demo``: the simulator, the gateway service and live load, in about a minute.

Three processes on loopback, no Redis: the TOP simulator (3 app keys at 10 calls/s, 200–500 ms
a call, prices changing), ``taogate serve`` in front of it, and this process sending Zipf
traffic over HTTP at a fixed rate. A live view shows what the gateway does with the quota;
halfway through the simulator goes down for a few seconds to show stale answers and the
breaker. Then a naive client (one call per lookup, no cache, no batching) gets the same load,
and a summary compares the two.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
import secrets
import shutil
import tempfile
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from taogate.bench._harness import (
    GatewayProcess,
    LatencyLog,
    SimProcess,
    SimSpec,
)
from taogate.bench._zipf import ZipfIds
from taogate.providers.base import Credential
from taogate.providers.top import TopProvider
from taogate.testing._redis import RedisServer

__all__ = ["run_demo"]

SAFETY = 0.9
#: Answers older than this are refreshed; short, so the outage shows stale answers.
MAX_AGE_S = 10.0
#: The longest a lookup waits, in both runs.
WAIT_S = 5.0


@dataclass(slots=True)
class _Tally:
    """What the load generator saw, per second and in total."""

    started: float
    answered: int = 0
    hits: int = 0
    upstream: int = 0
    stale: int = 0
    not_found: int = 0
    errors: int = 0
    timeouts: int = 0
    latency: LatencyLog = field(default_factory=LatencyLog)
    recent: deque[tuple[float, float]] = field(default_factory=lambda: deque(maxlen=20_000))

    def record(self, seconds: float, kind: str) -> None:
        """Count one lookup: ``kind`` names a counter (hits, upstream, stale, ..., timeouts)."""
        if kind not in ("errors", "timeouts"):
            self.answered += 1
            self.latency.add(seconds)  # latency of answers; failures are counted apart
        setattr(self, kind, getattr(self, kind) + 1)
        self.recent.append((time.monotonic(), seconds))

    def window(self, seconds: float) -> list[float]:
        edge = time.monotonic() - seconds
        return [lat for at, lat in self.recent if at >= edge]


async def _lookup(session: aiohttp.ClientSession, url: str, tally: _Tally, wait_s: float) -> None:
    t0 = time.monotonic()
    try:
        async with asyncio.timeout(wait_s):
            async with session.get(url) as resp:
                body = await resp.json(content_type=None)
                status = resp.status
    except TimeoutError:
        tally.record(time.monotonic() - t0, "timeouts")
        return
    except aiohttp.ClientError:
        tally.record(time.monotonic() - t0, "errors")
        return
    took = time.monotonic() - t0
    if status == 200:
        kind = (
            "stale" if body.get("stale") else ("hits" if body.get("source") == "l1" else "upstream")
        )
    elif status == 404:
        kind = "not_found"
    else:
        kind = "errors"
    tally.record(took, kind)


async def run_demo(
    console: Console, *, seconds: float = 45.0, rate: float = 600.0, replicas: int = 1
) -> None:
    """The demo; every phase is bounded in time and the whole run stops by itself.

    With ``replicas > 1`` a redis-server of the demo's own joins them (when the binary is
    installed): the replicas share every key's quota through it.
    """
    spec = SimSpec(keys=3, qps=10.0, catalog_size=50_000, price_changes_per_hour=30.0)
    quota = spec.keys * spec.qps * SAFETY
    if replicas > 1 and shutil.which("redis-server") is None:
        console.print("[yellow]redis-server is not installed: running one replica[/]")
        replicas = 1
    what = "no Redis" if replicas == 1 else f"{replicas} replicas sharing one Redis"
    console.rule(f"[bold]taogate demo[/] — simulator + gateway + live load, {what}")
    console.print(
        f"Each gateway runs every key at {SAFETY:.0%} of its 10 calls/s ([limits] safety_factor "
        f"= {SAFETY}); answers are fresh for {MAX_AGE_S:g} s. Halfway through, the simulator "
        "goes down for a few seconds.",
        highlight=False,
    )
    async with contextlib.AsyncExitStack() as stack:
        with console.status("starting the TOP simulator and the gateway…"):
            sim = await stack.enter_async_context(SimProcess(spec))
            redis_url = None
            if replicas > 1:
                redis = RedisServer(Path(stack.enter_context(tempfile.TemporaryDirectory())))
                redis.start()
                stack.callback(redis.stop)
                redis_url = redis.url
            token = secrets.token_urlsafe(32)
            gws = [
                await stack.enter_async_context(
                    GatewayProcess(
                        sim,
                        token=token,
                        safety_factor=SAFETY,
                        max_age_s=MAX_AGE_S,
                        redis_url=redis_url,
                        redis_prefix="demo",
                    )
                )
                for _ in range(replicas)
            ]
        console.print(
            f"simulator {sim.base_url} (3 keys × 10 calls/s, 200–500 ms a call, prices change); "
            f"gateway{'s' * (replicas > 1)} "
            + ", ".join(gw.base_url for gw in gws)
            + f" (metrics at {gws[0].base_url}/metrics)",
            highlight=False,
        )
        ids = await sim.catalog(spec.catalog_size)
        zipf = ZipfIds(ids, 1.1, random.Random(11))
        taogate = await _run_gateway(console, sim, gws, zipf, seconds, rate, quota)
        naive = await _run_naive(console, sim, zipf, min(10.0, seconds / 3), rate)
        url = gws[0].base_url
    _summary(console, taogate, naive, quota, url)


async def _run_gateway(
    console: Console,
    sim: SimProcess,
    gws: list[GatewayProcess],
    zipf: ZipfIds,
    seconds: float,
    rate: float,
    quota: float,
) -> dict[str, Any]:
    outage_at, outage_s = seconds * 0.55, min(6.0, seconds * 0.15)
    tally = _Tally(started=time.monotonic())
    stats0 = await sim.stats()
    history: deque[tuple[float, dict[str, Any]]] = deque(maxlen=10)
    tasks: set[asyncio.Task[None]] = set()
    connector = aiohttp.TCPConnector(limit=256)
    headers = {"Authorization": f"Bearer {gws[0].token}"}
    turn = itertools.cycle(gws)
    async with aiohttp.ClientSession(connector=connector, headers=headers) as session:
        issued, outage_started, next_line = 0, False, 0.0
        with Live(console=console, refresh_per_second=4, transient=False) as live:
            while (elapsed := time.monotonic() - tally.started) < seconds:
                if not outage_started and elapsed >= outage_at:
                    await sim.fault("outage", outage_s)
                    outage_started = True
                due = int(elapsed * rate) - issued
                for _ in range(due):
                    url = f"{next(turn).base_url}/v1/items/{zipf.draw()}"
                    task = asyncio.create_task(_lookup(session, url, tally, WAIT_S))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
                issued += due
                if not history or time.monotonic() - history[-1][0] >= 0.5:
                    history.append((time.monotonic(), await sim.stats()))
                    phase = _phase(elapsed, outage_at, outage_s)
                    if not console.is_terminal and elapsed >= next_line:
                        next_line += 5.0  # no live view without a terminal: a line every 5 s
                        console.print(_line(tally, history, quota, elapsed, phase), highlight=False)
                    live.update(
                        _view(tally, history, quota, elapsed, seconds, rate, phase, len(gws))
                    )
                await asyncio.sleep(0.01)
            await asyncio.gather(*tasks, return_exceptions=True)
    stats1 = await sim.stats()
    return _totals("taogate", tally, stats0, stats1, time.monotonic() - tally.started)


def _phase(elapsed: float, outage_at: float, outage_s: float) -> str:
    if elapsed < 5:
        return "warming up: every id is cold, misses are batched 40 to a call"
    if outage_at <= elapsed < outage_at + outage_s:
        return "[red]SIMULATOR DOWN[/]: cached ids are served stale (flagged), the rest fail fast"
    if outage_at + outage_s <= elapsed < outage_at + outage_s + 6:
        return "recovering: the breaker lets probes through, then closes"
    return "steady: hot ids from L1, misses batched, hot entries refreshed ahead"


def _line(
    tally: _Tally,
    history: deque[tuple[float, dict[str, Any]]],
    quota: float,
    elapsed: float,
    phase: str,
) -> str:
    (t0, s0), (t1, s1) = history[0], history[-1]
    calls = (s1["totals"]["ok"] - s0["totals"]["ok"]) / (t1 - t0) if t1 > t0 else 0.0
    looked = tally.hits + tally.upstream + tally.stale + tally.not_found + tally.errors
    plain = phase.replace("[red]", "").replace("[/]", "")
    return (
        f"{elapsed:4.0f} s  {plain.split(':')[0]:<16} hit ratio {tally.hits / max(1, looked):5.1%}"
        f"  upstream {calls:4.1f}/{quota:g} calls/s  code 7: {s1['totals']['code7']}"
        f"  stale {tally.stale}  failed {tally.errors}"
    )


def _view(
    tally: _Tally,
    history: deque[tuple[float, dict[str, Any]]],
    quota: float,
    elapsed: float,
    seconds: float,
    rate: float,
    phase: str,
    replicas: int,
) -> Panel:
    recent = tally.window(2.0)
    lat = sorted(recent)
    p50 = lat[len(lat) // 2] * 1000 if lat else 0.0
    p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1000 if lat else 0.0
    (t0, s0), (t1, s1) = history[0], history[-1]
    calls_per_s = (s1["totals"]["ok"] - s0["totals"]["ok"]) / (t1 - t0) if t1 > t0 else 0.0
    totals = s1["totals"]
    looked = tally.hits + tally.upstream + tally.stale + tally.not_found + tally.errors
    table = Table.grid(padding=(0, 2))
    table.add_column(justify="right", style="bold")
    table.add_column()
    table.add_row("lookups/s", f"{len(recent) / 2.0:,.0f} (offered {rate:,.0f})")
    table.add_row("L1 hit ratio", f"{tally.hits / max(1, looked):.1%}")
    table.add_row("p50 / p99", f"{p50:.1f} ms / {p99:.1f} ms (last 2 s)")
    bar = "█" * int(20 * min(1.0, calls_per_s / quota)) + "░" * (
        20 - int(20 * min(1.0, calls_per_s / quota))
    )
    table.add_row("upstream calls/s", f"{bar} {calls_per_s:.1f} of {quota:g} allowed")
    table.add_row("items per call", f"{totals['items_per_ok_call']:.1f} (max 40)")
    most = max(k["max_calls_in_1s"] for k in s1["keys"].values())
    table.add_row("code 7 (bans)", f"{totals['code7']}")
    table.add_row("most calls per key in 1 s", f"{most} (the platform allows 10)")
    if replicas > 1:
        table.add_row("replicas", f"{replicas}, sharing every key's quota through Redis")
    table.add_row("stale answers", f"{tally.stale:,}")
    table.add_row("errors / timeouts", f"{tally.errors:,} / {tally.timeouts:,}")
    progress = Text(f"{elapsed:4.0f} s of {seconds:g} s — ") + Text.from_markup(phase)
    return Panel(Group(progress, table), title="taogate, live", border_style="cyan")


async def _run_naive(
    console: Console, sim: SimProcess, zipf: ZipfIds, seconds: float, rate: float
) -> dict[str, Any]:
    """The same offered load, one upstream call per lookup, no cache, keys paced at safety."""
    await sim.reset()
    creds = [Credential(app_key=k, secret=s) for k, s in sim.spec.app_keys()]
    interval = 1.0 / (sim.spec.qps * SAFETY)
    next_at = [0.0] * len(creds)
    turn = itertools.cycle(range(len(creds)))
    tally = _Tally(started=time.monotonic())
    stats0 = await sim.stats()

    async def one(provider: TopProvider, num_iid: str) -> None:
        t0 = time.monotonic()
        k = next(turn)
        at = max(t0, next_at[k])
        if at - t0 > WAIT_S:  # its turn would come too late: give up now, free the slot
            tally.record(0.0, "timeouts")
            return
        next_at[k] = at + interval
        await asyncio.sleep(at - t0)  # its turn, within WAIT_S; the call then runs its course
        try:
            items = await provider.fetch([num_iid], creds[k])
            tally.record(time.monotonic() - t0, "upstream" if items else "not_found")
        except Exception:  # the naive client only counts what went wrong
            tally.record(time.monotonic() - t0, "errors")

    tasks: set[asyncio.Task[None]] = set()
    with console.status(f"the naive client: one call per lookup, {rate:g} lookups/s offered…"):
        async with TopProvider(url=sim.url) as provider:
            issued = 0
            while (elapsed := time.monotonic() - tally.started) < seconds:
                due = int(elapsed * rate) - issued
                for _ in range(due):
                    task = asyncio.create_task(one(provider, zipf.draw()))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
                issued += due
                await asyncio.sleep(0.01)
            await asyncio.gather(*tasks, return_exceptions=True)
    stats1 = await sim.stats()
    return _totals("naive", tally, stats0, stats1, time.monotonic() - tally.started)


def _totals(
    name: str, tally: _Tally, stats0: dict[str, Any], stats1: dict[str, Any], seconds: float
) -> dict[str, Any]:
    """Totals over ``seconds``: the run and the time its last lookups took to finish."""
    calls = stats1["totals"]["calls"] - stats0["totals"]["calls"]
    offered = tally.answered + tally.errors + tally.timeouts
    return {
        "name": name,
        "answered_per_s": tally.answered / seconds,
        "answered_share": tally.answered / max(1, offered),
        "p50_ms": (tally.latency.percentile(50) or 0) * 1000,
        "p99_ms": (tally.latency.percentile(99) or 0) * 1000,
        "calls": calls,
        "calls_per_s": calls / seconds,
        "items_per_call": stats1["totals"]["items_per_ok_call"],
        "code7": stats1["totals"]["code7"] - stats0["totals"]["code7"],
        "stale": tally.stale,
        "hit_ratio": tally.hits / max(1, offered),
        "errors": tally.errors,
        "timeouts": tally.timeouts,
        "cost": stats1["totals"]["cost"],
    }


def _summary(
    console: Console, t: dict[str, Any], n: dict[str, Any], quota: float, url: str
) -> None:
    console.print()
    table = Table(title="same offered load, same keys: taogate vs a naive client")
    table.add_column("")
    table.add_column("taogate", justify="right")
    table.add_column("naive", justify="right")
    rows = [
        ("lookups answered/s", f"{t['answered_per_s']:,.0f}", f"{n['answered_per_s']:,.0f}"),
        ("share answered", f"{t['answered_share']:.1%}", f"{n['answered_share']:.1%}"),
        (
            "p50 / p99 latency",
            f"{t['p50_ms']:.1f} / {t['p99_ms']:.0f} ms",
            f"{n['p50_ms']:.0f} / {n['p99_ms']:.0f} ms",
        ),
        ("L1 hit ratio", f"{t['hit_ratio']:.1%}", "—"),
        ("upstream calls/s", f"{t['calls_per_s']:.1f}", f"{n['calls_per_s']:.1f}"),
        ("ids per call", f"{t['items_per_call']:.1f}", f"{n['items_per_call']:.1f}"),
        ("code 7 answers", str(t["code7"]), str(n["code7"])),
        ("stale answers served (outage)", f"{t['stale']:,}", "—"),
        (
            "failed fast (503, outage) / gave up",
            f"{t['errors']:,} / {t['timeouts']:,}",
            f"{n['errors']:,} / {n['timeouts']:,}",
        ),
    ]
    for row in rows:
        table.add_row(*row)
    console.print(table)
    console.print(
        f"The quota was {quota:g} calls/s either way. taogate answered "
        f"{t['answered_per_s'] / max(n['answered_per_s'], 1e-9):.0f}× more lookups per second: "
        "hot ids from memory, identical lookups sharing one call, and misses packed into shared "
        f"calls (up to 40 ids; {t['items_per_call']:.1f} on average here: a call leaves as "
        "soon as a slot is free, so calls fill up only when misses outrun the quota, and spare "
        "slots refresh hot items) — "
        + ("without a single code 7." if t["code7"] == 0 else f"with {t['code7']} code 7.")
        + f"\nWhile it ran, the gateway's Prometheus metrics were at {url}/metrics.",
        highlight=False,
    )
    console.print("To explore on your own, in two shells:", highlight=False)
    for command in (
        ".venv/bin/taogate sim --config taogate.example.toml",
        ".venv/bin/taogate serve --config taogate.example.toml",
        "curl 'localhost:8787/_sim/catalog?limit=5'",
        "curl localhost:8080/v1/items/<an id from the catalog>",
    ):
        console.print(f"  {command}", highlight=False, soft_wrap=True)
