"""Every platform limit as a scope, judged by the simulator (docs/limits.md).

Three scenarios against ``taogate sim`` (200–500 ms a call), each with ``taogate serve`` in its
own process:

- **account** — six keys of 10 calls/s under one promoter account capped at 40 calls/s (in the
  simulator and in ``[[accounts]]``), flooded with cold ids for ``--seconds``; once with one
  replica and once with three on a redis-server of their own. The simulator judges: the most
  calls of the account in any one second (≤ 40), code 15 / ``9100`` and code 7 answers (0), and
  the ok calls after the first ``SETTLE_S`` seconds (≥ 95 % of 40 × safety_factor per second).
- **whitelist** — two egresses (local addresses 127.0.0.2 = ``a`` and 127.0.0.3 = ``b``); one
  key is assigned to ``a`` but whitelisted only on 127.0.0.3. The key must be serving through
  ``b`` within 2 s, with at most 3 code 11 answers in total, and never be quarantined (the
  gateway's ``/v1/admin/keys`` is polled throughout).
- **method** — six keys flooded; the simulator bans the API method for every key for 3 s once
  (a fault). The ban is waited out once on every key: no code 7 after it ends, no key's rate cut,
  no key blamed.

Writes bench/results/scopes.json and .png.

    .venv/bin/python bench/scopes.py [--seconds 30] [--only account|whitelist|method]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

sys.path.insert(0, str(Path(__file__).parent))
from _common import Flood, rate_series, run_and_report
from taogate import mask_id
from taogate.bench import ACCOUNT, GatewayProcess, SimProcess, SimSpec
from taogate.testing import RedisServer

TOKEN = "bench-scopes-client-token-0001-abcdefgh"
ACCOUNT_QPS = 40
SAFETY = 0.9
SETTLE_S = 2.0  # the first window (a new shared state waits one) is left out of the rate
CALLERS = 120
IDS_PER_REQUEST = 10
EGRESS_A, EGRESS_B = "127.0.0.2", "127.0.0.3"
METHOD_BAN_S = 3.0
BAN_AT_S = 4.0


async def watch(
    label: str,
    seconds: float,
    sample: Callable[[float], Awaitable[str]],
    every_s: float = 0.1,
) -> None:
    """Call ``sample(t)`` every ``every_s`` for ``seconds``, with a progress bar."""
    start = time.monotonic()
    with Progress(
        TextColumn(label), BarColumn(), TimeElapsedColumn(), TextColumn("{task.fields[note]}")
    ) as bar:
        task = bar.add_task("", total=seconds, note="")
        while (t := time.monotonic() - start) < seconds:
            note = await sample(t)
            bar.update(task, completed=t, note=note)
            await asyncio.sleep(every_s)


def session() -> aiohttp.ClientSession:
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=CALLERS + 50),
        headers={"Authorization": f"Bearer {TOKEN}"},
        timeout=aiohttp.ClientTimeout(total=60),
    )


# --- account --------------------------------------------------------------------------------


async def account(args: argparse.Namespace, replicas: int) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="taogate-scopes-"))
    redis = RedisServer(tmp) if replicas > 1 else None
    if redis is not None:
        redis.start()
    spec = SimSpec(keys=6, qps=10.0, catalog_size=200_000, account_qps=ACCOUNT_QPS)
    prefix = "scopes" + os.urandom(3).hex()
    try:
        async with SimProcess(spec) as sim:
            ids = await sim.catalog(150_000)
            gws = [
                GatewayProcess(
                    sim,
                    token=TOKEN,
                    safety_factor=SAFETY,
                    redis_url=None if redis is None else redis.url,
                    redis_prefix=prefix,
                    extra_toml="[jobs]\nenabled = false\n",
                    log=tmp / f"replica-{i}.log",
                )
                for i in range(replicas)
            ]
            for gw in gws:
                await gw.__aenter__()
            try:
                await sim.reset()
                timeline: list[tuple[float, int]] = []

                async def sample(t: float) -> str:
                    row = (await sim.stats())["accounts"][ACCOUNT]
                    timeline.append((t, row["ok"]))
                    return f"{row['ok']} ok, peak {row['max_calls_in_1s']}/s"

                flood = Flood(gws, ids, IDS_PER_REQUEST, CALLERS)
                async with session() as s:
                    end = time.monotonic() + args.seconds
                    label = f"account, {replicas} replica{'s' if replicas > 1 else ''}"
                    await asyncio.gather(flood.run(s, end), watch(label, args.seconds, sample))
                stats = await sim.stats()
            finally:
                for gw in gws:
                    await gw.__aexit__()
    finally:
        if redis is not None:
            redis.stop()
    row = stats["accounts"][ACCOUNT]
    settled = next(x for x in timeline if x[0] >= SETTLE_S)
    last = timeline[-1]
    rate = (last[1] - settled[1]) / (last[0] - settled[0])
    target = 0.95 * ACCOUNT_QPS * SAFETY
    code7 = stats["totals"]["code7"]
    code15 = row["code15_9100"]
    name = f"account ({replicas} replica{'s' if replicas > 1 else ''})"
    return {
        "replicas": replicas,
        "account": row,
        "ok_per_s": round(rate, 3),
        "calls_per_key": {k: v["calls"] for k, v in stats["keys"].items()},
        "http_statuses": {str(k): v for k, v in sorted(flood.statuses.items())},
        "series": rate_series(timeline),
        "checks": [
            {
                "name": f"{name}: most calls of the account in any 1 s (6 keys x 10 qps)",
                "target": f"<= {ACCOUNT_QPS}",
                "measured": row["max_calls_in_1s"],
                "passed": row["max_calls_in_1s"] <= ACCOUNT_QPS,
            },
            {
                "name": f"{name}: code 15 / 9100 answers",
                "target": "= 0",
                "measured": code15,
                "passed": code15 == 0,
            },
            {
                "name": f"{name}: code 7 answers",
                "target": "= 0",
                "measured": code7,
                "passed": code7 == 0,
            },
            {
                "name": f"{name}: ok calls/s after the first {SETTLE_S:g} s",
                "target": f">= 95 % of {ACCOUNT_QPS} x {SAFETY} = {target:g}",
                "measured": f"{rate:.2f} ({100 * rate / (ACCOUNT_QPS * SAFETY):.1f} %)",
                "passed": rate >= target,
            },
        ],
    }


# --- whitelist ------------------------------------------------------------------------------


async def whitelist(args: argparse.Namespace) -> dict[str, Any]:
    base = SimSpec(keys=2, qps=10.0, catalog_size=200_000)
    (picky, _), (other, _) = base.app_keys()
    spec = SimSpec(
        keys=2,
        qps=10.0,
        catalog_size=200_000,
        sim_toml=f'\n[sim.keys."{picky}"]\nwhitelist = ["{EGRESS_B}"]\n',
    )
    (_, picky_secret), (_, other_secret) = spec.app_keys()
    credentials = (
        f'[[credentials]]\napp_key = "{picky}"\nsecret = "{picky_secret}"\nqps = 10\n'
        f'egress = "a"\n\n'
        f'[[credentials]]\napp_key = "{other}"\nsecret = "{other_secret}"\nqps = 10\n'
        f'egress = "b"\n\n'
    )
    egresses = (
        f'[[egress]]\nname = "a"\nlocal_address = "{EGRESS_A}"\n\n'
        f'[[egress]]\nname = "b"\nlocal_address = "{EGRESS_B}"\n\n'
    )
    seconds = min(args.seconds, 10.0)
    tmp = Path(tempfile.mkdtemp(prefix="taogate-scopes-"))
    async with SimProcess(spec) as sim:
        ids = await sim.catalog(50_000)
        async with GatewayProcess(
            sim,
            token=TOKEN,
            safety_factor=SAFETY,
            admin=True,
            credentials_toml=credentials,
            extra_toml=egresses + "[jobs]\nenabled = false\n",
            log=tmp / "gateway.log",
        ) as gw:
            await sim.reset()
            statuses: set[str] = set()
            first_ok: float | None = None
            admin: dict[str, Any] = {}

            async with session() as s:

                async def sample(t: float) -> str:
                    nonlocal first_ok, admin
                    keys = (await sim.stats())["keys"]
                    if first_ok is None and keys[picky]["ok"] > 0:
                        first_ok = t
                    async with s.get(f"{gw.base_url}/v1/admin/keys") as r:
                        admin = await r.json()
                    row = next(c for c in admin["credentials"] if c["credential"] == mask_id(picky))
                    statuses.add(row["status"])
                    return f"{keys[picky]['code11']} code 11, {keys[picky]['ok']} ok"

                end = time.monotonic() + seconds
                flood = Flood([gw], ids, IDS_PER_REQUEST, CALLERS)
                await asyncio.gather(flood.run(s, end), watch("whitelist", seconds, sample, 0.05))
            stats = await sim.stats()
    row = next(c for c in admin["credentials"] if c["credential"] == mask_id(picky))
    code11 = stats["totals"]["code11"]
    by_ip = {ip: v["calls"] for ip, v in stats["ips"].items()}
    quarantined = sorted(statuses & {"quarantined", "probing"})
    return {
        "first_ok_via_b_s": None if first_ok is None else round(first_ok, 3),
        "code11": code11,
        "statuses_seen": sorted(statuses),
        "key_row": row,
        "calls_by_ip": by_ip,
        "checks": [
            {
                "name": "whitelist: the key serves through egress b (from the start)",
                "target": "within 2 s",
                "measured": "never" if first_ok is None else f"{first_ok:.2f} s",
                "passed": first_ok is not None and first_ok <= 2.0,
            },
            {
                "name": "whitelist: code 11 answers in total",
                "target": "<= 3",
                "measured": code11,
                "passed": code11 <= 3,
            },
            {
                "name": "whitelist: the key is never quarantined",
                "target": "never quarantined or probing, invalid = 0",
                "measured": f"statuses {sorted(statuses)}, invalid {row['invalid']}",
                "passed": not quarantined and row["invalid"] == 0,
            },
        ],
    }


# --- method ---------------------------------------------------------------------------------


async def method(args: argparse.Namespace) -> dict[str, Any]:
    spec = SimSpec(keys=6, qps=10.0, catalog_size=200_000)
    seconds = max(BAN_AT_S + METHOD_BAN_S + 5.0, min(args.seconds, 15.0))
    tmp = Path(tempfile.mkdtemp(prefix="taogate-scopes-"))
    async with SimProcess(spec) as sim:
        ids = await sim.catalog(150_000)
        async with GatewayProcess(
            sim,
            token=TOKEN,
            safety_factor=SAFETY,
            admin=True,
            extra_toml="[jobs]\nenabled = false\n",
            log=tmp / "gateway.log",
        ) as gw:
            await sim.reset()
            banned_at: float | None = None
            timeline: list[tuple[float, int, int]] = []  # t, ok, code 7

            async def sample(t: float) -> str:
                nonlocal banned_at
                if banned_at is None and t >= BAN_AT_S:
                    await sim.fault("method_ban", METHOD_BAN_S)
                    banned_at = t
                totals = (await sim.stats())["totals"]
                timeline.append((t, totals["ok"], totals["code7"]))
                return f"{totals['ok']} ok, {totals['code7']} code 7"

            async with session() as s:
                end = time.monotonic() + seconds
                flood = Flood([gw], ids, IDS_PER_REQUEST, CALLERS)
                await asyncio.gather(flood.run(s, end), watch("method ban", seconds, sample))
                async with s.get(f"{gw.base_url}/v1/admin/keys") as r:
                    admin = await r.json()
            stats = await sim.stats()
    assert banned_at is not None
    ban_end = banned_at + METHOD_BAN_S
    at_end = next(x for x in timeline if x[0] >= ban_end + 0.5)  # answers of the ban are in
    code7_after = timeline[-1][2] - at_end[2]
    ok_after = timeline[-1][1] - at_end[1]
    code7_total = stats["totals"]["code7"]
    halved = [
        c["credential"] for c in admin["credentials"] if c["rate"] < c["configured_qps"] * SAFETY
    ]
    blamed = [c["credential"] for c in admin["credentials"] if c["rate_limited"] > 0]
    method_row: dict[str, Any] = next(
        (r for r in admin.get("scopes", []) if r["kind"] == "method"), {}
    )
    return {
        "ban_s": METHOD_BAN_S,
        "code7_during_ban": code7_total - code7_after,
        "code7_after_ban": code7_after,
        "ok_after_ban": ok_after,
        "method_scope": method_row,
        "series": [[round(t, 2), ok, c7] for t, ok, c7 in timeline],
        "checks": [
            {
                "name": "method: code 7 answers after the ban ended",
                "target": "= 0",
                "measured": code7_after,
                "passed": code7_after == 0,
            },
            {
                "name": "method: the calls go on after the ban",
                "target": "> 0 ok calls",
                "measured": ok_after,
                "passed": ok_after > 0,
            },
            {
                "name": "method: keys whose rate was cut, keys blamed",
                "target": "none, none",
                "measured": f"{halved or 'none'}, {blamed or 'none'}",
                "passed": not halved and not blamed,
            },
        ],
    }


# --- all ------------------------------------------------------------------------------------


async def run(args: argparse.Namespace) -> dict[str, Any]:
    result: dict[str, Any] = {"seconds": args.seconds, "safety_factor": SAFETY}
    checks: list[dict[str, Any]] = []
    if args.only in (None, "account"):
        for replicas in (1, 3):
            part = await account(args, replicas)
            result[f"account_{replicas}"] = part
            checks += part["checks"]
    if args.only in (None, "whitelist"):
        result["whitelist"] = part = await whitelist(args)
        checks += part["checks"]
    if args.only in (None, "method"):
        result["method"] = part = await method(args)
        checks += part["checks"]
    result["checks"] = checks
    return result


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4))
    for replicas in (1, 3):
        part = result.get(f"account_{replicas}")
        if part and part["series"]:
            ts, rates = zip(*part["series"], strict=True)
            left.plot(ts, rates, label=f"ok calls/s, {replicas} replica(s) (2 s average)")
    left.axhline(ACCOUNT_QPS, color="red", linestyle="--", label=f"account cap ({ACCOUNT_QPS})")
    left.axhline(ACCOUNT_QPS * SAFETY, color="grey", linestyle=":", label="x safety_factor")
    left.set_ylim(0, ACCOUNT_QPS * 1.3)
    left.set_xlabel("second of the run")
    left.set_title("6 keys x 10 qps under one 40/s account")
    left.legend(fontsize="small", loc="lower right")
    part = result.get("method")
    if part:
        times = [x[0] for x in part["series"]]
        right.plot(times, [x[1] for x in part["series"]], label="ok calls (total)")
        right.plot(times, [x[2] for x in part["series"]], label="code 7 (total)")
        right.axvspan(
            BAN_AT_S, BAN_AT_S + METHOD_BAN_S, color="orange", alpha=0.2, label="method banned"
        )
        right.set_title("a 3 s ban of the method, waited out once")
        right.set_xlabel("second of the run")
        right.set_yscale("symlog")
        right.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--only", choices=("account", "whitelist", "method"), default=None)
    parser.add_argument("--out", default="scopes", help="results name under bench/results/")
    args = parser.parse_args()
    run_and_report("scopes.py", args.out, lambda: asyncio.run(run(args)), plot)


if __name__ == "__main__":
    main()
