"""The shared engine through Sentinel: redis-py's Sentinel client finds the master."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

import pytest

from taogate import Settings, Source
from taogate._gateway import Gateway
from taogate._settings import SimSettings
from taogate.testing import SimKey, Simulator
from tests.conftest import RedisSentinel

pytestmark = pytest.mark.integration

KEY = SimKey(app_key="91000001", secret="sentinel-secret", qps=10.0)


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    cfg = SimSettings(latency_ms=(5.0, 10.0), catalog_size=2_000, seed=12)
    async with Simulator([KEY], settings=cfg, port=0) as simulator:
        yield simulator


async def test_gateways_share_through_sentinel(
    sim: Simulator, redis_sentinel: RedisSentinel
) -> None:
    settings = Settings(
        upstream={"url": sim.url},
        credentials=[{"app_key": KEY.app_key, "secret": KEY.secret, "qps": KEY.qps}],
        redis={"url": redis_sentinel.url, "prefix": "s" + os.urandom(3).hex()},
    )
    num_iid = sim.catalog.ids()[0]
    async with Gateway(settings) as a, Gateway(settings) as b:
        assert a.replicas is not None
        assert a.replicas.mode == "shared"
        await a.get(num_iid)
        import asyncio

        await asyncio.sleep(0.2)
        from_b = await b.get(num_iid)
    assert from_b.source is Source.L2
