"""Item answers a CDN can cache: Cache-Control, ETag, Last-Modified, If-None-Match → 304."""

from __future__ import annotations

import email.utils
import re
import time
from collections.abc import AsyncIterator
from decimal import Decimal

import orjson
import pytest

from taogate import Item, Lookup, Settings, Source
from taogate.http._edge_cache import ItemCaching, etag_matches, http_date
from taogate.testing import Simulator, make_item
from tests.http.conftest import Service, make_settings, open_service

CACHE_CONTROL = re.compile(r"public, max-age=(\d+), stale-while-revalidate=30, stale-if-error=3600")


@pytest.fixture
async def plain(sim: Simulator) -> AsyncIterator[Service]:
    """A service with edge caching headers turned off."""
    async for s in open_service(make_settings(sim, edge_cache={"enabled": False}), sim):
        yield s


async def test_an_item_answer_carries_caching_headers(service: Service) -> None:
    (num_iid,) = service.present_ids(1)
    resp = await service.client.get(f"/v1/items/{num_iid}", headers=service.auth())
    assert resp.status_code == 200
    match = CACHE_CONTROL.fullmatch(resp.headers["cache-control"])
    assert match is not None, resp.headers["cache-control"]
    assert 598 <= int(match[1]) <= 600  # fetched just now: all of max_age_s remains
    etag = resp.headers["etag"]
    assert re.fullmatch(r'W/"[0-9a-f]{24}"', etag)
    fetched = email.utils.parsedate_to_datetime(resp.headers["last-modified"]).timestamp()
    assert time.time() - 5 <= fetched <= time.time() + 1
    assert resp.headers["last-modified"].endswith(" GMT")
    again = await service.client.get(f"/v1/items/{num_iid}", headers=service.auth())
    assert again.json()["source"] == "l1"
    assert again.headers["etag"] == etag  # same item, same tag
    assert again.headers["last-modified"] == resp.headers["last-modified"]


async def test_max_age_is_what_remains_of_the_lookups_freshness(service: Service) -> None:
    (num_iid,) = service.present_ids(1)
    await service.client.get(f"/v1/items/{num_iid}", headers=service.auth())
    resp = await service.client.get(f"/v1/items/{num_iid}?max_age=100", headers=service.auth())
    match = CACHE_CONTROL.fullmatch(resp.headers["cache-control"])
    assert match is not None
    assert 98 <= int(match[1]) <= 100


async def test_if_none_match_answers_304_without_a_body(service: Service) -> None:
    (num_iid,) = service.present_ids(1)
    first = await service.client.get(f"/v1/items/{num_iid}", headers=service.auth())
    etag = first.headers["etag"]
    opaque = etag.removeprefix("W/")
    for value in (etag, opaque, f'"nope", {etag}', f'W/"x",{opaque}', "*"):
        resp = await service.client.get(
            f"/v1/items/{num_iid}", headers={**service.auth(), "If-None-Match": value}
        )
        assert resp.status_code == 304, value
        assert resp.content == b""
        assert resp.headers["etag"] == etag
        assert CACHE_CONTROL.fullmatch(resp.headers["cache-control"])
        assert "content-type" not in resp.headers
        assert resp.headers["x-request-id"]
    for value in ('"nope"', 'W/"' + opaque[2:-1] + '0"', opaque[:-2] + '"'):
        resp = await service.client.get(
            f"/v1/items/{num_iid}", headers={**service.auth(), "If-None-Match": value}
        )
        assert resp.status_code == 200, value
        assert resp.json()["item"]["num_iid"] == num_iid


async def test_conditional_requests_still_need_a_client(service: Service) -> None:
    (num_iid,) = service.present_ids(1)
    resp = await service.client.get(f"/v1/items/{num_iid}", headers={"If-None-Match": "*"})
    assert resp.status_code == 401
    assert resp.headers["cache-control"] == "no-store"


async def test_not_found_is_cached_briefly_and_errors_not_at_all(service: Service) -> None:
    resp = await service.client.get(
        "/v1/items/999999999999", headers={**service.auth(), "If-None-Match": "*"}
    )
    assert resp.status_code == 404  # `*` matches only an item that exists
    assert resp.headers["cache-control"] == "public, max-age=60"
    assert "etag" not in resp.headers
    for path, status in (("/v1/items/12%2C34", 400), ("/v1/items/123?max_age=abc", 400)):
        resp = await service.client.get(path, headers=service.auth())
        assert resp.status_code == status
        assert resp.headers["cache-control"] == "no-store"
    resp = await service.client.get("/v1/items/123")
    assert resp.headers["cache-control"] == "no-store"


async def test_the_batch_route_carries_no_caching_headers(service: Service) -> None:
    ids = service.present_ids(2)
    resp = await service.client.post("/v1/items:batch", json={"ids": ids}, headers=service.auth())
    assert resp.status_code == 200
    assert "etag" not in resp.headers
    assert "cache-control" not in resp.headers


