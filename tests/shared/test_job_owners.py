"""Jobs between clients, against a real Redis: owners, caps, body limits and CSV escaping."""

from __future__ import annotations

import asyncio
import csv
import io
import os
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import httpx
import orjson
import pytest
from redis.asyncio import Redis

from taogate import Settings
from taogate.http import create_app
from taogate.jobs._store import beijing_day, seconds_to_beijing_midnight
from taogate.testing import FakeProvider
from taogate.testing._fakes import make_item
from tests.conftest import RedisServer

pytestmark = pytest.mark.integration

TOKENS = {
    "alice": "alice-jobs-token-0000000000000001",
    "bob": "bob-jobs-token-00000000000000000002",
    "ops": "ops-jobs-token-00000000000000000003",
}


def auth(who: str | None) -> dict[str, str]:
    return {} if who is None else {"Authorization": f"Bearer {TOKENS[who]}"}


def settings(redis_url: str, *, clients: bool = True, **jobs: Any) -> Settings:
    return Settings(
        credentials=[{"app_key": "94000001", "secret": "owners-test-secret", "qps": 1000}],
        redis={"url": redis_url, "prefix": "o" + os.urandom(3).hex()},
        server={
            "clients": [
                {"name": "alice", "token": TOKENS["alice"], "rate": 1e6},
                {"name": "bob", "token": TOKENS["bob"], "rate": 1e6},
                {"name": "ops", "token": TOKENS["ops"], "rate": 1e6, "admin": True},
            ]
            if clients
            else [],
            "max_body_bytes": 1024,
        },
        jobs=jobs,
    )


async def service(s: Settings, provider: FakeProvider) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(s, provider=provider)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://taogate") as client:
            yield client


async def wait_done(client: httpx.AsyncClient, job: str, who: str | None) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    end = loop.time() + 20
    while loop.time() < end:
        status = (await client.get(f"/v1/jobs/{job}", headers=auth(who))).json()
        if status["state"] in ("done", "failed", "cancelled"):
            return dict(status)
        await asyncio.sleep(0.05)
    raise AssertionError(f"job {job} did not finish: {status}")


def listed(resp: httpx.Response) -> set[str]:
    assert resp.status_code == 200, resp.text
    return {j["job"] for j in resp.json()["jobs"]}


async def test_a_job_is_seen_only_by_its_owner_and_admins(redis_server: RedisServer) -> None:
    provider = FakeProvider(gate=asyncio.Event())  # jobs stay in progress until the gate opens
    async for client in service(settings(redis_server.url), provider):
        a = await client.post("/v1/jobs", json={"ids": ["101", "102"]}, headers=auth("alice"))
        b = await client.post("/v1/jobs", json={"ids": ["201"]}, headers=auth("bob"))
        assert a.status_code == b.status_code == 202, (a.text, b.text)
        job_a, job_b = a.json()["job"], b.json()["job"]
        assert a.json()["owner"] == "alice"
        absent = await client.get("/v1/jobs/00000000deadbeef", headers=auth("bob"))
        # bob meets alice's job as if it did not exist, on every route
        answers = [
            await client.get(f"/v1/jobs/{job_a}", headers=auth("bob")),
            await client.get(f"/v1/jobs/{job_a}/results", headers=auth("bob")),
            await client.get(f"/v1/jobs/{job_a}/results?format=csv", headers=auth("bob")),
            await client.delete(f"/v1/jobs/{job_a}", headers=auth("bob")),
        ]
        for resp in answers:
            assert resp.status_code == 404, resp.text
            assert (
                resp.json()["type"] == absent.json()["type"] == "urn:taogate:problem:job-not-found"
            )
            assert resp.json()["detail"] == absent.json()["detail"]
        assert listed(await client.get("/v1/jobs", headers=auth("bob"))) == {job_b}
        assert listed(await client.get("/v1/jobs", headers=auth("alice"))) == {job_a}
        assert listed(await client.get("/v1/jobs", headers=auth("ops"))) == {job_a, job_b}
        # the admin reads and cancels anyone's job; bob's DELETE above changed nothing
        still = await client.get(f"/v1/jobs/{job_a}", headers=auth("ops"))
        assert still.status_code == 200
        assert still.json()["state"] in ("queued", "running")
        assert still.json()["owner"] == "alice"
        cancelled = await client.delete(f"/v1/jobs/{job_b}", headers=auth("ops"))
        assert cancelled.json()["state"] == "cancelled"
        assert provider.gate is not None
        provider.gate.set()
        assert (await wait_done(client, job_a, "alice"))["state"] == "done"
        own = await client.get(f"/v1/jobs/{job_a}/results", headers=auth("alice"))
        assert len(own.content.splitlines()) == 2
        bad_limit = await client.get("/v1/jobs?limit=0", headers=auth("alice"))
        assert bad_limit.status_code == 400
        newest = await client.get("/v1/jobs?limit=1", headers=auth("ops"))
        assert [j["job"] for j in newest.json()["jobs"]] == [job_b]


