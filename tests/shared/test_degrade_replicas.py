"""Degraded mode across replicas sharing one Redis: the switch, its effects, Redis failing."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from redis.asyncio import Redis

from taogate import Service, Settings, Source
from taogate._degrade import format_time
from taogate._errors import DegradeNotShared
from taogate._gateway import Gateway
from taogate._settings import SimSettings
from taogate.testing import SimKey, Simulator
from tests.conftest import RedisCluster, RedisServer

pytestmark = pytest.mark.integration

KEYS = [SimKey(app_key=f"8100000{i}", secret=f"degrade-secret-{i}", qps=50.0) for i in range(2)]


def settings(sim: Simulator, redis_url: str, prefix: str, **sections: Any) -> Settings:
    return Settings(
        upstream={"url": sim.url},
        credentials=[{"app_key": k.app_key, "secret": k.secret, "qps": k.qps} for k in KEYS],
        limits={"safety_factor": 0.9, "deadline_s": 10.0},
        redis={"url": redis_url, "prefix": prefix, "heartbeat_s": 0.2},
        **sections,
    )


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    cfg = SimSettings(latency_ms=(5.0, 20.0), catalog_size=20_000, seed=8)
    async with Simulator(KEYS, settings=cfg, port=0) as simulator:
        yield simulator


def prefix() -> str:
    return "d" + os.urandom(4).hex()


async def within(seconds: float, condition: Callable[[], bool]) -> float:
    """Wait (polling every 10 ms) until ``condition`` holds; how long it took."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    while not condition():
        if loop.time() - started > seconds:
            raise AssertionError(f"not within {seconds} s")
        await asyncio.sleep(0.01)
    return loop.time() - started


async def test_a_switch_at_one_replica_reaches_the_others(
    sim: Simulator, redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="taogate.degrade")
    p = prefix()
    async with (
        Gateway(settings(sim, redis_server.url, p)) as a,
        Gateway(settings(sim, redis_server.url, p)) as b,
    ):
        await asyncio.sleep(0.3)  # b's subscriber is listening (the poll would do it too)
        await a.degrade.set("on", reason="flash sale", by="ops")
        assert a.degrade.active  # at once where it was set
        took_on = await within(1.0, lambda: b.degrade.active)
        status = b.degrade.status()
        assert (status.source, status.reason, status.by) == ("manual", "flash sale", "ops")
        async with Redis.from_url(redis_server.url) as r:
            assert await r.exists(f"{p}:degrade") == 1
            assert await r.ttl(f"{p}:degrade") == -1  # no until: no expiry
        await b.degrade.set("auto", by="ops")
        took_off = await within(1.0, lambda: not a.degrade.active)
        async with Redis.from_url(redis_server.url) as r:
            assert await r.exists(f"{p}:degrade") == 0
    assert took_on < 0.5  # pub/sub, not the poll
    assert took_off < 0.5
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("degraded mode")]
    # each replica logs both changes once
    assert lines.count("degraded mode on (manual by ops: flash sale)") == 2
    assert lines.count("degraded mode off (auto, no window now)") == 2


async def test_a_replica_that_joins_late_follows_and_until_ends_it_everywhere(
    sim: Simulator, redis_server: RedisServer
) -> None:
    p = prefix()
    async with Gateway(settings(sim, redis_server.url, p)) as a:
        until = time.time() + 1.5
        await a.degrade.set("on", until=until, by="ops")
        async with Redis.from_url(redis_server.url) as r:
            assert 0 < await r.pttl(f"{p}:degrade") <= 1500
        async with Gateway(settings(sim, redis_server.url, p)) as late:
            assert late.degrade.active  # read at start
            assert late.degrade.status().until == pytest.approx(until)
            await within(3.0, lambda: not a.degrade.active and not late.degrade.active)
        async with Redis.from_url(redis_server.url) as r:
            assert await r.exists(f"{p}:degrade") == 0  # the key expired with it


async def test_a_missed_message_is_caught_by_the_poll(
    sim: Simulator, redis_server: RedisServer
) -> None:
    p = prefix()
    async with (
        Gateway(settings(sim, redis_server.url, p)) as a,
        Redis.from_url(redis_server.url) as r,
    ):
        # another tool wrote the key without publishing: the heartbeat's poll reads it
        await r.set(f"{p}:degrade", b'{"mode": "on", "reason": "by hand", "at": 0}')
        took = await within(1.0, lambda: a.degrade.active)
        await r.set(f"{p}:degrade", b"garbage")  # ignored: the last good one holds
        await asyncio.sleep(0.5)
        assert a.degrade.active
        await r.delete(f"{p}:degrade")
        await within(1.0, lambda: not a.degrade.active)
    assert took <= 1.0


async def test_redis_down_keeps_the_last_override_and_the_schedule(
    sim: Simulator, own_redis: RedisServer
) -> None:
    p = prefix()
    now = time.time()
    window = {
        "start": format_time(now + 1.0),
        "end": format_time(now + 600),
        "reason": "sale",
    }
    s = settings(sim, own_redis.url, p, degrade={"windows": [window]})
    async with Gateway(s) as a, Gateway(s) as b:
        await a.degrade.set("off", by="ops")  # the schedule is overruled...
        await within(1.0, lambda: b.degrade.override is not None)
        own_redis.stop()
        await within(2.0, lambda: b.replicas is not None and b.replicas.mode == "local")
        await asyncio.sleep(max(0.0, now + 1.2 - time.time()))
        assert not b.degrade.active  # ...and stays overruled with Redis gone
        with pytest.raises(DegradeNotShared):
            await b.degrade.set("auto", by="ops")
        assert b.degrade.override is not None  # nothing changed
        assert b.degrade.override.mode == "off"
    # without the override, the schedule applies with Redis down too
    s2 = settings(sim, own_redis.url, prefix(), degrade={"windows": [window]})
    async with Gateway(s2) as c:
        assert c.degrade.active
        assert c.degrade.status().source == "schedule"


