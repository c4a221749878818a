"""Egresses against the simulator over loopback HTTP, judged by its per-IP view.

Loopback has a whole /8: binding egresses to 127.0.0.2 and 127.0.0.3 lets the simulator see
them apart, as the platform's risk control sees calling IPs.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from taogate import Settings
from taogate._gateway import Gateway
from taogate._settings import SimSettings
from taogate.testing import SimKey, Simulator
from tests.conftest import flood_gateway, free_port

pytestmark = pytest.mark.integration

KEYS = [SimKey(app_key=f"6100000{i}", secret=f"egress-secret-{i}", qps=10.0) for i in range(4)]


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    settings = SimSettings(latency_ms=(10.0, 30.0), catalog_size=20_000, seed=21, ban_s=5.0)
    async with Simulator(KEYS, settings=settings, port=0) as simulator:
        yield simulator


def settings(sim: Simulator, egress: list[dict[str, Any]], **extra: Any) -> Settings:
    return Settings(
        upstream={"url": sim.url},
        credentials=[{"app_key": k.app_key, "secret": k.secret, "qps": k.qps} for k in KEYS],
        egress=egress,
        limits={"safety_factor": 1.0, "deadline_s": 20.0},
        **extra,
    )


async def test_each_egress_caps_its_keys_together(sim: Simulator) -> None:
    egress = [
        {"name": "a", "local_address": "127.0.0.2", "max_qps": 6},
        {"name": "b", "local_address": "127.0.0.3", "max_qps": 6},
    ]
    ids = sim.catalog.ids()[:2400]  # 60 calls of 40: about 5 s at 2 x 6 calls/s
    async with Gateway(settings(sim, egress)) as gw:
        await flood_gateway(gw, ids)
        rows = {r["egress"]: r for r in gw.pool.egress_snapshot()}
    ips = sim.stats()["ips"]
    assert set(ips) == {"127.0.0.2", "127.0.0.3"}  # every call left through its egress
    for ip in ips.values():
        assert ip["max_calls_in_1s"] <= 6  # 2 keys x 10 qps held to the egress's 6
        assert ip["calls"] >= 25
    assert rows["a"]["credentials"] == rows["b"]["credentials"] == 2  # spread in turn
    assert sum(k["code7"] for k in sim.stats()["keys"].values()) == 0


async def test_an_unreachable_egress_pauses_and_the_others_carry_on(sim: Simulator) -> None:
    dead_proxy = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    egress = [
        {"name": "dead", "proxy": dead_proxy, "max_qps": 50},
        {"name": "live", "local_address": "127.0.0.3", "max_qps": 50},
    ]
    ids = sim.catalog.ids()[:800]
    async with Gateway(settings(sim, egress)) as gw:
        answers = await gw.get_many(ids, deadline_s=20.0)
        rows = {r["egress"]: r for r in gw.pool.egress_snapshot()}
        breaker = str(gw.breaker.state)
    assert all(a.error is None for a in answers.values())  # every id answered
    assert int(str(rows["dead"]["unreachable"])) >= 3
    assert float(str(rows["dead"]["paused_for_s"])) > 0
    assert rows["live"]["paused_for_s"] == 0
    assert set(sim.stats()["ips"]) == {"127.0.0.3"}
    assert breaker == "closed"  # the upstream was never blamed
