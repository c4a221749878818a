"""A hostile upstream over real loopback HTTP: oversize answers, redirects, unreadable items,
echoed secrets and id-mapping collisions, for the TOP and the reseller provider.

A tiny aiohttp server answers what each test tells it to; the taogate app in front of it is
driven through httpx. No answer may be a 500, and in a batch the other ids are still served.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, quote_plus

import httpx
import orjson
import pytest
from aiohttp import web

from taogate import Credential, Settings, UpstreamBadRequest, UpstreamTransient
from taogate._settings import LimitsSettings, RedisSettings
from taogate.http import create_app
from taogate.providers import ResellerProvider, TopProvider
from tests.conftest import RedisServer

pytestmark = pytest.mark.integration

SECRET = "hostile-test-secret-0123456789abcdef"
TOKEN = "hostile-test-client-token-0123456789"
CRED = Credential(app_key="12345678", secret=SECRET)
AUTH = {"Authorization": f"Bearer {TOKEN}"}
CAP = 64 * 1024  # [upstream] max_response_bytes in these tests

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class Upstream:
    """The loopback server: ``handler`` answers ``/router/rest`` and ``/item_get``."""

    url: str = ""
    handler: Handler | None = None
    hits: dict[str, int] = field(default_factory=dict)
    bytes_written: int = 0

    @property
    def top_url(self) -> str:
        return f"{self.url}/router/rest"

    @property
    def reseller_url(self) -> str:
        return f"{self.url}/item_get"

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.hits[request.path] = self.hits.get(request.path, 0) + 1
        if request.path == "/elsewhere" or self.handler is None:
            return web.json_response({"error_code": "0000", "item": {}})
        return await self.handler(request)


@pytest.fixture
async def upstream() -> AsyncIterator[Upstream]:
    state = Upstream()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", state.handle)
    runner = web.AppRunner(app, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    state.url = f"http://127.0.0.1:{port}"
    try:
        yield state
    finally:
        await runner.cleanup()


def settings(upstream: Upstream, kind: str) -> Settings:
    url = upstream.top_url if kind == "top" else upstream.reseller_url
    return Settings(
        upstream={"kind": kind, "url": url, "max_response_bytes": CAP, "timeout_s": 5.0},
        credentials=[{"app_key": CRED.app_key, "secret": SECRET, "qps": 1000.0}],
        limits={"safety_factor": 1.0, "deadline_s": 1.0, "batch_window_ms": 20.0},
        server={"clients": [{"name": "site", "token": TOKEN, "rate": 10_000}]},
    )


@pytest.fixture
async def service(upstream: Upstream, request: pytest.FixtureRequest) -> AsyncIterator[Any]:
    """An httpx client for the app in front of ``upstream``, of the kind the test names."""
    kind = getattr(request, "param", "top")
    app = create_app(settings(upstream, kind))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://taogate") as client:
            yield client


def problem(resp: httpx.Response, status: int, slug: str) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = resp.json()
    assert body["type"] == f"urn:taogate:problem:{slug}"
    return body


# --- answers the server gives -----------------------------------------------------------


async def asked_ids(request: web.Request) -> list[str]:
    if request.path == "/item_get":
        return [request.query["num_iid"]]
    form = await request.post()
    return str(form["num_iids"]).split(",")


def top_item(num_iid: str, **fields: object) -> dict[str, object]:
    return {"num_iid": num_iid, "title": f"item {num_iid}", "zk_final_price": "10.00", **fields}


def top_answer(items: list[dict[str, object]]) -> web.Response:
    inner = {"results": {"n_tbk_item": items}, "request_id": "hostile-1"}
    return web.json_response({"tbk_item_info_get_response": inner})


def reseller_answer(num_iid: str, **fields: object) -> web.Response:
    item = {"num_iid": num_iid, "title": "t", "price": "10.00", **fields}
    return web.json_response({"item": item, "error_code": "0000", "reason": "ok"})


# --- the response size cap --------------------------------------------------------------


@pytest.mark.parametrize("make", [TopProvider, ResellerProvider])
async def test_an_oversize_answer_with_content_length_is_transient(
    upstream: Upstream, make: Callable[..., Any]
) -> None:
    async def big(request: web.Request) -> web.StreamResponse:
        return web.Response(body=b" " * (CAP + 1), content_type="application/json")

    upstream.handler = big
    url = upstream.top_url if make is TopProvider else upstream.reseller_url
    async with make(url=url, max_response_bytes=CAP) as provider:
        with pytest.raises(UpstreamTransient, match=f"larger than {CAP} bytes.*Content-Length"):
            await provider.fetch(["1"], CRED)


@pytest.mark.parametrize("make", [TopProvider, ResellerProvider])
async def test_an_endless_answer_without_content_length_is_not_read_past_the_cap(
    upstream: Upstream, make: Callable[..., Any]
) -> None:
    chunk = b" " * (64 * 1024)
    limit = 2048  # chunks: 128 MiB if nobody stopped reading

    async def endless(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "application/json"})
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        try:
            for _ in range(limit):
                await resp.write(chunk)
                upstream.bytes_written += len(chunk)
        except (ConnectionError, RuntimeError):  # the reader went away
            pass
        return resp

    upstream.handler = endless
    url = upstream.top_url if make is TopProvider else upstream.reseller_url
    async with make(url=url, max_response_bytes=CAP) as provider:
        with pytest.raises(UpstreamTransient, match="read past the cap"):
            await provider.fetch(["1"], CRED)
    for _ in range(100):  # the server notices the closed connection soon after
        if upstream.bytes_written < limit * len(chunk):
            break
        await asyncio.sleep(0.01)
    assert upstream.bytes_written < 32 * 1024 * 1024  # socket buffers at most, not 128 MiB


@pytest.mark.parametrize("service", ["top", "reseller"], indirect=True)
@pytest.mark.parametrize("chunked", [False, True])
async def test_an_oversize_answer_is_a_503_over_http(
    upstream: Upstream, service: httpx.AsyncClient, chunked: bool
) -> None:
    async def big(request: web.Request) -> web.StreamResponse:
        # a well-formed answer, only too large: read whole, it would be served
        (num_iid,) = await asked_ids(request)
        title = "t" * (CAP * 2)
        if request.path == "/item_get":
            doc: dict[str, Any] = {"item": {"num_iid": num_iid, "title": title, "price": "1"}}
        else:
            inner = {"results": {"n_tbk_item": [top_item(num_iid, title=title)]}}
            doc = {"tbk_item_info_get_response": inner | {"request_id": "r"}}
        body = orjson.dumps(doc)
        if not chunked:
            return web.Response(body=body, content_type="application/json")
        resp = web.StreamResponse(headers={"Content-Type": "application/json"})
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        for start in range(0, len(body), CAP // 2):
            await resp.write(body[start : start + CAP // 2])
        return resp

    upstream.handler = big
    resp = await service.get("/v1/items/520000000001", headers=AUTH)
    body = problem(resp, 503, "unavailable")
    assert body["reason"] == "UpstreamTransient"


# --- redirects --------------------------------------------------------------------------


@pytest.mark.parametrize("service", ["top", "reseller"], indirect=True)
@pytest.mark.parametrize("status", [301, 302, 307, 308])
async def test_a_redirect_is_never_followed(
    upstream: Upstream, service: httpx.AsyncClient, status: int
) -> None:
    async def redirect(request: web.Request) -> web.StreamResponse:
        return web.Response(status=status, headers={"Location": f"{upstream.url}/elsewhere"})

    upstream.handler = redirect
    resp = await service.get("/v1/items/520000000001", headers=AUTH)
    problem(resp, 503, "unavailable")
    assert upstream.hits.get("/elsewhere", 0) == 0  # the signed request went nowhere else
    assert sum(upstream.hits.values()) >= 1


async def test_a_redirect_is_a_transient_failure_naming_it(upstream: Upstream) -> None:
    async def redirect(request: web.Request) -> web.StreamResponse:
        return web.Response(status=307, headers={"Location": f"{upstream.url}/elsewhere"})

    upstream.handler = redirect
    async with TopProvider(url=upstream.top_url) as provider:
        with pytest.raises(UpstreamTransient, match="redirect; not followed") as info:
            await provider.fetch(["1"], CRED)
    assert info.value.code == "http_307"
    assert upstream.hits.get("/elsewhere", 0) == 0


# --- unreadable items -------------------------------------------------------------------

HOSTILE_PRICES = [
    {"zk_final_price": "1e999999999", "coupon_amount": "5", "coupon_start_fee": "1"},
    {"zk_final_price": "not a price"},
    {"zk_final_price": "-3.00"},
    {"zk_final_price": "1000000001"},
]


@pytest.mark.parametrize("fields", HOSTILE_PRICES)
async def test_an_unreadable_item_fails_its_id_alone_in_a_batch(
    upstream: Upstream, service: httpx.AsyncClient, fields: dict[str, object]
) -> None:
    ids = [f"5200000000{i:02d}" for i in range(40)]
    bad = ids[13]

    async def answer(request: web.Request) -> web.StreamResponse:
        return top_answer(
            [top_item(i, **(fields if i == bad else {})) for i in await asked_ids(request)]
        )

    upstream.handler = answer
    resp = await service.post("/v1/items:batch", json={"ids": ids}, headers=AUTH)
    assert resp.status_code == 200, resp.text
    results = resp.json()["results"]
    for num_iid in ids:
        if num_iid != bad:
            assert results[num_iid]["item"]["zk_final_price"] == "10.00"
    error = results[bad]["error"]
    assert error["status"] == 502
    assert error["type"] == "urn:taogate:problem:upstream-unreadable-item"
    assert error["num_iid"] == bad
    assert bad in error["detail"]
    # not cached as "not found" (nor at all): asked again, the upstream is asked again
    calls = upstream.hits["/router/rest"]
    resp = await service.get(f"/v1/items/{bad}", headers=AUTH)
    body = problem(resp, 502, "upstream-unreadable-item")
    assert body["num_iid"] == bad
    assert upstream.hits["/router/rest"] == calls + 1
    resp = await service.get(f"/v1/items/{ids[0]}", headers=AUTH)  # the others were cached
    assert resp.status_code == 200
    assert upstream.hits["/router/rest"] == calls + 1


@pytest.mark.parametrize("service", ["reseller"], indirect=True)
@pytest.mark.parametrize(
    "fields",
    [{"price": "1e999999999", "promotion_price": "3"}, {"price": "abc"}, {"price": -1}],
)
async def test_an_unreadable_reseller_item_is_a_502_naming_it(
    upstream: Upstream, service: httpx.AsyncClient, fields: dict[str, object]
) -> None:
    async def answer(request: web.Request) -> web.StreamResponse:
        (num_iid,) = await asked_ids(request)
        return reseller_answer(num_iid, **(fields if num_iid == "520000000002" else {}))

    upstream.handler = answer
    resp = await service.post(
        "/v1/items:batch", json={"ids": ["520000000001", "520000000002"]}, headers=AUTH
    )
    assert resp.status_code == 200, resp.text
    results = resp.json()["results"]
    assert results["520000000001"]["item"]["zk_final_price"] == "10.00"
    assert results["520000000002"]["error"]["status"] == 502
    body = problem(
        await service.get("/v1/items/520000000002", headers=AUTH), 502, "upstream-unreadable-item"
    )
    assert body["num_iid"] == "520000000002"
    assert upstream.hits["/item_get"] == 3  # 2 in the batch, then again: never cached


# --- id mapping -------------------------------------------------------------------------


async def test_an_item_answering_another_asked_id_is_not_stored_under_it(
    upstream: Upstream, service: httpx.AsyncClient
) -> None:
    a, b, c = "520000000001", "520000000002", "520000000003"

    async def answer(request: web.Request) -> web.StreamResponse:
        # B's item claims to answer A; C is answered under a new id (a legitimate mapping)
        return top_answer(
            [
                top_item(b, input_num_iid=a, zk_final_price="2.00"),
                top_item("Xa9bQ3kT", input_num_iid=c, zk_final_price="3.00"),
            ]
        )

    upstream.handler = answer
    resp = await service.post("/v1/items:batch", json={"ids": [a, b, c]}, headers=AUTH)
    assert resp.status_code == 200, resp.text
    results = resp.json()["results"]
    assert results[b]["item"]["num_iid"] == b
    assert results[b]["item"]["zk_final_price"] == "2.00"
    assert results[c]["item"]["num_iid"] == "Xa9bQ3kT"
    assert results[a]["error"]["type"] == "urn:taogate:problem:upstream-unreadable-item"

    async def empty(request: web.Request) -> web.StreamResponse:
        return top_answer([])

    upstream.handler = empty
    calls = upstream.hits["/router/rest"]
    problem(await service.get(f"/v1/items/{a}", headers=AUTH), 404, "item-not-found")
    assert upstream.hits["/router/rest"] == calls + 1  # A was not cached as "not found"


async def test_two_items_for_one_id_serve_neither(
    upstream: Upstream, service: httpx.AsyncClient
) -> None:
    a, b = "520000000001", "520000000002"

    async def answer(request: web.Request) -> web.StreamResponse:
        return top_answer(
            [
                top_item(a, zk_final_price="1.00"),
                top_item(a, zk_final_price="9.00"),
                top_item(b),
            ]
        )

    upstream.handler = answer
    resp = await service.post("/v1/items:batch", json={"ids": [a, b]}, headers=AUTH)
    results = resp.json()["results"]
    assert results[a]["error"]["status"] == 502
    assert results[b]["item"]["zk_final_price"] == "10.00"


# --- echoed secrets ---------------------------------------------------------------------


@pytest.mark.parametrize("service", ["reseller"], indirect=True)
async def test_a_reseller_echoing_its_query_string_never_shows_the_secret(
    upstream: Upstream, service: httpx.AsyncClient
) -> None:
    async def echo(request: web.Request) -> web.StreamResponse:
        reason = f"invalid request {request.query_string} ({request.raw_path}) " + "x" * 3000
        return web.json_response({"error_code": "4000", "reason": reason})

    upstream.handler = echo
    resp = await service.get("/v1/items/520000000001", headers=AUTH)
    body = problem(resp, 422, "upstream-rejected-id")
    text = resp.text
    for form in (SECRET, quote(SECRET, safe=""), quote_plus(SECRET)):
        assert form not in text
    assert len(body["detail"]) <= 260  # our own words and at most 200 of the upstream's


async def test_top_error_text_never_shows_a_configured_secret(
    upstream: Upstream, service: httpx.AsyncClient
) -> None:
    async def echo(request: web.Request) -> web.StreamResponse:
        error = {
            "code": 41,
            "msg": "Invalid Arguments",
            "sub_code": f"isv.invalid-parameter:{TOKEN}",
            "sub_msg": f"client token {TOKEN}, secret {SECRET}, " + "y" * 3000,
            "request_id": "r",
        }
        return web.Response(
            body=orjson.dumps({"error_response": error}), content_type="application/json"
        )

    upstream.handler = echo
    ids = ["520000000001", "520000000002"]
    resp = await service.post("/v1/items:batch", json={"ids": ids}, headers=AUTH)
    assert resp.status_code == 200
    for num_iid in ids:
        assert resp.json()["results"][num_iid]["error"]["status"] == 422
    resp = await service.get("/v1/items/520000000001", headers=AUTH)
    body = problem(resp, 422, "upstream-rejected-id")
    assert SECRET not in resp.text
    assert TOKEN not in resp.text
    assert len(body["detail"]) <= 260


@pytest.mark.parametrize("make", [TopProvider, ResellerProvider])
async def test_a_provider_keeps_its_secret_out_of_an_echoing_error(
    upstream: Upstream, make: Callable[..., Any]
) -> None:
    async def echo(request: web.Request) -> web.StreamResponse:
        text = f"you sent {request.query_string} {await request.text()} secret={SECRET}"
        if request.path == "/item_get":
            return web.json_response({"error_code": "4000", "reason": text + "x" * 3000})
        error = {"code": 41, "sub_code": "isv.invalid-parameter", "msg": text + "x" * 3000}
        return web.json_response({"error_response": error})

    upstream.handler = echo
    url = upstream.top_url if make is TopProvider else upstream.reseller_url
    async with make(url=url) as provider:
        with pytest.raises(UpstreamBadRequest) as info:
            await provider.fetch(["520000000001"], CRED)
    assert SECRET not in str(info.value)
    assert len(info.value.message) <= 200


async def test_job_rows_never_hold_a_secret_and_other_ids_are_served(
    upstream: Upstream, redis_server: RedisServer
) -> None:
    ids = [f"5200000000{i:02d}" for i in range(6)]
    echoing, unreadable = ids[1], ids[4]

    async def answer(request: web.Request) -> web.StreamResponse:
        asked = await asked_ids(request)
        if echoing in asked:
            error = {
                "code": 41,
                "sub_code": "isv.invalid-parameter",
                "msg": f"bad id; secret={SECRET} token={TOKEN} " + "z" * 3000,
            }
            return web.json_response({"error_response": error})
        bad = {"zk_final_price": "1e999999999", "coupon_amount": "1"}
        return top_answer([top_item(i, **(bad if i == unreadable else {})) for i in asked])

    upstream.handler = answer
    s = settings(upstream, "top").model_copy(
        update={
            "redis": RedisSettings(url=redis_server.url, prefix="h" + os.urandom(3).hex()),
            "limits": LimitsSettings(safety_factor=1.0, deadline_s=5.0, batch_window_ms=20.0),
        }
    )
    app = create_app(s)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://taogate") as client:
            resp = await client.post("/v1/jobs", json={"ids": ids}, headers=AUTH)
            assert resp.status_code == 202, resp.text
            job = resp.json()["job"]
            loop = asyncio.get_running_loop()
            end = loop.time() + 30
            while loop.time() < end:
                state = (await client.get(f"/v1/jobs/{job}", headers=AUTH)).json()["state"]
                if state in ("done", "failed", "cancelled"):
                    break
                await asyncio.sleep(0.05)
            assert state == "done"
            raw = (await client.get(f"/v1/jobs/{job}/results", headers=AUTH)).content
    assert SECRET.encode() not in raw
    assert TOKEN.encode() not in raw
    rows = {r["num_iid"]: r for r in map(orjson.loads, raw.splitlines())}
    assert set(rows) == set(ids)
    assert rows[echoing]["status"] == "failed"
    assert len(rows[echoing]["error"]) <= 200
    assert rows[unreadable]["status"] == "failed"
    assert "ItemUnreadable" in rows[unreadable]["error"]
    for num_iid in set(ids) - {echoing, unreadable}:
        assert rows[num_iid]["status"] == "found"
