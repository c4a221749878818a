"""Cold flood, the naive client beside it, and the duplicate burst.

Cold flood: 3 keys × 10 qps enforced by the simulator, distinct ids, many concurrent callers
(enough to keep a backlog, by Little's law) — the gateway should fill every call with 40 ids
and run every key just under its limit. The naive client makes one call per lookup with the
same keys, paced per key at the same safety factor, no batching and no cache.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import Counter
from typing import Any

from rich.progress import Progress

from taogate import Credential, Gateway, Source
from taogate.bench._harness import Check, LatencyLog, SimProcess, SimSpec, gateway_settings
from taogate.providers import TopProvider

__all__ = ["cold_flood", "duplicate_burst"]


async def _poll_stats(sim: SimProcess, every_s: float, into: list[dict[str, Any]]) -> None:
    """Sample the simulator's per-key counters for the time series."""
    start = time.monotonic()
    while True:
        stats = await sim.stats()
        into.append(
            {
                "t": round(time.monotonic() - start, 2),
                "ok": {k: v["ok"] for k, v in stats["keys"].items()},
            }
        )
        await asyncio.sleep(every_s)


def _per_second(samples: list[dict[str, Any]]) -> dict[str, list[float]]:
    """Calls answered per second per key, from cumulative samples."""
    out: dict[str, list[float]] = {}
    for a, b in itertools.pairwise(samples):
        dt = b["t"] - a["t"]
        for key, ok in b["ok"].items():
            out.setdefault(key, []).append(round((ok - a["ok"][key]) / dt, 2) if dt > 0 else 0.0)
    return out


async def cold_flood(
    progress: Progress,
    *,
    duration_s: float = 30.0,
    naive_duration_s: float = 10.0,
    callers: int = 1000,
    n_ids: int = 50_000,
    safety_factor: float = 0.9,
) -> dict[str, Any]:
    spec = SimSpec(keys=3, qps=10.0, catalog_size=max(100_000, n_ids))
    async with SimProcess(spec) as sim:
        ids = await sim.catalog(n_ids)
        taogate = await _flood_gateway(sim, progress, ids, duration_s, callers, safety_factor)
        await sim.reset()
        naive = await _flood_naive(sim, progress, ids, naive_duration_s, callers, safety_factor)
    quota = spec.keys * spec.qps * safety_factor
    limit = spec.keys * spec.qps * safety_factor * 40
    checks = [
        Check("code 7 answers", "= 0", taogate["code7"], taogate["code7"] == 0),
        Check(
            "most calls per key in any 1 s",
            f"<= {spec.qps:g}",
            taogate["max_calls_in_1s"],
            taogate["max_calls_in_1s"] <= spec.qps,
        ),
        Check(
            "ok calls",
            f">= 97 % of {quota:g} x {duration_s:g} s = {0.97 * quota * duration_s:.0f}",
            taogate["ok_calls"],
            taogate["ok_calls"] >= 0.97 * quota * duration_s,
        ),
        Check(
            "items per call",
            ">= 38",
            taogate["items_per_call"],
            taogate["items_per_call"] >= 38,
        ),
        Check(
            "fresh lookups/s",
            f">= 95 % of {limit:g} = {0.95 * limit:.0f}",
            taogate["fresh_lookups_per_s"],
            taogate["fresh_lookups_per_s"] >= 0.95 * limit,
        ),
    ]
    return {
        "scenario": "cold_flood",
        "keys": spec.keys,
        "qps": spec.qps,
        "safety_factor": safety_factor,
        "callers": callers,
        "distinct_ids": n_ids,
        "taogate": taogate,
        "naive": naive,
        "speedup_fresh_lookups": round(
            taogate["fresh_lookups_per_s"] / max(naive["fresh_lookups_per_s"], 1e-9), 1
        ),
        "checks": [c.as_dict() for c in checks],
    }


async def _flood_gateway(
    sim: SimProcess,
    progress: Progress,
    ids: list[str],
    duration_s: float,
    callers: int,
    safety_factor: float,
) -> dict[str, Any]:
    task = progress.add_task(f"cold flood: taogate, {callers} callers", total=duration_s)
    latencies = LatencyLog()
    outcomes: Counter[str] = Counter()
    next_id = iter(ids)
    samples: list[dict[str, Any]] = []
    async with Gateway(gateway_settings(sim, safety_factor=safety_factor)) as gw:
        start = time.monotonic()
        end = start + duration_s

        async def caller() -> None:
            while time.monotonic() < end:
                num_iid = next(next_id, None)
                if num_iid is None:
                    return
                t0 = time.monotonic()
                lookup = (await gw.get_many([num_iid]))[num_iid]
                t1 = time.monotonic()
                if t1 > end:
                    return  # answered after the window: not counted
                latencies.add(t1 - t0)
                if lookup.error is not None:
                    outcomes[type(lookup.error).__name__] += 1
                elif lookup.source is Source.UPSTREAM:
                    outcomes["fresh"] += 1

        poller = asyncio.create_task(_poll_stats(sim, 1.0, samples))
        workers = [asyncio.create_task(caller()) for _ in range(callers)]
        while time.monotonic() < end:
            await asyncio.sleep(0.25)
            progress.update(task, completed=min(duration_s, time.monotonic() - start))
        stats = await sim.stats()  # the judge, at the end of the window
        poller.cancel()
        await asyncio.gather(*workers, poller, return_exceptions=True)
        snapshot = gw.snapshot()
    progress.update(task, completed=duration_s)
    keys = stats["keys"]
    return {
        "duration_s": duration_s,
        "code7": sum(k["code7"] for k in keys.values()),
        "max_calls_in_1s": max(k["max_calls_in_1s"] for k in keys.values()),
        "ok_calls": sum(k["ok"] for k in keys.values()),
        "ok_calls_per_key": {k: v["ok"] for k, v in keys.items()},
        "items_per_call": round(stats["totals"]["items_per_ok_call"], 2),
        "fresh_lookups": outcomes["fresh"],
        "fresh_lookups_per_s": round(outcomes["fresh"] / duration_s, 1),
        "errors": {k: v for k, v in outcomes.items() if k != "fresh"},
        "latency": latencies.summary_ms(),
        "calls_per_s_per_key": _per_second(samples),
        "batch_sizes": snapshot["dispatcher"]["batch_sizes"],
        "cost": stats["totals"]["cost"],
    }