async def test_anonymous_mode_keeps_working(redis_server: RedisServer) -> None:
    provider = FakeProvider.with_ids(["7"])
    async for client in service(settings(redis_server.url, clients=False), provider):
        resp = await client.post(
            "/v1/jobs", content=b"7\n8\n", headers={"content-type": "text/plain"}
        )
        assert resp.status_code == 202, resp.text
        job = resp.json()["job"]
        assert (await wait_done(client, job, None))["done"] == 2
        assert listed(await client.get("/v1/jobs")) == {job}
        assert (await client.get(f"/v1/jobs/{job}/results")).status_code == 200
        put = await client.put("/v1/jobs")
        paths = (await client.get("/openapi.json")).json()["paths"]
    assert put.status_code == 405
    assert set(put.headers["allow"].replace(" ", "").split(",")) >= {"GET", "POST"}
    # with Redis the job routes are documented, with their new answers
    submit = paths["/v1/jobs"]["post"]["responses"]
    assert {"202", "413", "429"} <= set(submit)
    assert "404" in paths["/v1/jobs/{job}"]["delete"]["responses"]
    assert "get" in paths["/v1/jobs"]


async def test_jobs_in_progress_over_the_cap_are_429(redis_server: RedisServer) -> None:
    provider = FakeProvider(gate=asyncio.Event())
    s = settings(redis_server.url, max_active_per_client=2)
    async for client in service(s, provider):
        submitted = [
            await client.post("/v1/jobs", json={"ids": [i]}, headers=auth("alice"))
            for i in ("1", "2")
        ]
        first, second = (r.json()["job"] for r in submitted)
        over = await client.post("/v1/jobs", json={"ids": ["3"]}, headers=auth("alice"))
        other = await client.post("/v1/jobs", json={"ids": ["4"]}, headers=auth("bob"))
        await client.delete(f"/v1/jobs/{first}", headers=auth("alice"))
        again = await client.post("/v1/jobs", json={"ids": ["3"]}, headers=auth("alice"))
        after_cancel = await client.post("/v1/jobs", json={"ids": ["5"]}, headers=auth("alice"))
        assert provider.gate is not None
        provider.gate.set()
        await wait_done(client, second, "alice")
        after_done = await client.post("/v1/jobs", json={"ids": ["6"]}, headers=auth("alice"))
        mine = listed(await client.get("/v1/jobs", headers=auth("alice")))
    assert over.status_code == 429, over.text
    assert over.headers["retry-after"] == "30"
    assert over.json()["type"] == "urn:taogate:problem:job-limit-reached"
    assert over.json()["limit"] == "active"
    assert over.json()["retry_after"] == 30
    assert "2 jobs in progress" in over.json()["detail"]
    assert other.status_code == 202  # the cap is alice's, not everyone's
    assert again.status_code == 202  # a cancelled job no longer counts
    assert after_cancel.status_code == 429
    assert after_done.status_code == 202  # nor does a finished one
    assert len(mine) == 4  # the refused submissions left no job behind


