"""Values read from Redis are untrusted input: garbage written into a real Redis is a miss, is
ignored or is clamped — never a 500, a crash, a stuck key or a job that loops for ever."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import AsyncIterator, Callable
from functools import partial
from typing import Any

import httpx
import orjson
import pytest
from redis.asyncio import Redis

from taogate import Service, Settings
from taogate._degrade import Override
from taogate._gateway import Gateway
from taogate._settings import SimSettings
from taogate.cache.redis import RedisTier
from taogate.http import create_app
from taogate.jobs._store import GROUP, JobStore
from taogate.metrics import MALFORMED_SOURCES as METRIC_SOURCES
from taogate.quota import PoolPolicy, SharedUnavailable
from taogate.quota.redis import KEY_TTL_S, SharedLimits
from taogate.replicas import MALFORMED_SOURCES
from taogate.testing import SimKey, Simulator
from tests.conftest import RedisServer


def l2_of(gw: Gateway) -> RedisTier:
    """The gateway's L2 tier (these tests configure Redis)."""
    assert isinstance(gw.cache.l2, RedisTier)
    return gw.cache.l2


pytestmark = pytest.mark.integration

KEY = SimKey(app_key="94000001", secret="redis-values-test-secret", qps=200.0)
TOKEN = "redis-values-test-token-000000001"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def settings(sim: Simulator, redis_url: str, prefix: str, **sections: Any) -> Settings:
    return Settings(
        upstream={"url": sim.url},
        credentials=[{"app_key": KEY.app_key, "secret": KEY.secret, "qps": KEY.qps}],
        limits={"safety_factor": 0.9, "deadline_s": 10.0},
        redis={"url": redis_url, "prefix": prefix, "heartbeat_s": 0.2},
        server={"clients": [{"name": "ops", "token": TOKEN, "rate": 1e6, "admin": True}]},
        **sections,
    )


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    cfg = SimSettings(latency_ms=(1.0, 5.0), catalog_size=5_000, seed=21, legacy_ratio=0.0)
    async with Simulator([KEY], settings=cfg, port=0) as simulator:
        yield simulator


def prefix() -> str:
    return "v" + os.urandom(4).hex()


async def service(s: Settings) -> AsyncIterator[tuple[httpx.AsyncClient, Gateway]]:
    app = create_app(s)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://taogate") as client:
            yield client, app.state.gateway


async def within(seconds: float, condition: Callable[[], Any]) -> None:
    """Wait (polling every 10 ms) until ``await condition()`` (or ``condition()``) is true."""
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds
    while True:
        result = condition()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if loop.time() > end:
            raise AssertionError(f"not within {seconds} s")
        await asyncio.sleep(0.01)


def present(sim: Simulator, n: int, skip: int = 0) -> list[str]:
    ids = sim.catalog.ids()[skip : skip + n * 3]
    truth = sim.truth(ids)
    return [i for i in ids if truth[i] is not None][:n]


def metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith((name + " ", name + "{")):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not in /metrics")


def test_the_metric_names_every_source() -> None:
    assert METRIC_SOURCES == MALFORMED_SOURCES


# --- L2 ------------------------------------------------------------------------------------


def good_l2(num_iid: str) -> dict[str, Any]:
    now = time.time()
    item = {
        "num_iid": num_iid,
        "title": "t",
        "shop": "s",
        "zk_final_price": "10.00",
        "final_price": "10.00",
        "final_price_basis": "discount",
    }
    return {"i": item, "f": now, "u": now + 300, "k": now + 600}


def bad_l2_entries(num_iid: str) -> dict[str, bytes]:
    good = good_l2(num_iid)
    return {
        "random bytes": os.urandom(64) + b"\xff\xfe",
        # an older format: the item itself, with no freshness times around it
        "old format": orjson.dumps(good["i"]),
        "wrong-typed times": orjson.dumps({**good, "f": "yesterday"}),
        "wrong-typed item": orjson.dumps({**good, "i": {**good["i"], "title": 5}}),
        "money not a number": orjson.dumps({**good, "i": {**good["i"], "final_price": "lots"}}),
        "another id's item": orjson.dumps({**good, "i": {**good["i"], "num_iid": "1"}}),
        "a list": b"[1, 2, 3]",
    }