async def _flood_naive(
    sim: SimProcess,
    progress: Progress,
    ids: list[str],
    duration_s: float,
    callers: int,
    safety_factor: float,
) -> dict[str, Any]:
    """One call per lookup, keys round-robin, each paced at qps × safety; no batch, no cache."""
    task = progress.add_task("cold flood: naive client", total=duration_s)
    creds = [Credential(app_key=k, secret=s) for k, s in sim.spec.app_keys()]
    interval = 1.0 / (sim.spec.qps * safety_factor)
    next_at = [0.0] * len(creds)
    turn = itertools.cycle(range(len(creds)))
    lock = asyncio.Lock()
    next_id = iter(ids)
    outcomes: Counter[str] = Counter()
    latencies = LatencyLog()
    async with TopProvider(url=sim.url) as provider:
        start = time.monotonic()
        end = start + duration_s

        async def caller() -> None:
            while time.monotonic() < end:
                num_iid = next(next_id, None)
                if num_iid is None:
                    return
                t0 = time.monotonic()
                async with lock:  # the brief's pacing: one slot per interval per key
                    k = next(turn)
                    at = max(t0, next_at[k])
                    next_at[k] = at + interval
                await asyncio.sleep(at - t0)
                if time.monotonic() > end:
                    return
                try:
                    await provider.fetch([num_iid], creds[k])
                    outcome = "fresh"
                except Exception as exc:  # the naive client only counts what went wrong
                    outcome = type(exc).__name__
                t1 = time.monotonic()
                if t1 <= end:
                    outcomes[outcome] += 1
                    latencies.add(t1 - t0)

        workers = [asyncio.create_task(caller()) for _ in range(callers)]
        while time.monotonic() < end:
            await asyncio.sleep(0.25)
            progress.update(task, completed=min(duration_s, time.monotonic() - start))
        stats = await sim.stats()
        for w in workers:
            w.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
    progress.update(task, completed=duration_s)
    keys = stats["keys"]
    return {
        "duration_s": duration_s,
        "code7": sum(k["code7"] for k in keys.values()),
        "max_calls_in_1s": max(k["max_calls_in_1s"] for k in keys.values()),
        "ok_calls": sum(k["ok"] for k in keys.values()),
        "items_per_call": round(stats["totals"]["items_per_ok_call"], 2),
        "fresh_lookups": outcomes["fresh"],
        "fresh_lookups_per_s": round(outcomes["fresh"] / duration_s, 1),
        "errors": {k: v for k, v in outcomes.items() if k != "fresh"},
        "latency": latencies.summary_ms(),
        "note": "the naive client's callers wait in line for a slot; its latency is queueing",
    }


async def duplicate_burst(progress: Progress, *, callers: int = 50) -> dict[str, Any]:
    """``callers`` concurrent lookups of one cold id: one upstream id, all answered together."""
    task = progress.add_task(f"duplicate burst: {callers} lookups of one cold id", total=2)
    spec = SimSpec(keys=1, latency_ms=(300.0, 300.0), catalog_size=10_000)
    async with SimProcess(spec) as sim:
        ids = await sim.catalog(10)
        async with Gateway(gateway_settings(sim)) as gw:
            # one RTT measured in the same run, on another id, as the reference
            t0 = time.monotonic()
            await gw.get(ids[0])
            rtt = time.monotonic() - t0
            progress.update(task, advance=1)
            before = (await sim.stats())["totals"]["items_requested"]

            async def one() -> float:
                t = time.monotonic()
                await gw.get(ids[1])
                return time.monotonic() - t

            latencies = LatencyLog()
            latencies.extend(await asyncio.gather(*(one() for _ in range(callers))))
        after = (await sim.stats())["totals"]["items_requested"]
    progress.update(task, advance=1)
    upstream_ids = after - before
    worst = max(latencies.values)
    checks = [
        Check("upstream ids for the burst", "= 1", upstream_ids, upstream_ids == 1),
        Check(
            "slowest of the burst",
            f"<= RTT + 50 ms = {(rtt + 0.05) * 1000:.0f} ms",
            round(worst * 1000, 1),
            worst <= rtt + 0.05,
        ),
    ]
    return {
        "scenario": "duplicate_burst",
        "callers": callers,
        "rtt_ms": round(rtt * 1000, 1),
        "upstream_ids": upstream_ids,
        "latency": latencies.summary_ms(),
        "checks": [c.as_dict() for c in checks],
    }
