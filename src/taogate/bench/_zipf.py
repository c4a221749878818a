"""Hot Zipf traffic, open loop, with prices changing; optionally a simulator outage in the middle.

Lookups arrive at a fixed rate whatever the gateway does (open loop), ids drawn from Zipf(s) over
the catalog. A judge samples answers and asks the simulator's truth route soon after: an answer
is "within max_age of the truth" when its price is the truth now, or the truth changed after the
answer was fetched (so it was the truth then, at most ``age_s`` ≤ ``max_age`` ago).
"""

from __future__ import annotations

import asyncio
import bisect
import itertools
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from rich.progress import Progress

from taogate import BreakerState, Gateway, Lookup, Source
from taogate.bench._harness import Check, LatencyLog, SimProcess, SimSpec, gateway_settings

__all__ = ["ZipfIds", "hot_zipf"]


class ZipfIds:
    """Ids drawn from Zipf(s): the id of rank r has weight r^-s; ranks scattered over ids."""

    def __init__(self, ids: list[str], s: float, rng: random.Random) -> None:
        shuffled = ids[:]
        rng.shuffle(shuffled)
        self._ids = shuffled
        self._cumulative = list(itertools.accumulate(r**-s for r in range(1, len(ids) + 1)))
        self._rng = rng

    def draw(self) -> str:
        x = self._rng.random() * self._cumulative[-1]
        return self._ids[min(bisect.bisect_left(self._cumulative, x), len(self._ids) - 1)]


@dataclass(slots=True)
class _Second:
    lookups: int = 0
    hits: int = 0
    upstream: int = 0
    stale: int = 0
    errors: int = 0


@dataclass(slots=True)
class _Run:
    start: float
    max_age_s: float
    seconds: list[_Second] = field(default_factory=list)
    latency: LatencyLog = field(default_factory=LatencyLog)
    samples: list[tuple[str, str, float, float]] = field(default_factory=list)
    judged: Counter[str] = field(default_factory=Counter)
    answered_before_outage: set[str] = field(default_factory=set)
    outage_cached: Counter[str] = field(default_factory=Counter)
    outage_uncached: LatencyLog = field(default_factory=LatencyLog)
    outage_uncached_after_open: LatencyLog = field(default_factory=LatencyLog)
    first_upstream_after_outage: float | None = None
    breaker_open_at: float | None = None
    answers_seen: int = 0
    dropped: int = 0

    def second(self, now: float) -> _Second:
        index = int(now - self.start)
        while len(self.seconds) <= index:
            self.seconds.append(_Second())
        return self.seconds[index]


async def hot_zipf(
    progress: Progress,
    *,
    duration_s: float = 60.0,
    rate: float = 2000.0,
    universe: int = 100_000,
    s: float = 1.1,
    max_age_s: float = 30.0,
    price_changes_per_hour: float = 60.0,
    outage: tuple[float, float] | None = None,
    max_in_flight: int = 20_000,
) -> dict[str, Any]:
    """Run the scenario; ``outage`` = (start, length) in seconds from the run's start."""
    name = "outage" if outage else "hot_zipf"
    spec = SimSpec(keys=3, catalog_size=universe, price_changes_per_hour=price_changes_per_hour)
    task = progress.add_task(f"{name}: Zipf({s:g}) at {rate:g} lookups/s", total=duration_s)
    async with SimProcess(spec) as sim:
        ids = await sim.catalog(universe)
        zipf = ZipfIds(ids, s, random.Random(3))
        settings = gateway_settings(sim, max_age_s=max_age_s, max_stale_s=3600.0)
        async with Gateway(settings) as gw:
            run = _Run(start=time.monotonic(), max_age_s=max_age_s)
            stats0 = await sim.stats()
            judge = asyncio.create_task(_judge(sim, run))
            in_flight: set[asyncio.Task[None]] = set()
            end = run.start + duration_s
            issued = 0
            outage_started = False
            while (now := time.monotonic()) < end:
                if outage and not outage_started and now - run.start >= outage[0]:
                    await sim.fault("outage", outage[1])
                    outage_started = True
                due = int((now - run.start) * rate) - issued
                for _ in range(due):
                    if len(in_flight) >= max_in_flight:
                        run.dropped += 1
                        continue
                    t = asyncio.create_task(_one(gw, zipf.draw(), run, outage))
                    in_flight.add(t)
                    t.add_done_callback(in_flight.discard)
                issued += due
                progress.update(task, completed=min(duration_s, now - run.start))
                await asyncio.sleep(0.005)
            stats1 = await sim.stats()
            await asyncio.gather(*in_flight, return_exceptions=True)
            judge.cancel()
            await asyncio.gather(judge, return_exceptions=True)
            snapshot = gw.snapshot()
            breaker_opened = gw.breaker.opened_count
            rtt = gw.dispatcher.rtt_estimate
            open_s = gw.breaker.policy.open_s
    progress.update(task, completed=duration_s)
    return _report(
        name,
        run,
        stats0,
        stats1,
        snapshot,
        duration_s,
        rate,
        s,
        universe,
        outage,
        breaker_opened,
        rtt,
        open_s,
        spec,
    )