async def test_a_corrupt_l2_entry_is_a_miss_deleted_and_counted(
    sim: Simulator, redis_server: RedisServer
) -> None:
    p = prefix()
    kinds = list(bad_l2_entries("0"))
    ids = present(sim, len(kinds))
    async for client, gw in service(settings(sim, redis_server.url, p)):
        assert gw.replicas is not None
        async with Redis.from_url(redis_server.url) as r:
            for num_iid, kind in zip(ids, kinds, strict=True):
                await r.set(l2_of(gw).item_key(num_iid), bad_l2_entries(num_iid)[kind])
            for num_iid, kind in zip(ids, kinds, strict=True):
                resp = await client.get(f"/v1/items/{num_iid}", headers=AUTH)
                assert resp.status_code == 200, (kind, resp.text)
                assert resp.json()["source"] == "upstream", kind
                assert resp.json()["item"]["num_iid"] == num_iid
            # the corrupt values are gone; a good answer replaced each (written in the
            # background after the fetch)
            for num_iid in ids:
                await within(2.0, partial(_is_good, r, l2_of(gw).item_key(num_iid)))
        text = (await client.get("/metrics")).text
        again = await client.get(f"/v1/items/{ids[0]}", headers=AUTH)
        corrupt = l2_of(gw).corrupt
    assert corrupt == len(kinds)
    assert metric(text, "taogate_l2_corrupt_total") == len(kinds)
    assert again.json()["source"] == "l1"
    assert sim.stats()["totals"]["items_requested"] == len(kinds)


async def _is_good(r: Redis, key: str) -> bool:
    raw = await r.get(key)
    if raw is None:
        return False
    doc = orjson.loads(raw)
    return isinstance(doc, dict) and isinstance(doc.get("f"), float)


async def test_a_batch_of_40_with_one_corrupt_entry_answers_all(
    sim: Simulator, redis_server: RedisServer
) -> None:
    p = prefix()
    ids = present(sim, 40)
    async for client, gw in service(settings(sim, redis_server.url, p)):
        assert gw.replicas is not None
        async with Redis.from_url(redis_server.url) as r:
            for num_iid in ids[1:]:  # 39 good answers in L2
                await r.set(l2_of(gw).item_key(num_iid), orjson.dumps(good_l2(num_iid)))
            bad = l2_of(gw).item_key(ids[0])
            await r.set(bad, b"\x00garbage from an old release\xff")
            resp = await client.post("/v1/items:batch", json={"ids": ids}, headers=AUTH)
            assert resp.status_code == 200, resp.text
            results = resp.json()["results"]
            assert list(results) == ids
            assert all(results[i]["item"]["num_iid"] == i for i in ids)
            assert results[ids[0]]["source"] == "upstream"
            assert {results[i]["source"] for i in ids[1:]} == {"l2"}
            await within(2.0, partial(_is_good, r, bad))
            corrupt = l2_of(gw).corrupt
    assert corrupt == 1
    assert sim.stats()["totals"]["items_requested"] == 1  # only the corrupt one was fetched


async def test_l2_times_from_the_future_are_clamped(
    sim: Simulator, redis_server: RedisServer
) -> None:
    """An entry "fresh until" the year 9999 is fresh only as long as max_age_s allows."""
    p = prefix()
    (num_iid,) = present(sim, 1)
    async for _, gw in service(settings(sim, redis_server.url, p, cache={"max_age_s": 60})):
        assert gw.replicas is not None
        doc = {**good_l2(num_iid), "f": time.time() + 1e9, "u": 1e300, "k": 1e300}
        async with Redis.from_url(redis_server.url) as r:
            await r.set(l2_of(gw).item_key(num_iid), orjson.dumps(doc))
        found = await l2_of(gw).get([num_iid])
    entry = found[num_iid]
    now = gw._clock()
    assert entry.fetched_at <= now + 0.01
    assert entry.fresh_until <= now + 120.1  # max(max_age_s, negative_ttl_s)
    assert entry.keep_until <= now + 60 + 3600 + 0.1  # max_age_s + max_stale_s


# --- jobs ----------------------------------------------------------------------------------