async def test_degraded_replicas_serve_older_answers_without_calls_and_pause_jobs(
    sim: Simulator, redis_server: RedisServer
) -> None:
    p = prefix()
    s = settings(
        sim,
        redis_server.url,
        p,
        cache={"max_age_s": 1.0, "max_stale_s": 60.0, "ttl_jitter": 0.0},
        degrade={"max_age_s": 30.0},
    )
    ids = [i for i in sim.catalog.ids()[:400] if sim.truth([i])[i] is not None][:120]
    async with Service(s) as sa, Service(s) as sb:
        a, b = sa.gateway, sb.gateway
        assert sa.jobs is not None
        await a.get_many(ids[:80])
        await asyncio.sleep(0.2)  # the L2 writes are in the background
        await asyncio.sleep(1.2)  # now older than max_age_s (1 s)
        await a.degrade.set("on", reason="test", by="ops")
        await within(1.0, lambda: b.degrade.active)
        requested = sim.stats()["totals"]["items_requested"]
        from_l1 = await a.get_many(ids[:40])
        from_l2 = await b.get_many(ids[40:80])
        one = await b.get(ids[0])
        assert all(lk.source is Source.L1 and not lk.stale for lk in from_l1.values())
        assert all(lk.source is Source.L2 and not lk.stale for lk in from_l2.values())
        assert all(lk.age_s > 1.0 for lk in (*from_l1.values(), *from_l2.values()))
        assert one.source is Source.L2
        await asyncio.sleep(0.3)
        assert sim.stats()["totals"]["items_requested"] == requested  # no call, no refresh
        assert a.refreshes == 0
        assert b.refreshes == 0
        # a job submitted while degraded waits (once the workers' blocking reads, up to 1 s,
        # have returned: a chunk they take is in progress and finishes)
        await asyncio.sleep(1.1)
        job = await sa.jobs.submit(ids[80:120])
        await asyncio.sleep(1.5)
        status = await sa.jobs.status(job)
        assert status is not None
        assert (status.state, status.done) == ("queued", 0)
        assert sim.stats()["totals"]["items_requested"] == requested
        # switched off: the job runs and lookups are normal again
        await b.degrade.set("auto", by="ops")
        await within(1.0, lambda: not a.degrade.active)
        loop = asyncio.get_running_loop()
        end = loop.time() + 30
        while loop.time() < end:
            status = await sa.jobs.status(job)
            assert status is not None
            if status.state == "done":
                break
            await asyncio.sleep(0.1)
        assert status.state == "done"
        assert status.done == 40
        again = await a.get(ids[0])
        assert again.source is Source.UPSTREAM


async def test_a_scheduled_window_turns_every_replica_on_then_off(
    sim: Simulator, redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="taogate.degrade")
    now = time.time()
    window = {"start": format_time(now + 0.6), "end": format_time(now + 1.4), "reason": "sale"}
    s = settings(sim, redis_server.url, prefix(), degrade={"windows": [window]})
    async with Gateway(s) as a, Gateway(s) as b:
        assert not a.degrade.active
        # the job worker's wait ends when the window does (woken by the watcher)
        await within(2.0, lambda: a.degrade.active and b.degrade.active)
        waiter = asyncio.create_task(a.degrade.wait_normal())
        await asyncio.sleep(0)
        assert not waiter.done()
        await asyncio.wait_for(waiter, timeout=3.0)
        assert time.time() >= now + 1.4
        assert not b.degrade.active
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("degraded mode")]
    until = format_time(now + 1.4)
    assert lines.count(f"degraded mode on (schedule: sale; until {until})") == 2
    assert lines.count("degraded mode off (auto, no window now)") == 2


async def test_the_switch_crosses_a_cluster(sim: Simulator, redis_cluster: RedisCluster) -> None:
    s = settings(sim, redis_cluster.url, prefix())
    s = s.model_copy(update={"redis": s.redis.model_copy(update={"cluster": True})})
    async with Gateway(s) as a, Gateway(s) as b:
        await asyncio.sleep(0.3)
        await a.degrade.set("on", until=time.time() + 60, by="ops")
        took = await within(1.0, lambda: b.degrade.active)
        await b.degrade.set("auto", by="ops")
        await within(1.0, lambda: not a.degrade.active)
    assert took < 0.5


async def test_a_burst_of_change_messages_costs_one_read_more_not_a_task_each(
    sim: Simulator, redis_server: RedisServer
) -> None:
    p = prefix()
    async with Gateway(settings(sim, redis_server.url, p)) as gw:
        override = gw.parts.override
        assert override is not None
        await gw.degrade.set("on", reason="burst", by="ops")
        await asyncio.sleep(0.1)  # the switch's own message has been read
        reads = override._started_reads
        tasks = len(override._tasks)
        for _ in range(500):  # what a flood on the change channel does
            override.on_message(b"changed")
        assert len(override._tasks) <= tasks + 1
        await within(
            2.0, lambda: override._message_read is not None and override._message_read.done()
        )
        assert override._started_reads - reads <= 2  # the read under way and one after it
        assert gw.degrade.active