async def _one(gw: Gateway, num_iid: str, run: _Run, outage: tuple[float, float] | None) -> None:
    t0 = time.monotonic()
    lookup: Lookup = (await gw.get_many([num_iid]))[num_iid]
    t1 = time.monotonic()
    run.latency.add(t1 - t0)
    sec = run.second(t1)
    sec.lookups += 1
    if lookup.error is not None:
        sec.errors += 1
    elif lookup.stale:
        sec.stale += 1
    elif lookup.source is Source.L1:
        sec.hits += 1
    else:
        sec.upstream += 1
    if outage is not None:
        if run.breaker_open_at is None and gw.breaker.state is BreakerState.OPEN:
            run.breaker_open_at = t1 - run.start
        _outage_bookkeeping(num_iid, lookup, t0 - run.start, t1 - t0, run, outage)
    item = lookup.item
    if item is None or lookup.stale or item.final_price is None:
        return
    run.answers_seen += 1
    if run.answers_seen % 10 == 0 and len(run.samples) < 50_000:  # every tenth answer is judged
        run.samples.append((num_iid, str(item.final_price), time.time(), lookup.age_s))


def _outage_bookkeeping(
    num_iid: str, lookup: Lookup, at: float, took: float, run: _Run, outage: tuple[float, float]
) -> None:
    begin, length = outage
    if at < begin:
        if lookup.error is None:
            run.answered_before_outage.add(num_iid)
        return
    if at < begin + length:
        if num_iid in run.answered_before_outage:
            kind = "error" if lookup.error else ("stale" if lookup.stale else "fresh_l1")
            run.outage_cached[kind] += 1
        elif lookup.error is not None:
            run.outage_uncached.add(took)
            if run.breaker_open_at is not None and at >= run.breaker_open_at:
                run.outage_uncached_after_open.add(took)
        return
    if (
        run.first_upstream_after_outage is None
        and lookup.source is Source.UPSTREAM
        and lookup.error is None
    ):
        run.first_upstream_after_outage = at + took - (begin + length)


async def _judge(sim: SimProcess, run: _Run) -> None:
    """Compare sampled answers with the truth, half a second after they were given."""
    done = 0
    while True:
        await asyncio.sleep(0.5)
        batch = run.samples[done:]
        done += len(batch)
        if not batch:
            continue
        truth = await sim.truth(sorted({s[0] for s in batch}))
        for num_iid, price, answered_at, age in batch:
            row = truth.get(num_iid)
            if row is None:
                run.judged["absent_now"] += 1
            elif row["final_price"] == price:
                run.judged["matches_truth"] += 1
            elif row["last_changed"] >= answered_at - age - 0.5 and age <= run.max_age_s:
                run.judged["changed_since_fetch"] += 1
            else:
                run.judged["wrong"] += 1


