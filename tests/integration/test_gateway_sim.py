"""The gateway against the simulator over loopback HTTP: the quota is never exceeded."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from taogate import Settings
from taogate._gateway import Gateway
from taogate._model import Source
from taogate._settings import SimSettings
from taogate.bench import SimProcess, SimSpec
from taogate.testing import SimKey, Simulator

pytestmark = pytest.mark.integration

KEYS = [SimKey(app_key=f"2000000{i}", secret=f"integration-secret-{i}", qps=10.0) for i in range(3)]


def gateway_settings(
    sim: Simulator,
    *,
    safety: float,
    keys: list[SimKey] = KEYS,
    window_ms: float = 10.0,
    **cache: Any,
) -> Settings:
    return Settings(
        upstream={"url": sim.url},
        credentials=[{"app_key": k.app_key, "secret": k.secret, "qps": k.qps} for k in keys],
        limits={"safety_factor": safety, "deadline_s": 10.0, "batch_window_ms": window_ms},
        cache={"max_age_s": 600.0, **cache},
    )


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    settings = SimSettings(latency_ms=(20.0, 60.0), catalog_size=50_000, seed=5, ban_s=5.0)
    async with Simulator(KEYS, settings=settings, port=0) as simulator:
        yield simulator


@pytest.mark.parametrize("window_ms", [10.0, 60.0])
async def test_no_code_7_at_full_rate_with_burst_1(window_ms: float) -> None:
    """Safety factor 1.0: the pool runs each key at exactly its qps and never trips the limit,
    whatever the batching window (the slot is taken right before the call goes out).

    The simulator runs in its own process, as the platform does: it stamps a call when the call
    reaches it, not when this test's event loop (shared with the gateway) gets round to it.
    """
    spec = SimSpec(keys=3, qps=10.0, latency_ms=(20.0, 60.0), catalog_size=50_000, ban_s=5.0)
    async with SimProcess(spec) as sim:
        ids = (await sim.catalog(6_000))[:6_000]
        settings = Settings(
            upstream={"url": sim.url},
            credentials=[{"app_key": k, "secret": s, "qps": spec.qps} for k, s in spec.app_keys()],
            limits={"safety_factor": 1.0, "deadline_s": 10.0, "batch_window_ms": window_ms},
            cache={"max_age_s": 600.0},
        )
        async with Gateway(settings) as gw:

            async def caller(chunk: list[str]) -> None:
                for num_iid in chunk:
                    await gw.get_many([num_iid], deadline_s=10.0)

            # 300 callers keep a backlog for about 4 s (3 keys x 10 calls x 40 ids a second)
            await asyncio.wait_for(
                asyncio.gather(*(caller(ids[i::300][:15]) for i in range(300))), timeout=60
            )
        stats = await sim.stats()
    for key, _ in spec.app_keys():
        row = stats["keys"][key]
        assert row["code7"] == 0, row
        assert row["max_calls_in_1s"] <= 10, row
        assert row["ok"] > 0
    assert stats["totals"]["items_per_ok_call"] >= 30


async def test_revoked_key_is_quarantined_and_the_others_carry(sim: Simulator) -> None:
    sim.set_fault("revoke", 60.0, app_key=KEYS[0].app_key)
    ids = sim.catalog.ids()[:400]
    async with Gateway(gateway_settings(sim, safety=0.9)) as gw:
        results = await gw.get_many(ids)
        snapshot = gw.snapshot()
    truth = sim.truth(ids)
    assert all(r.error is None for r in results.values())
    assert all((r.item is None) == (truth[i] is None) for i, r in results.items())
    statuses = {row["credential"]: row["status"] for row in snapshot["credentials"]}
    assert statuses["200…000"] == "quarantined"
    assert sim.stats()["keys"][KEYS[0].app_key]["ok"] == 0


async def test_fifty_concurrent_lookups_of_one_cold_id(sim: Simulator) -> None:
    num_iid = next(i for i in sim.catalog.ids() if sim.truth([i])[i] is not None)
    async with Gateway(gateway_settings(sim, safety=0.9)) as gw:
        results = await asyncio.gather(*(gw.get(num_iid) for _ in range(50)))
    assert all(r.item is not None and r.item.num_iid == num_iid for r in results)
    assert sim.stats()["totals"]["items_requested"] == 1


async def test_a_cancelled_waiter_does_not_hurt_the_others(sim: Simulator) -> None:
    num_iid = sim.catalog.ids()[7]
    async with Gateway(gateway_settings(sim, safety=0.9)) as gw:
        doomed = asyncio.create_task(gw.get(num_iid))
        others = [asyncio.create_task(gw.get(num_iid)) for _ in range(5)]
        await asyncio.sleep(0.015)  # usually on the wire by now; either way the others must win
        doomed.cancel()
        results = await asyncio.gather(*others)
        cached = await gw.get(num_iid)
    assert doomed.cancelled()
    assert all(r.source is Source.UPSTREAM for r in results)
    assert cached.source is Source.L1
    assert sim.stats()["totals"]["calls"] == 1


async def test_prices_match_the_truth(sim: Simulator) -> None:
    ids = sim.catalog.ids()[1000:1200]
    async with Gateway(gateway_settings(sim, safety=0.9)) as gw:
        results = await gw.get_many(ids)
    truth = sim.truth(ids)
    for num_iid, lookup in results.items():
        row = truth[num_iid]
        if row is None:
            assert lookup.item is None
            continue
        assert lookup.item is not None
        assert str(lookup.item.final_price) == row["final_price"]
        assert lookup.item.final_price_basis == row["final_price_basis"]
