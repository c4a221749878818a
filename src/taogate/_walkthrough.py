"""``taogate demo --walkthrough``: the simulator and a walkthrough of signed calls against it.

It shows the protocol layer at work, below the gateway: signing, 40-id batches, exact prices,
the error classes, and the simulator's own accounting of what was sent.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any

from rich.console import Console
from rich.table import Table

from taogate._errors import ItemUnreadable, RateLimited, UpstreamError
from taogate._model import Item
from taogate._settings import SimSettings
from taogate.providers.base import Credential
from taogate.providers.top import INFO_GET, UPGRADE_GET, TopProvider
from taogate.testing import SimKey, Simulator

__all__ = ["run_walkthrough"]

QPS = 10.0


def _item_line(item: Item | ItemUnreadable) -> str:
    if isinstance(item, ItemUnreadable):
        return str(item)
    coupon = (
        f", coupon {item.coupon_amount} off from {item.coupon_start_fee}"
        if item.coupon_amount is not None
        else ""
    )
    return (
        f"{item.num_iid} {item.title[:16]!r} list {item.reserve_price} → "
        f"discount {item.zk_final_price}{coupon} → [bold]pays {item.final_price}[/] "
        f"({item.final_price_basis})"
    )


async def run_walkthrough(console: Console, *, budget_s: float = 60.0) -> None:
    """Run the walkthrough; every step is bounded and the whole run stops by itself."""
    started = time.monotonic()
    keys = [SimKey(app_key=f"2990000{i}", secret=secrets.token_hex(16), qps=QPS) for i in (1, 2)]
    creds = [Credential(app_key=k.app_key, secret=k.secret, qps=k.qps) for k in keys]
    settings = SimSettings(catalog_size=20_000, seed=7, ban_s=3.0, price_changes_per_hour=30.0)
    console.rule("[bold]taogate demo[/] — the TOP simulator and signed calls")
    async with Simulator(keys, settings=settings, port=0) as sim:
        console.print(
            f"simulator on {sim.base_url}: 2 app keys at {QPS:g} calls/s each, "
            f"{settings.catalog_size:,} items, latency "
            f"{settings.latency_ms[0]:g}-{settings.latency_ms[1]:g} ms",
            highlight=False,
        )
        ids = sim.catalog.ids()
        info = TopProvider(url=sim.url, method=INFO_GET)
        upgrade = TopProvider(url=sim.url, method=UPGRADE_GET, simplify=True)
        try:
            steps: list[tuple[str, Callable[[], Awaitable[str]]]] = [
                ("one signed call, one id", lambda: _one(info, creds[0], ids[0])),
                ("one call carries 40 ids", lambda: _forty(info, creds[0], ids[1:41])),
                (
                    "upgrade API: 20 ids, final_promotion_price",
                    lambda: _forty(upgrade, creds[0], ids[41:61]),
                ),
                ("a wrong secret", lambda: _wrong_secret(info, keys[0].app_key, ids[0])),
                ("a burst past the key's limit", lambda: _burst(info, creds[1], ids)),
                ("an upstream fault", lambda: _fault(sim, info, creds[0], ids[0])),
            ]
            for n, (title, step) in enumerate(steps, 1):
                left = budget_s - (time.monotonic() - started)
                if left <= 0:
                    console.print("[yellow]time budget used up; stopping early[/]")
                    break
                with console.status(f"step {n}: {title}…"):
                    t0 = time.perf_counter()
                    text = await asyncio.wait_for(step(), timeout=left)
                    ms = (time.perf_counter() - t0) * 1000
                console.print(
                    f"[bold cyan]{n}. {title}[/] ({ms:.0f} ms)\n   {text}", highlight=False
                )
        finally:
            await info.aclose()
            await upgrade.aclose()
        _summary(console, sim.stats(), time.monotonic() - started)


async def _one(provider: TopProvider, cred: Credential, num_iid: str) -> str:
    params = provider.build_params([num_iid], cred)
    shown = ", ".join(f"{k}={v}" for k, v in params.items() if k not in ("sign", "app_key"))
    items = await provider.fetch([num_iid], cred)
    found = _item_line(items[num_iid]) if num_iid in items else f"{num_iid}: not found"
    return (
        f"sent {shown}, app_key={cred.masked}, sign={params['sign'][:12]}… "
        f"(timestamp in Beijing time)\n   {found}"
    )


async def _forty(provider: TopProvider, cred: Credential, ids: list[str]) -> str:
    items = await provider.fetch(ids, cred)
    lines = [_item_line(item) for item in list(items.values())[:3]]
    absent = len(ids) - len(items)
    return (
        f"{len(ids)} ids in one call → {len(items)} items, {absent} absent (negative answers "
        "count too)\n   " + "\n   ".join(lines)
    )


async def _wrong_secret(provider: TopProvider, app_key: str, num_iid: str) -> str:
    try:
        await provider.fetch([num_iid], Credential(app_key=app_key, secret=secrets.token_hex(8)))
    except UpstreamError as exc:
        return f"{type(exc).__name__}: {exc} → the pool will quarantine this key"
    return "unexpectedly accepted"  # pragma: no cover - the simulator checks signatures


async def _burst(provider: TopProvider, cred: Credential, ids: list[str]) -> str:
    calls = int(QPS * 1.5)
    results = await asyncio.gather(
        *(provider.fetch([ids[100 + i]], cred) for i in range(calls)), return_exceptions=True
    )
    ok = sum(1 for r in results if isinstance(r, dict))
    banned = [r for r in results if isinstance(r, RateLimited)]
    ban = max((r.retry_after for r in banned), default=0.0)
    return (
        f"{calls} calls at once on a {QPS:g}-qps key: {ok} ok, {len(banned)} refused with code 7; "
        f"ban {ban:g} s (parsed from sub_msg) — taogate's pool never sends these"
    )


async def _fault(sim: Simulator, provider: TopProvider, cred: Credential, num_iid: str) -> str:
    sim.set_fault("malformed", 2.0)
    try:
        await provider.fetch([num_iid], cred)
    except UpstreamError as exc:
        return f"malformed body → {type(exc).__name__}: {exc} (retried within budget)"
    finally:
        sim.set_fault("malformed", 0.0)
    return "fault not seen"  # pragma: no cover


def _summary(console: Console, stats: dict[str, Any], elapsed: float) -> None:
    table = Table(title="what the simulator saw (/_sim/stats)")
    for column in ("key", "calls", "ok", "code 7", "most in 1 s", "items/ok call", "cost"):
        table.add_column(column, justify="right")
    for key, row in stats["keys"].items():
        table.add_row(
            key[:3] + "…" + key[-3:],
            str(row["calls"]),
            str(row["ok"]),
            str(row["code7"]),
            str(row["max_calls_in_1s"]),
            f"{row['items_per_ok_call']:.1f}",
            str(row["cost"]),
        )
    console.print(table)
    console.print(
        f"done in {elapsed:.1f} s. One 40-id call answers what 40 single calls would: at "
        f"{QPS:g} calls/s a key serves up to {QPS * 40:g} fresh lookups/s when batches are full.",
        highlight=False,
    )
