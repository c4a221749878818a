"""An egress's cap holds for every credential on it and every replica together (real Redis)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator

import pytest

from taogate import Settings
from taogate._gateway import Gateway
from taogate._settings import SimSettings
from taogate.testing import SimKey, Simulator
from tests.conftest import RedisServer

pytestmark = pytest.mark.integration

KEYS = [SimKey(app_key=f"6200000{i}", secret=f"egress-shared-{i}", qps=10.0) for i in range(4)]


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    cfg = SimSettings(latency_ms=(10.0, 30.0), catalog_size=20_000, seed=22, ban_s=5.0)
    async with Simulator(KEYS, settings=cfg, port=0) as simulator:
        yield simulator


async def test_two_replicas_keep_one_egress_under_its_cap(
    sim: Simulator, redis_server: RedisServer
) -> None:
    settings = Settings(
        upstream={"url": sim.url},
        credentials=[{"app_key": k.app_key, "secret": k.secret, "qps": k.qps} for k in KEYS],
        egress=[{"name": "nat", "local_address": "127.0.0.2", "max_qps": 8}],
        limits={"safety_factor": 1.0, "deadline_s": 30.0},
        redis={"url": redis_server.url, "prefix": "e" + os.urandom(3).hex()},
        jobs={"enabled": False},
    )
    ids = sim.catalog.ids()[:1600]  # 40 calls: 5 s at 8 calls/s, from both replicas at once
    async with Gateway(settings) as a, Gateway(settings) as b:
        assert a.replicas is not None
        assert a.replicas.mode == "shared"

        async def caller(gw: Gateway, chunk: list[str]) -> None:
            for i in range(0, len(chunk), 10):
                await gw.get_many(chunk[i : i + 10], deadline_s=30.0)

        await asyncio.sleep(1.2)  # a new shared state waits one window
        await asyncio.wait_for(
            asyncio.gather(*(caller((a, b)[i % 2], ids[i::40]) for i in range(40))), timeout=60
        )
    (ip,) = sim.stats()["ips"].values()
    assert ip["max_calls_in_1s"] <= 8  # 4 keys x 10 qps x 2 replicas held to 8
    assert ip["calls"] >= 38
    assert sum(k["code7"] for k in sim.stats()["keys"].values()) == 0