async def test_a_job_s_meta_key_expires_from_the_start(
    sim: Simulator, redis_server: RedisServer
) -> None:
    p = prefix()
    async with Redis.from_url(redis_server.url) as r:
        store = JobStore(r, prefix=p, result_ttl_s=600)
        job = await store.submit(["1", "2", "3"])
        assert 590 < await r.ttl(f"{{{p}:j:{job}}}:meta") <= 600


async def test_a_chunk_that_keeps_failing_ends_as_failed_rows(
    sim: Simulator, redis_server: RedisServer
) -> None:
    """A chunk whose workers died on it N times (each delivery counted by the stream) gets
    failed rows from the next worker instead of going round for ever; a stream entry that is
    not a chunk is deleted."""
    p = prefix()
    ids = present(sim, 5)
    async with Redis.from_url(redis_server.url) as r:
        store = JobStore(r, prefix=p, result_ttl_s=600)
        await store.ensure_group()
        junk = await r.xadd(store.stream, {"not": "a chunk"})
        job = await store.submit(ids)
        # two workers took the chunk (and the junk) and died on them
        await r.xreadgroup(GROUP, "dead-1", {store.stream: ">"}, count=10)
        entries: list[Any] = [
            row["message_id"] for row in await r.xpending_range(store.stream, GROUP, "-", "+", 10)
        ]
        await r.xclaim(store.stream, GROUP, "dead-2", 0, entries)
        s = settings(sim, redis_server.url, p, jobs={"max_attempts": 2, "claim_idle_s": 0.2})
        async with Service(s) as svc:
            assert svc.jobs is not None
            loop = asyncio.get_running_loop()
            end = loop.time() + 10
            while (status := await svc.jobs.status(job)) is not None and status.state != "failed":
                assert loop.time() < end, status
                await asyncio.sleep(0.05)
            rows = [orjson.loads(row) async for row in svc.jobs.rows(job)]
            assert svc.replicas is not None
            malformed = svc.replicas.malformed["jobs"]
        assert await r.xlen(store.stream) == 0  # the chunk and the junk entry are both gone
        assert await r.xrange(store.stream, junk, junk) == []
    assert status is not None
    assert (status.total, status.done, status.failed) == (5, 5, 5)
    assert sorted(row["num_iid"] for row in rows) == sorted(ids)
    assert {row["status"] for row in rows} == {"failed"}
    assert all("gave up after 2 tries" in row["error"] for row in rows)
    assert malformed == 1
    assert sim.stats()["totals"]["items_requested"] == 0


async def test_late_lookups_fail_their_chunk_after_max_attempts(
    sim: Simulator, redis_server: RedisServer
) -> None:
    """Lookups that cannot be answered in time (a deadline no call can meet): the chunk is
    left for another try, claimed again after claim_idle_s, and after max_attempts tries its
    ids get failed rows naming the reason."""
    p = prefix()
    ids = present(sim, 3)
    jobs = {"max_attempts": 2, "claim_idle_s": 0.5, "deadline_s": 0.001}
    async with Service(settings(sim, redis_server.url, p, jobs=jobs)) as svc:
        assert svc.jobs is not None
        loop = asyncio.get_running_loop()
        started = loop.time()
        job = await svc.jobs.submit(ids)
        while (status := await svc.jobs.status(job)) is not None and status.state != "failed":
            assert loop.time() < started + 15, status
            await asyncio.sleep(0.02)
        took = loop.time() - started
        rows = [orjson.loads(row) async for row in svc.jobs.rows(job)]
    assert {row["status"] for row in rows} == {"failed"}
    assert all(row["error"].startswith(("Overloaded", "DeadlineExceeded")) for row in rows), rows
    assert took >= 0.5  # a second try, after the chunk was idle claim_idle_s


