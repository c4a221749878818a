"""L1 micro-benchmarks: the cost per id of a cached ``get_many``, and a million-entry L1."""

from __future__ import annotations

import gc
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

from rich.progress import Progress

from taogate import FinalPriceBasis, Gateway, Item, Settings
from taogate.bench._harness import Check
from taogate.cache.memory import MemoryCache
from taogate.testing import FakeProvider

__all__ = ["l1_micro"]


def _rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def _item(i: int) -> Item:
    price = Decimal(f"{10 + i % 990}.{i % 100:02d}")
    return Item(
        num_iid=f"6{i:011d}",
        title=f"春季新款纯棉宽松休闲长裤男女同款{i % 97}",
        shop=f"旗舰店{i % 5000}",
        reserve_price=price + 20,
        zk_final_price=price,
        final_price=price,
        final_price_basis=FinalPriceBasis.DISCOUNT,
        pict_url=f"https://img.alicdn.com/i{i % 1000}/{i}.jpg",
        seller_id=str(2_200_000_000 + i % 100_000),
        user_type=i % 2,
        volume=i % 10_000,
    )


async def l1_micro(
    progress: Progress, *, ids: int = 1000, rounds: int = 300, big: int = 1_000_000
) -> dict[str, Any]:
    task = progress.add_task("L1 micro-benchmarks", total=2)
    wanted = [f"6{i:011d}" for i in range(ids)]
    provider = FakeProvider(items={i: _item(n) for n, i in enumerate(wanted)})
    settings = Settings(
        credentials=[{"app_key": "40000001", "secret": "micro-secret", "qps": 1000}]
    )
    async with Gateway(settings, provider=provider) as gw:
        await gw.get_many(wanted)  # fill L1 through the real path
        for _ in range(20):  # warm up
            await gw.get_many(wanted)
        t0 = time.perf_counter()
        for _ in range(rounds):
            result = await gw.get_many(wanted)
        elapsed = time.perf_counter() - t0
        assert all(r.item is not None for r in result.values())
    per_id_us = elapsed / (rounds * ids) * 1e6
    progress.update(task, advance=1)

    gc.collect()
    rss0 = _rss_bytes()
    cache = MemoryCache(max_entries=big, max_bytes=2**40, clock=time.monotonic)
    extra = big // 5
    t0 = time.perf_counter()
    for n in range(big + extra):
        item = _item(n)
        cache.put(item.num_iid, item, fresh_s=600.0, keep_s=3600.0)
    fill_s = time.perf_counter() - t0
    gc.collect()
    rss1 = _rss_bytes()
    entries, approx = len(cache), cache.bytes
    del cache
    gc.collect()

    # the byte bound: the same items into an L1 capped at 64 MiB
    cap = 64 * 1024 * 1024
    rss2 = _rss_bytes()
    capped = MemoryCache(max_entries=big, max_bytes=cap, clock=time.monotonic)
    for n in range(big // 4):
        item = _item(n)
        capped.put(item.num_iid, item, fresh_s=600.0, keep_s=3600.0)
    gc.collect()
    capped_rss = _rss_bytes() - rss2
    capped_entries, capped_bytes = len(capped), capped.bytes
    del capped
    progress.update(task, advance=1)
    checks = [
        Check(
            "get_many of 1,000 cached ids, per id", "<= 3 µs", round(per_id_us, 3), per_id_us <= 3
        ),
        Check(
            f"L1 bound after {big + extra:,} puts",
            f"<= {big:,} entries",
            entries,
            entries <= big,
        ),
    ]
    checks.append(
        Check(
            "L1 byte bound (64 MiB cap)",
            "approx bytes <= cap",
            capped_bytes,
            capped_bytes <= cap,
        )
    )
    return {
        "scenario": "l1_micro",
        "get_many_ids": ids,
        "rounds": rounds,
        "per_id_us": round(per_id_us, 3),
        "big": {
            "max_entries": big,
            "puts": big + extra,
            "entries": entries,
            "approx_bytes": approx,
            "rss_growth_bytes": rss1 - rss0,
            "rss_bytes_per_entry": round((rss1 - rss0) / max(1, entries), 1),
            "approx_bytes_per_entry": round(approx / max(1, entries), 1),
            "fill_s": round(fill_s, 2),
        },
        "byte_capped": {
            "max_bytes": cap,
            "puts": big // 4,
            "entries": capped_entries,
            "approx_bytes": capped_bytes,
            "rss_growth_bytes": capped_rss,
        },
        "checks": [c.as_dict() for c in checks],
    }