async def test_ids_over_the_daily_cap_are_429_until_beijing_midnight(
    redis_server: RedisServer,
) -> None:
    s = settings(redis_server.url, max_ids_per_client_per_day=100)
    ids = [str(1000 + i) for i in range(60)]
    before = seconds_to_beijing_midnight(time.time())
    async for client in service(s, FakeProvider()):
        ok = await client.post("/v1/jobs", json={"ids": ids}, headers=auth("alice"))
        over = await client.post("/v1/jobs", json={"ids": ids[:41]}, headers=auth("alice"))
        fits = await client.post("/v1/jobs", json={"ids": ids[:40]}, headers=auth("alice"))
        full = await client.post("/v1/jobs", json={"ids": ids[:1]}, headers=auth("alice"))
        other = await client.post("/v1/jobs", json={"ids": ids}, headers=auth("bob"))
        never = await client.post(
            "/v1/jobs", json={"ids": [str(i) for i in range(101)]}, headers=auth("bob")
        )
    after = seconds_to_beijing_midnight(time.time())
    assert ok.status_code == fits.status_code == other.status_code == 202
    assert over.status_code == full.status_code == 429
    assert over.json()["limit"] == "ids_per_day"
    assert "60 ids today" in over.json()["detail"]
    retry = int(over.headers["retry-after"])
    assert after <= retry <= before + 1 or before < 60  # (unless the day turned meanwhile)
    assert over.json()["retry_after"] == retry
    assert never.status_code == 400  # more than a whole day's allowance: a retry cannot pass
    assert "at most 100 a day" in never.json()["detail"]
    async with Redis.from_url(redis_server.url) as r:
        keys = [k.decode() async for k in r.scan_iter(f"{{{s.redis.prefix}:jc:*}}:ids:*")]
        counts = sorted([int(await r.get(k) or 0) for k in keys])
        ttls = [await r.ttl(k) for k in keys]
    assert all(k.endswith(f":ids:{beijing_day(time.time())}") for k in keys)
    assert counts == [60, 100]  # bob's, alice's: refused submissions counted nothing
    assert all(0 < t <= 2 * 86_400 for t in ttls)


def test_the_day_is_beijing_s() -> None:
    # 2026-12-07 16:30 UTC is 00:30 on the 8th in Beijing: the day has turned there
    wall = 1_796_661_000.0
    assert time.strftime("%Y-%m-%d %H:%M", time.gmtime(wall)) == "2026-12-07 16:30"
    assert beijing_day(wall) == "2026-12-08"
    assert seconds_to_beijing_midnight(wall) == 23.5 * 3600
    assert beijing_day(wall - 3600) == "2026-12-07"
    assert seconds_to_beijing_midnight(wall - 3600) == 1800


async def test_job_bodies_past_their_limits_are_413(redis_server: RedisServer) -> None:
    # limits: JSON 10 × (20 + 16) + 64 KiB = 65,896 bytes; text 1,000 × (20 + 2) + 64 KiB =
    # 87,536, which is also what the edge receives at most (the larger of the two)
    s = settings(redis_server.url, max_json_ids=10, max_ids=1000)
    text = {"content-type": "text/plain", **auth("alice")}
    json_h = {"content-type": "application/json", **auth("alice")}
    padded_json = b'{"ids": ["1"]' + b" " * 66_000 + b"}"
    padded_text = b"1\n" + b"\n" * 88_000

    async def chunked(body: bytes) -> AsyncIterator[bytes]:
        for i in range(0, len(body), 8192):
            yield body[i : i + 8192]

    async for client in service(s, FakeProvider()):
        answers = {
            "json": await client.post("/v1/jobs", content=padded_json, headers=json_h),
            "json chunked": await client.post(
                "/v1/jobs", content=chunked(padded_json), headers=json_h
            ),
            "text": await client.post("/v1/jobs", content=padded_text, headers=text),
            "text chunked": await client.post(
                "/v1/jobs", content=chunked(padded_text), headers=text
            ),
        }
        small_json = await client.post(
            "/v1/jobs", content=padded_json[:60_000] + b"}", headers=json_h
        )
        small_text = await client.post("/v1/jobs", content=padded_text[:60_000], headers=text)
    for name, resp in answers.items():
        assert resp.status_code == 413, (name, resp.text)
        assert resp.json()["type"] == "urn:taogate:problem:payload-too-large"
    assert answers["json"].json()["max_bytes"] == 65_896
    assert "send a text body" in answers["json"].json()["detail"]
    assert answers["text"].json()["max_bytes"] == 87_536
    # within the limits (and past [server] max_body_bytes, 1 KiB here) they are taken
    assert small_json.status_code == 202, small_json.text
    assert small_text.status_code == 202, small_text.text


