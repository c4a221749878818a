"""The service assembly: the gateway, its replicas and its job worker, started and stopped in
order; and a bare gateway, which builds the same parts but runs no job worker."""

from __future__ import annotations

import asyncio
import os
from typing import Any

import pytest
from redis.asyncio import Redis

from taogate import Gateway, Service, Settings
from taogate.testing import FakeProvider, make_item
from tests.conftest import RedisServer

pytestmark = pytest.mark.integration

IDS = [str(100_000 + i) for i in range(5)]


def settings(redis_url: str | None = None, **sections: Any) -> Settings:
    redis = {} if redis_url is None else {"url": redis_url, "prefix": "s" + os.urandom(4).hex()}
    return Settings(
        credentials=[{"app_key": "12345678", "secret": "service-secret", "qps": 100.0}],
        redis={**redis, "heartbeat_s": 0.2},
        **sections,
    )


def provider() -> FakeProvider:
    return FakeProvider(items={i: make_item(i) for i in IDS})


def taogate_tasks() -> set[str]:
    """The background tasks of taogate still running on this loop."""
    return {
        t.get_name()
        for t in asyncio.all_tasks()
        if t.get_name().startswith("taogate-") and not t.done()
    }


async def test_a_service_with_redis_starts_its_parts_then_jobs_and_stops_in_reverse(
    redis_server: RedisServer,
) -> None:
    s = settings(redis_server.url)
    service = Service(s, provider=provider())
    gateway_at_close: list[set[str]] = []
    close_gateway = service.gateway.aclose

    async def watched_close() -> None:
        gateway_at_close.append(taogate_tasks())  # what still runs when the gateway closes
        await close_gateway()

    service.gateway.aclose = watched_close  # type: ignore[method-assign]
    assert not service.started
    async with service as svc:
        assert svc.started
        assert svc.replicas is not None
        assert svc.replicas is svc.gateway.replicas
        assert svc.replicas.mode == "shared"
        assert svc.jobs is not None
        assert {
            "taogate-heartbeat",
            "taogate-reconnect",
            "taogate-pubsub",
            "taogate-degrade-poll",
            "taogate-degrade",
            "taogate-jobs",
        } <= taogate_tasks()
        lookup = await svc.gateway.get(IDS[0])
        assert lookup.item is not None
        job = await svc.jobs.submit(IDS)
        loop = asyncio.get_running_loop()
        end = loop.time() + 10
        while (status := await svc.jobs.status(job)) is not None and status.state != "done":
            assert loop.time() < end, status
            await asyncio.sleep(0.05)
        assert status is not None
        assert status.found == len(IDS)
        replica = svc.replicas.replica_id
        members = f"{{{s.redis.prefix}:m}}:replicas"
        async with Redis.from_url(redis_server.url) as r:
            assert await r.zscore(members, replica) is not None
    assert not service.started
    # the job worker stopped first; the gateway's parts were still running then
    (running,) = gateway_at_close
    assert "taogate-jobs" not in running
    assert {"taogate-heartbeat", "taogate-pubsub", "taogate-degrade"} <= running
    assert taogate_tasks() == set()  # and everything stopped
    async with Redis.from_url(redis_server.url) as r:
        assert await r.zscore(members, replica) is None  # it left the live replicas


async def test_a_service_without_redis_has_no_replicas_and_no_jobs() -> None:
    async with Service(settings(), provider=provider()) as svc:
        assert svc.replicas is None
        assert svc.jobs is None
        assert svc.gateway.replicas is None
        assert (await svc.gateway.get(IDS[1])).item is not None
    assert taogate_tasks() == set()


async def test_jobs_disabled_leave_the_replicas_without_a_worker(
    redis_server: RedisServer,
) -> None:
    async with Service(
        settings(redis_server.url, jobs={"enabled": False}), provider=provider()
    ) as svc:
        assert svc.replicas is not None
        assert svc.jobs is None
        assert "taogate-jobs" not in taogate_tasks()


async def test_a_bare_gateway_joins_the_replicas_but_runs_no_job_worker(
    redis_server: RedisServer,
) -> None:
    async with Gateway(settings(redis_server.url), provider=provider()) as gw:
        assert gw.replicas is not None
        assert gw.replicas.mode == "shared"
        assert gw.parts.redis is not None
        assert "taogate-jobs" not in taogate_tasks()
        assert (await gw.get(IDS[2])).item is not None
    assert taogate_tasks() == set()