async def test_an_id_the_policy_refuses_fails_alone(
    sim: Simulator, redis_server: RedisServer
) -> None:
    """A chunk holding an id that is not one (written by another tool): that id gets a failed
    row, the others are looked up; before, the whole chunk failed on every try."""
    p = prefix()
    (good,) = present(sim, 1)
    async with Redis.from_url(redis_server.url) as r:
        job = await JobStore(r, prefix=p, result_ttl_s=600).submit(["not an id!", good])
        async with Service(settings(sim, redis_server.url, p)) as svc:
            assert svc.jobs is not None
            loop = asyncio.get_running_loop()
            end = loop.time() + 10
            while (status := await svc.jobs.status(job)) is not None and status.state != "done":
                assert loop.time() < end, status
                await asyncio.sleep(0.05)
            rows = {row["num_iid"]: row async for row in _rows(svc.jobs, job)}
    assert rows[good]["status"] == "found"
    assert rows["not an id!"]["status"] == "failed"
    assert rows["not an id!"]["error"].startswith("InvalidItemId")


async def _rows(store: JobStore, job: str) -> AsyncIterator[dict[str, Any]]:
    async for raw in store.rows(job):
        yield orjson.loads(raw)


async def test_garbage_job_meta_and_rows_are_answered_sanely(
    sim: Simulator, redis_server: RedisServer
) -> None:
    p = prefix()
    async for client, _ in service(settings(sim, redis_server.url, p)):
        async with Redis.from_url(redis_server.url) as r:
            store = JobStore(r, prefix=p, result_ttl_s=600)
            job = await store.submit(["11", "12", "13"])
            results, meta = store._keys(job)
            await r.hset(
                meta,
                mapping={
                    "state": "confused",
                    "total": "lots",
                    "done": "-5",
                    "found": "1e999",
                    "created": "nan",
                    "finished": "1e300",
                },
            )
            await r.hset(
                results,
                mapping={
                    "11": orjson.dumps({"num_iid": "11", "status": "not_found"}),
                    "12": b"\xffnot json",
                    "13": orjson.dumps({"num_iid": "13", "status": "found", "item": "x"}),
                },
            )
            status = await client.get(f"/v1/jobs/{job}", headers=AUTH)
            ndjson = await client.get(f"/v1/jobs/{job}/results", headers=AUTH)
            csv_text = await client.get(f"/v1/jobs/{job}/results?format=csv", headers=AUTH)
            # a meta key of another type is no job (and no 500)
            wrong = await store.submit(["14"])
            await r.delete(store._keys(wrong)[1])
            await r.rpush(store._keys(wrong)[1], "x")
            wrong_status = await client.get(f"/v1/jobs/{wrong}", headers=AUTH)
    assert status.status_code == 200, status.text
    doc = status.json()
    assert doc["state"] == "queued"
    assert (doc["total"], doc["done"], doc["found"]) == (0, 0, 0)
    assert doc["created"] == 0.0
    assert doc["finished"] <= 253_402_300_799
    assert ndjson.status_code == 200
    rows = {row["num_iid"]: row for row in map(orjson.loads, ndjson.content.splitlines())}
    assert rows["11"]["status"] == "not_found"
    assert rows["12"]["status"] == "failed"
    assert rows["13"]["status"] == "failed"
    assert csv_text.status_code == 200
    assert len(csv_text.text.splitlines()) == 4
    assert wrong_status.status_code == 404


# --- degrade -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "active"),
    [
        ({"mode": "on", "until": 1e300, "at": -1e300}, True),
        ({"mode": "on", "until": None, "at": 1e300}, True),
        ({"mode": "on", "until": -5, "at": 0}, False),  # ended long ago
        (b'{"mode": "on", "until": 1000000000000000000000000000000, "at": 1e30}', True),
    ],
)
async def test_absurd_override_times_are_clamped(
    sim: Simulator, redis_server: RedisServer, raw: dict[str, Any] | bytes, active: bool
) -> None:
    p = prefix()
    async with Redis.from_url(redis_server.url) as r:
        await r.set(f"{p}:degrade", raw if isinstance(raw, bytes) else orjson.dumps(raw))
        async with Gateway(settings(sim, redis_server.url, p)) as gw:
            assert gw.degrade.active is active
            status = gw.degrade.status().to_dict(who=True)  # formats every time it holds
            override = gw.degrade.override
            # (a gateway closed at once can hang in redis-py's pub/sub: let it subscribe)
            await asyncio.sleep(0.3)
    if active:
        assert override is not None
        assert 0.0 <= override.at <= time.time()
        assert override.until is None or override.until <= 253_402_300_799
        override.to_dict()
        assert status["on"] is True
    else:
        assert override is None


