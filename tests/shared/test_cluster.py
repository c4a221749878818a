"""The shared engine on a real 3-node Redis Cluster: every script's keys in one slot."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator

import pytest

from taogate import Service, Settings, Source
from taogate._settings import SimSettings
from taogate.testing import SimKey, Simulator
from tests.conftest import RedisCluster

pytestmark = pytest.mark.integration

KEYS = [SimKey(app_key=f"9000000{i}", secret=f"cluster-secret-{i}", qps=10.0) for i in range(3)]


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    cfg = SimSettings(latency_ms=(10.0, 30.0), catalog_size=5_000, seed=8)
    async with Simulator(KEYS, settings=cfg, port=0) as simulator:
        yield simulator


async def test_gateways_share_limits_l2_and_invalidation_on_a_cluster(
    sim: Simulator, redis_cluster: RedisCluster
) -> None:
    prefix = "c" + os.urandom(3).hex()
    settings = Settings(
        upstream={"url": sim.url},
        credentials=[{"app_key": k.app_key, "secret": k.secret, "qps": k.qps} for k in KEYS],
        limits={"safety_factor": 1.0},
        redis={"url": redis_cluster.url, "cluster": True, "prefix": prefix, "heartbeat_s": 0.2},
    )
    ids = sim.catalog.ids()[:600]
    async with Service(settings) as sa, Service(settings) as sb:
        a, b = sa.gateway, sb.gateway
        assert a.replicas is not None
        assert a.replicas.mode == "shared"
        await asyncio.gather(
            *(g.get_many(ids[i::20]) for i, g in zip(range(20), [a, b] * 10, strict=True))
        )
        await asyncio.sleep(0.3)
        assert a.replicas.live_replicas == 2
        only_a = sim.catalog.ids()[1000]
        await a.get(only_a)
        await asyncio.sleep(0.2)  # written behind to L2
        from_l2 = await b.get(only_a)
        assert b.cache.l1.peek(only_a) is not None
        await a.invalidate([only_a])
        await asyncio.sleep(0.2)
        assert b.cache.l1.peek(only_a) is None  # the invalidation crossed the cluster
        assert a.replicas.mode == "shared"
        assert b.replicas is not None
        assert b.replicas.mode == "shared"
        # a bulk job: its stream and each job's keys live in one slot apiece; both workers
        # consume through the group
        assert sa.jobs is not None
        job = await sa.jobs.submit(sim.catalog.ids()[2000:2400])
        loop = asyncio.get_running_loop()
        end = loop.time() + 30
        while (status := await sb.jobs.status(job)) is not None and status.state != "done":  # type: ignore[union-attr]
            assert loop.time() < end, status
            await asyncio.sleep(0.1)
        assert status is not None
        assert status.done == 400
        rows = [row async for row in sa.jobs.rows(job)]
        assert len(rows) == 400
    stats = sim.stats()
    for key in KEYS:
        assert stats["keys"][key.app_key]["code7"] == 0
        assert stats["keys"][key.app_key]["max_calls_in_1s"] <= 10
    assert from_l2.source is Source.L2


async def test_one_decision_covers_a_calls_scopes_on_a_cluster(
    redis_cluster: RedisCluster,
) -> None:
    """Every limit key is in one hash slot: a call's key, egress, account, method and key ×
    method are decided (and a scope's ban recorded) in one script on a Cluster."""
    from redis.asyncio.cluster import RedisCluster as ClusterClient

    from taogate import Credential, Egress
    from taogate._credentials import Account
    from taogate.quota import PoolPolicy
    from taogate.quota.redis import SharedLimits

    method = "taobao.tbk.item.info.get"
    policy = PoolPolicy()
    client = ClusterClient.from_url(redis_cluster.url)
    try:
        limits = SharedLimits(
            client, prefix="c" + os.urandom(3).hex(), policy=policy, probe_hold_s=10.0
        )
        cred = Credential(app_key="k1", secret="cluster-scope-secret", account="main")
        scopes = (
            policy.egress_scope(Egress(name="nat")),
            policy.account_scope(Account(name="main")),
            policy.method_scope(method, 40.0),
            policy.pair_scope(cred, method),
        )
        first = await limits.acquire(cred, scopes=scopes)
        assert first.reason == "fresh"
        await client.hset(limits.keys(cred)[0], "born", "0")
        granted = await limits.acquire(cred, scopes=scopes)
        assert granted.granted
        await limits.record_scope(scopes[1], "ban", granted_us=granted.server_us, retry_after=2.0)
        held = await limits.acquire(cred, scopes=scopes)
        assert held.reason == "account"
    finally:
        await client.aclose()