async def test_headers_can_be_turned_off(plain: Service) -> None:
    (num_iid,) = plain.present_ids(1)
    resp = await plain.client.get(f"/v1/items/{num_iid}", headers=plain.auth())
    assert resp.status_code == 200
    for name in ("cache-control", "etag", "last-modified"):
        assert name not in resp.headers
    resp = await plain.client.get(
        f"/v1/items/{num_iid}", headers={**plain.auth(), "If-None-Match": "*"}
    )
    assert resp.status_code == 200
    resp = await plain.client.get("/v1/items/999999999999", headers=plain.auth())
    assert resp.status_code == 404
    assert resp.headers["cache-control"] == "no-store"


# --- the pieces ---------------------------------------------------------------------------


def caching(**edge: object) -> ItemCaching:
    return ItemCaching(Settings(server={"edge_cache": edge}))


def test_the_body_is_the_lookups_json_byte_for_byte() -> None:
    c = caching()
    item = make_item("520000000001", price="68.90")
    for lookup in (
        Lookup(num_iid="520000000001", item=item, source=Source.L1, age_s=12.3456),
        Lookup(num_iid="520000000001", item=item, source=Source.UPSTREAM, stale=True, age_s=0),
    ):
        item_json, _ = c.item_json(item)
        assert c.body(lookup, item_json) == orjson.dumps(lookup.to_dict())


def test_the_etag_follows_the_content_not_the_object() -> None:
    c = caching()
    a, b = make_item("1", price="9.90"), make_item("1", price="9.90")
    assert a is not b
    assert c.item_json(a)[1] == c.item_json(b)[1]
    assert c.item_json(a)[0] is c.item_json(a)[0]  # kept, not rendered again
    cheaper = make_item("1", price="8.90")
    assert c.item_json(cheaper)[1] != c.item_json(a)[1]
    other = ItemCaching(Settings())  # another replica: the same tag for the same item
    assert other.item_json(b)[1] == c.item_json(a)[1]


def test_the_memo_stays_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    import taogate.http._edge_cache as edge

    monkeypatch.setattr(edge, "MEMO_ITEMS", 4)
    c = caching()
    items = [make_item(str(i)) for i in range(10)]
    tags = [c.item_json(i)[1] for i in items]
    assert len(c._items) == 4
    assert [c.item_json(i)[1] for i in items] == tags


def test_cache_control_values() -> None:
    item: Item = make_item("1")
    c = caching(stale_while_revalidate_s=5, stale_if_error_s=60)
    fresh = Lookup(num_iid="1", item=item, source=Source.L1, age_s=100.7)
    assert c.cache_control(fresh, None) == (
        b"public, max-age=499, stale-while-revalidate=5, stale-if-error=60"
    )
    assert c.cache_control(fresh, 60.0).startswith(b"public, max-age=0,")  # older than asked
    assert c.cache_control(fresh, 3600.0).startswith(b"public, max-age=499,")  # never past 600
    stale = Lookup(num_iid="1", item=item, source=Source.L1, stale=True, age_s=700)
    assert c.cache_control(stale, None).startswith(b"public, max-age=0,")
    private = caching(public=False)
    assert private.cache_control(fresh, None).startswith(b"private, max-age=499,")
    assert private.not_found_headers(Lookup(num_iid="1")) == {
        "Cache-Control": "private, max-age=60"
    }
    c = caching(not_found_max_age_s=0)
    assert c.not_found_headers(Lookup(num_iid="1")) == {"Cache-Control": "no-store"}
    c = caching(not_found_max_age_s=600)  # never past what remains of negative_ttl_s (120)
    assert c.not_found_headers(Lookup(num_iid="1", age_s=30.5)) == {
        "Cache-Control": "public, max-age=89"
    }
    assert c.not_found_headers(Lookup(num_iid="1", stale=True)) == {"Cache-Control": "no-store"}


def test_last_modified_is_the_fetch_time() -> None:
    c = ItemCaching(Settings(), wall_clock=lambda: 1_767_225_600.75)  # 2026-01-01 00:00:00.75
    lookup = Lookup(num_iid="1", item=make_item("1"), source=Source.L1, age_s=3600.5)
    assert c.last_modified(lookup) == b"Wed, 31 Dec 2025 23:00:00 GMT"


@pytest.mark.parametrize("seconds", [0, 951782400, 1767225599, 2000000000])
def test_http_date_is_imf_fixdate(seconds: int) -> None:
    assert http_date(seconds).decode() == email.utils.formatdate(seconds, usegmt=True)


@pytest.mark.parametrize(
    ("header", "matches"),
    [
        (b'W/"abc"', True),
        (b'"abc"', True),
        (b'  "x" , W/"abc"  ', True),
        (b"*", True),
        (b" * ", True),
        (b'"abcd"', False),
        (b'"ab"', False),
        (b'W/"xabc"', False),
        (b"abc", False),
        (b"", False),
    ],
)
def test_weak_comparison(header: bytes, matches: bool) -> None:
    assert etag_matches(header, b'W/"abc"') is matches


def test_money_in_the_cached_body_stays_exact() -> None:
    c = caching()
    item = make_item("1", price="0.10")
    body = orjson.loads(
        c.body(Lookup(num_iid="1", item=item, source=Source.L1), c.item_json(item)[0])
    )
    assert body["item"]["final_price"] == "0.10"
    assert Decimal(body["item"]["final_price"]) == Decimal("0.10")