async def test_malformed_overrides_are_ignored_and_counted(
    sim: Simulator, redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="taogate.replicas")
    p = prefix()
    bad = [
        b'{"mode": "on", "until": "tomorrow"}',
        b'{"mode": "on", "until": true}',
        b'{"mode": "on", "at": [1]}',
        b'{"mode": "on", "until": NaN}',
        b'{"mode": "on", "until": 1e400}',
    ]
    async with (
        Redis.from_url(redis_server.url) as r,
        Gateway(settings(sim, redis_server.url, p)) as gw,
    ):
        assert gw.replicas is not None
        await r.set(f"{p}:degrade", b'{"mode": "on", "reason": "good"}')
        await within(2.0, lambda: gw.degrade.active)
        for raw in bad:
            await r.set(f"{p}:degrade", raw)
            await r.publish(f"{p}:degrade:changed", b"changed")
            await asyncio.sleep(0.1)
            assert gw.degrade.active  # the last good one holds
        await r.delete(f"{p}:degrade")
        await r.rpush(f"{p}:degrade", b"a list")  # a key of another type
        await r.publish(f"{p}:degrade:changed", b"changed")
        await within(2.0, lambda: gw.replicas is not None and gw.replicas.malformed["degrade"] > 5)
        assert gw.degrade.active
        assert gw.replicas.mode == "shared"
    assert any("malformed value in Redis (degrade)" in m for m in caplog.messages)


def test_override_from_json_clamps_at_both_ends() -> None:
    now = 1_800_000_000.0
    early = Override.from_json(b'{"mode": "on", "until": -1e300, "at": -1e300}', now=now)
    assert (early.until, early.at) == (0.0, 0.0)
    late = Override.from_json(b'{"mode": "off", "until": 1e300, "at": 1e300}', now=now)
    assert late.until is not None
    assert late.until <= 253_402_300_799
    assert late.at == now
    late.to_dict()
    for raw in (b'{"mode": "on", "until": 1e400}', b'{"mode": "on", "at": false}', b"\xff"):
        with pytest.raises(ValueError, match="not"):
            Override.from_json(raw, now=now)


# --- invalidations, heartbeat, limits ------------------------------------------------------


async def test_malformed_invalidations_are_ignored_and_the_subscriber_goes_on(
    sim: Simulator, redis_server: RedisServer
) -> None:
    p = prefix()
    (num_iid,) = present(sim, 1)
    async with (
        Redis.from_url(redis_server.url) as r,
        Gateway(settings(sim, redis_server.url, p)) as gw,
    ):
        assert gw.replicas is not None
        await gw.get(num_iid)
        await asyncio.sleep(0.3)  # the subscriber is listening
        channel = f"{p}:invalidate"
        for raw in (b"not json", b'"12345"', b'{"ids": [1]}', b"[true]", b"[[1]]", b"[null]"):
            await r.publish(channel, raw)
        await within(
            2.0, lambda: gw.replicas is not None and gw.replicas.malformed["invalidation"] == 6
        )
        assert gw.cache.l1.peek(num_iid) is not None
        await r.publish(channel, orjson.dumps([int(num_iid)]))
        await within(2.0, lambda: gw.cache.l1.peek(num_iid) is None)


async def test_wrong_typed_membership_keys_keep_the_replica_shared(
    sim: Simulator, redis_server: RedisServer
) -> None:
    p = prefix()
    async with (
        Redis.from_url(redis_server.url) as r,
        Gateway(settings(sim, redis_server.url, p)) as gw,
    ):
        assert gw.replicas is not None
        await r.delete(f"{{{p}:m}}:replicas", f"{{{p}:m}}:departed")
        await r.set(f"{{{p}:m}}:replicas", b"garbage")
        await r.rpush(f"{{{p}:m}}:departed", b"garbage")
        await asyncio.sleep(0.6)  # three heartbeats
        assert gw.replicas.mode == "shared"
        assert gw.replicas.live_replicas == 1
        assert await r.type(f"{{{p}:m}}:replicas") == b"zset"
        # a heartbeat answer that is not two counts: the last counts hold, and it is counted
        gw.replicas._heartbeat = r.register_script("return {'many', -1}")
        await within(
            2.0, lambda: gw.replicas is not None and gw.replicas.malformed["heartbeat"] > 0
        )
        assert gw.replicas.live_replicas == 1
        assert gw.replicas.mode == "shared"


