"""Six keys on one egress capped at 20 calls/s: the cap holds, and the pool uses it.

Starts the simulator (six keys × 10 calls/s, 200–500 ms a call) and ``--replicas`` ``taogate
serve`` processes (with more than one, a redis-server of its own for the shared limits) whose one
egress binds 127.0.0.2 with ``max_qps = 20``. The keys together could make 54 calls/s (10 × 0.9
each), so the egress is what limits. A cold flood of distinct ids keeps a backlog for
``--seconds`` (batches of 10 ids from 120 callers). The simulator's per-IP view judges: the
most calls from the egress's address in any one-second window (target ≤ 20), and the calls per
second it saw over the run after the first window (target ≥ 95 % of 20). Writes
bench/results/egress_cap.json and .png.

    .venv/bin/python bench/egress_cap.py [--seconds 30] [--replicas 1]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

sys.path.insert(0, str(Path(__file__).parent))
from _common import Flood, rate_series, run_and_report
from taogate.bench import GatewayProcess, SimProcess, SimSpec
from taogate.testing import RedisServer

TOKEN = "bench-egress-cap-client-token-0001-abcdef"
CAP = 20
EGRESS_IP = "127.0.0.2"
# lookups of several ids at once (a comparison page, a watch list refresh): 120 callers x 10
# ids keep 1,200 ids waiting, a backlog for 800 ids/s, with the gateway far from saturated
CALLERS = 120
IDS_PER_REQUEST = 10
SETTLE_S = 2.0  # the first window (a new shared state waits one) is left out of the rate


async def run(args: argparse.Namespace) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="taogate-egress-"))
    redis = RedisServer(tmp) if args.replicas > 1 else None
    if redis is not None:
        redis.start()
    spec = SimSpec(keys=6, qps=10.0, catalog_size=200_000)
    egress = f'[[egress]]\nname = "nat"\nlocal_address = "{EGRESS_IP}"\nmax_qps = {CAP}\n'
    prefix = "egress" + os.urandom(3).hex()  # one for every replica: they share the limits
    try:
        async with SimProcess(spec) as sim:
            ids = await sim.catalog(150_000)
            gws = [
                GatewayProcess(
                    sim,
                    token=TOKEN,
                    redis_url=None if redis is None else redis.url,
                    redis_prefix=prefix,
                    extra_toml=egress + "\n[jobs]\nenabled = false\n",
                    log=tmp / f"replica-{i}.log",
                )
                for i in range(args.replicas)
            ]
            for gw in gws:
                await gw.__aenter__()
            try:
                return await flood(args, sim, gws, ids)
            finally:
                for gw in gws:
                    await gw.__aexit__()
    finally:
        if redis is not None:
            redis.stop()


async def flood(
    args: argparse.Namespace, sim: SimProcess, gws: list[GatewayProcess], ids: list[str]
) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    connector = aiohttp.TCPConnector(limit=CALLERS + 50)
    timeout = aiohttp.ClientTimeout(total=60)
    timeline: list[dict[str, Any]] = []
    flood = Flood(gws, ids, IDS_PER_REQUEST, CALLERS)
    async with aiohttp.ClientSession(connector=connector, headers=headers, timeout=timeout) as s:
        await sim.reset()
        start = time.monotonic()
        end = start + args.seconds

        async def observer() -> None:
            with Progress(
                TextColumn("egress flood"),
                BarColumn(),
                TimeElapsedColumn(),
                TextColumn("{task.fields[calls]}"),
            ) as bar:
                task = bar.add_task("", total=args.seconds, calls="")
                while (now := time.monotonic()) < end:
                    stats = await sim.stats()
                    ip = stats["ips"].get(EGRESS_IP, {"calls": 0, "max_calls_in_1s": 0})
                    timeline.append({"t": round(now - start, 2), "calls": ip["calls"]})
                    bar.update(task, completed=now - start, calls=f"{ip['calls']} calls")
                    await asyncio.sleep(0.25)

        await asyncio.gather(observer(), flood.run(s, end))
        stats = await sim.stats()
    return judge(args, stats, timeline, flood.statuses)


def judge(
    args: argparse.Namespace,
    stats: dict[str, Any],
    timeline: list[dict[str, Any]],
    outcomes: dict[int, int],
) -> dict[str, Any]:
    ips = stats["ips"]
    ip = ips.get(EGRESS_IP, {"calls": 0, "max_calls_in_1s": 0})
    settled = next(x for x in timeline if x["t"] >= SETTLE_S)
    last = timeline[-1]
    rate = (last["calls"] - settled["calls"]) / (last["t"] - settled["t"])
    keys = stats["keys"]
    code7 = sum(k["code7"] for k in keys.values())
    per_key = {k: v["calls"] for k, v in keys.items()}
    checks = [
        {
            "name": f"most calls from the egress ({EGRESS_IP}) in any 1 s, all keys",
            "target": f"<= {CAP}",
            "measured": ip["max_calls_in_1s"],
            "passed": ip["max_calls_in_1s"] <= CAP,
        },
        {
            "name": f"calls/s through the egress after the first {SETTLE_S:g} s",
            "target": f">= 95 % of {CAP} = {0.95 * CAP:g}",
            "measured": f"{rate:.2f} ({100 * rate / CAP:.1f} %)",
            "passed": rate >= 0.95 * CAP,
        },
        {
            "name": "every call left through the egress",
            "target": f"only {EGRESS_IP}",
            "measured": sorted(ips),
            "passed": set(ips) == {EGRESS_IP},
        },
        {"name": "code 7 answers", "target": "= 0", "measured": code7, "passed": code7 == 0},
    ]
    # calls per second, 2 s average, for the plot
    series = rate_series([(x["t"], x["calls"]) for x in timeline])
    return {
        "seconds": args.seconds,
        "replicas": args.replicas,
        "cap": CAP,
        "keys": len(keys),
        "rate_per_s": round(rate, 3),
        "use_of_cap": round(rate / CAP, 4),
        "ips": ips,
        "calls_per_key": per_key,
        "http_outcomes": {str(k): v for k, v in outcomes.items()},
        "series": series,
        "checks": checks,
    }


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4), gridspec_kw={"width_ratios": [3, 2]})
    ts, rates = zip(*result["series"], strict=True) if result["series"] else ((), ())
    left.plot(ts, rates, label="calls/s through the egress (2 s average)")
    left.axhline(CAP, color="red", linestyle="--", label=f"egress cap ({CAP} in any 1 s)")
    left.axhline(0.95 * CAP, color="grey", linestyle=":", label="95 % of the cap")
    left.set_ylim(0, CAP * 1.3)
    left.set_xlabel("second of the run")
    left.set_ylabel("calls per second")
    peak = result["ips"].get(EGRESS_IP, {}).get("max_calls_in_1s")
    left.set_title(
        f"{result['keys']} keys x 10 qps on one {CAP}/s egress: "
        f"{100 * result['use_of_cap']:.1f} % used, peak {peak} in 1 s"
    )
    left.legend(fontsize="small", loc="lower right")
    keys = result["calls_per_key"]
    right.bar([f"{k[:3]}…{k[-2:]}" for k in keys], list(keys.values()))
    right.set_title("calls per key (spread over the keys)")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--replicas", type=int, default=1)
    parser.add_argument("--out", default="egress_cap", help="results name under bench/results/")
    args = parser.parse_args()
    run_and_report("egress_cap.py", args.out, lambda: asyncio.run(run(args)), plot)


if __name__ == "__main__":
    main()