def _report(
    name: str,
    run: _Run,
    stats0: dict[str, Any],
    stats1: dict[str, Any],
    snapshot: dict[str, Any],
    duration_s: float,
    rate: float,
    s: float,
    universe: int,
    outage: tuple[float, float] | None,
    breaker_opened: int,
    rtt: float,
    open_s: float,
    spec: SimSpec,
) -> dict[str, Any]:
    secs = run.seconds[: int(duration_s)]
    lookups = sum(x.lookups for x in secs)
    hits = sum(x.hits for x in secs)
    tail = secs[len(secs) // 2 :]
    tail_hit = sum(x.hits for x in tail) / max(1, sum(x.lookups for x in tail))
    judged_ok = run.judged["matches_truth"] + run.judged["changed_since_fetch"]
    judged_all = judged_ok + run.judged["wrong"]
    fresh_share = judged_ok / judged_all if judged_all else 0.0
    calls = stats1["totals"]["calls"] - stats0["totals"]["calls"]
    quota = spec.keys * spec.qps
    keys = stats1["keys"]
    result: dict[str, Any] = {
        "scenario": name,
        "duration_s": duration_s,
        "rate": rate,
        "zipf_s": s,
        "universe": universe,
        "max_age_s": run.max_age_s,
        "price_changes_per_hour": spec.price_changes_per_hour,
        "lookups": lookups,
        "dropped_by_load_generator": run.dropped,
        "hit_ratio": round(hits / max(1, lookups), 4),
        "hit_ratio_second_half": round(tail_hit, 4),
        "latency": run.latency.summary_ms(),
        "judged": dict(run.judged),
        "within_max_age_of_truth": round(fresh_share, 5),
        "upstream_calls_per_s": round(calls / duration_s, 2),
        "quota_calls_per_s": quota,
        "code7": sum(k["code7"] for k in keys.values()),
        "max_calls_in_1s": max(k["max_calls_in_1s"] for k in keys.values()),
        "items_per_call": round(stats1["totals"]["items_per_ok_call"], 2),
        "refresh_ahead": snapshot["refresh_ahead"],
        "per_second": [
            {"hits": x.hits, "upstream": x.upstream, "stale": x.stale, "errors": x.errors}
            for x in secs
        ],
    }
    checks = [
        Check("code 7 answers", "= 0", result["code7"], result["code7"] == 0),
        Check(
            "upstream calls/s",
            f"<= quota {quota:g}",
            result["upstream_calls_per_s"],
            result["upstream_calls_per_s"] <= quota,
        ),
    ]
    if outage is None:
        checks.append(
            Check(
                "answers within max_age of the truth",
                ">= 99.5 %",
                f"{fresh_share:.2%} of {judged_all}",
                fresh_share >= 0.995,
            )
        )
    else:
        begin, length = outage
        cached = sum(run.outage_cached.values())
        answered = cached - run.outage_cached["error"]
        p99_all = run.outage_uncached.percentile(99)
        p99_open = run.outage_uncached_after_open.percentile(99)
        recovery = run.first_upstream_after_outage
        opened_at = run.breaker_open_at
        result["outage"] = {
            "start_s": begin,
            "length_s": length,
            "breaker_opened_at_s": None if opened_at is None else round(opened_at, 3),
            "breaker_opened_times": breaker_opened,
            "cached_lookups": dict(run.outage_cached),
            "uncached_failures": run.outage_uncached.summary_ms(),
            "uncached_failures_after_breaker_opened": run.outage_uncached_after_open.summary_ms(),
            "recovery_s": None if recovery is None else round(recovery, 3),
            "breaker_open_s": open_s,
            "rtt_s": round(rtt, 3),
        }
        checks += [
            Check(
                "cached ids answered during the outage",
                "100 % (fresh or stale-flagged)",
                f"{answered}/{cached}",
                cached > 0 and answered == cached,
            ),
            Check(
                "uncached failures p99 once the breaker is open",
                "<= 50 ms",
                None if p99_open is None else round(p99_open * 1000, 2),
                p99_open is not None and p99_open <= 0.05,
            ),
            Check(
                "uncached failures p99 over the whole outage (incl. detection)",
                "reported",
                None if p99_all is None else round(p99_all * 1000, 1),
                True,
            ),
            Check(
                "recovery after the outage ends",
                f"<= breaker open time + one RTT = {open_s + rtt:.2f} s",
                None if recovery is None else round(recovery, 2),
                recovery is not None and recovery <= open_s + rtt,
            ),
        ]
    result["checks"] = [c.as_dict() for c in checks]
    return result