async def test_garbage_limit_state_neither_stalls_nor_breaks_a_key(
    sim: Simulator, redis_server: RedisServer
) -> None:
    """A key's shared state full of garbage (times in the year 10^292, NaN, a zero factor, a
    send list of words) is taken as absent: the key waits one fresh window, then serves."""
    p = prefix()
    s = settings(sim, redis_server.url, p)
    base = f"{{{p}:limits}}:key:{KEY.app_key}"
    async with Redis.from_url(redis_server.url) as r:
        await r.hset(
            f"{base}:state",
            mapping={
                "tat": "1e300",
                "banned_until": "inf",
                "factor": "0",
                "factor_at": "nan",
                "quarantined": "nan",
                "probe_at": "1e300",
                "born": "1e300",
                "urgent_until": "-inf",
                "calls_today": "1.5",
                "day": "x",
            },
        )
        await r.rpush(f"{base}:sent", *([b"garbage"] * 300))
        ids = present(sim, 3)
        async for client, gw in service(s):
            started = time.monotonic()
            for num_iid in ids:
                resp = await client.get(f"/v1/items/{num_iid}", headers=AUTH)
                assert resp.status_code == 200, resp.text
                assert resp.json()["source"] == "upstream"
            took = time.monotonic() - started
            assert gw.replicas is not None
            assert gw.replicas.mode == "shared"
        # a state key of another type is replaced, not an error every call
        await r.delete(f"{base}:state")
        await r.set(f"{base}:state", b"garbage")
        async for client, gw in service(s):
            resp = await client.get(f"/v1/items/{present(sim, 1, skip=100)[0]}", headers=AUTH)
            assert resp.status_code == 200, resp.text
            assert gw.replicas is not None
            assert gw.replicas.mode == "shared"
    assert took < 5.0  # one fresh window (1 s + guard), not an endless wait


async def test_malformed_script_answers_are_unavailability_and_clamped(
    redis_server: RedisServer,
) -> None:
    """What a script answers is checked too: a wrong shape is an unavailable limiter (the
    replica decides locally), an absurd wait is clamped to the keys' lifetime."""
    from taogate.providers.base import Credential

    seen: list[tuple[str, str]] = []
    credential = Credential(app_key="94000009", secret="script-answer-test-secret", qps=10.0)
    async with Redis.from_url(redis_server.url) as r:
        limits = SharedLimits(
            r,
            prefix=prefix(),
            policy=PoolPolicy(),
            probe_hold_s=10.0,
            on_malformed=lambda source, what: seen.append((source, what)),
        )
        limits._acquire = r.register_script("return {0, 'lots', 'rate', 1, 0}")
        with pytest.raises(SharedUnavailable, match="malformed"):
            await limits.acquire(credential)
        limits._acquire = r.register_script("return {0, 1, 'made up', 1, 0}")
        with pytest.raises(SharedUnavailable, match="malformed"):
            await limits.acquire(credential)
        limits._acquire = r.register_script("return {0, 1e300, 'banned', 1, 0}")
        verdict = await limits.acquire(credential)
        assert verdict.wait_s == 0.0  # LLONG_MIN from Redis: clamped, not negative
        limits._acquire = r.register_script("return {0, 9e18, 'banned', 1, 0}")
        assert (await limits.acquire(credential)).wait_s == KEY_TTL_S
        limits._outcome = r.register_script("return {1}")
        with pytest.raises(SharedUnavailable, match="malformed"):
            await limits.record(credential, "ban", granted_us=0, probe=False)
        limits._scope_outcome = r.register_script("return {1, 'x', 2}")
        method = PoolPolicy().method_scope("taobao.tbk.item.info.get", None)
        with pytest.raises(SharedUnavailable, match="malformed"):
            await limits.record_scope(method, "pause", granted_us=0, retry_after=1.0)
    assert [source for source, _ in seen] == ["limits"] * 4