async def test_text_bodies_split_anywhere_give_the_same_ids(redis_server: RedisServer) -> None:
    """Lines cut across chunks, CRLF line ends, blank lines and a last line without an end."""
    body = b"111\r\n\r\n222\n  333  \n111\n444"

    async def pieces(size: int) -> AsyncIterator[bytes]:
        for i in range(0, len(body), size):
            yield body[i : i + size]

    headers = {"content-type": "text/plain", **auth("alice")}
    async for client in service(settings(redis_server.url), FakeProvider()):
        totals = []
        for size in (1, 2, 3, 5, len(body)):
            resp = await client.post("/v1/jobs", content=pieces(size), headers=headers)
            assert resp.status_code == 202, resp.text
            totals.append(resp.json()["total"])
        wrong = await client.post("/v1/jobs", content=b"1\r\n2\r\n\r\nx y\r\n", headers=headers)
        long_line = await client.post("/v1/jobs", content=b"1\n" + b"9" * 5000, headers=headers)
        latin1 = await client.post("/v1/jobs", content=b"1\n\xe9\n", headers=headers)
    assert totals == [4] * 5
    assert wrong.status_code == 400
    assert wrong.json()["line"] == 4
    assert long_line.status_code == 400
    assert long_line.json()["line"] == 2
    assert latin1.status_code == 400
    assert "UTF-8" in latin1.json()["detail"]


async def test_csv_cells_that_would_start_a_formula_are_escaped(redis_server: RedisServer) -> None:
    hostile = {
        "0": replace(make_item("0"), title="+1+2"),
        "1": replace(make_item("1"), title='=HYPERLINK("http://evil.example","x")'),
        "2": replace(make_item("2"), title="@SUM(A1)"),
        "3": replace(make_item("3"), title="-2+3+cmd|' /C calc'!A0"),
        "4": replace(make_item("4"), title="\tcmd"),
        "5": replace(make_item("5"), title="\rcmd"),
        "6": replace(make_item("6"), title="plain = text"),
    }
    headers = {"content-type": "text/plain", **auth("alice")}
    async for client in service(settings(redis_server.url), FakeProvider(items=hostile)):
        job = (
            await client.post("/v1/jobs", content=b"0\n1\n2\n3\n4\n5\n6\n-7\n", headers=headers)
        ).json()
        await wait_done(client, job["job"], "alice")
        text = (
            await client.get(f"/v1/jobs/{job['job']}/results?format=csv", headers=auth("alice"))
        ).text
        ndjson = (await client.get(f"/v1/jobs/{job['job']}/results", headers=auth("alice"))).content
    rows = {r["num_iid"]: r for r in csv.DictReader(io.StringIO(text))}
    assert rows["0"]["title"] == "'+1+2"
    assert rows["1"]["title"] == '\'=HYPERLINK("http://evil.example","x")'
    assert rows["2"]["title"] == "'@SUM(A1)"
    assert rows["3"]["title"] == "'-2+3+cmd|' /C calc'!A0"
    assert rows["4"]["title"] == "'\tcmd"
    assert rows["5"]["title"] == "'\rcmd"
    assert rows["6"]["title"] == "plain = text"
    assert rows["'-7"]["status"] == "not_found"  # an id the pattern allows, escaped too
    # the NDJSON rows keep the values as they are (JSON runs nothing)
    titles = {
        orjson.loads(x)["num_iid"]: orjson.loads(x).get("item", {}).get("title")
        for x in ndjson.splitlines()
    }
    assert titles["1"] == '=HYPERLINK("http://evil.example","x")'


async def test_a_job_route_answers_503_when_redis_goes_away(own_redis: RedisServer) -> None:
    """Redis refusing a job route's read is a 503 with Retry-After for that request, not a 500."""
    provider = FakeProvider.with_ids(["1"])
    s = settings(own_redis.url)
    async for client in service(s, provider):
        job = (await client.post("/v1/jobs", json={"ids": ["1"]}, headers=auth("alice"))).json()
        own_redis.stop()
        answers = [
            await client.get(f"/v1/jobs/{job['job']}", headers=auth("alice")) for _ in range(3)
        ]
        own_redis.start()
    for answer in answers:
        assert answer.status_code == 503, answer.text
        assert answer.headers["retry-after"]
        assert answer.json()["type"] == "urn:taogate:problem:unavailable"
