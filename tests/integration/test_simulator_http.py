"""The simulator over real HTTP on loopback: TOP calls, the reseller route, faults and control."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import aiohttp
import orjson
import pytest

from taogate._settings import SimSettings
from taogate.providers.base import Credential
from taogate.providers.top import (
    INFO_GET,
    UPGRADE_GET,
    TopProvider,
    beijing_timestamp,
    parse_items,
    sign,
)
from taogate.testing import ItemKind, SimKey, Simulator, items_only

pytestmark = pytest.mark.integration

FAST = SimKey(app_key="12345678", secret="helloworld", qps=1000)
SLOW = SimKey(app_key="87654321", secret="slowsecret", qps=2)


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    settings = SimSettings(
        latency_ms=(0, 0), price_changes_per_hour=0, coupon_ratio=0.5, ban_s=30, catalog_size=5000
    )
    async with Simulator([FAST, SLOW], settings=settings, host="127.0.0.1", port=0) as simulator:
        yield simulator


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def present(sim: Simulator, n: int) -> list[str]:
    return [i for i in sim.catalog.ids() if sim.catalog.kind(i) is ItemKind.PRESENT][:n]


def signed(
    ids: list[str],
    *,
    key: SimKey = FAST,
    method: str = INFO_GET,
    sign_method: str = "hmac-sha256",
    **extra: str,
) -> dict[str, str]:
    params = {
        "method": method,
        "app_key": key.app_key,
        "timestamp": beijing_timestamp(),
        "v": "2.0",
        "format": "json",
        "sign_method": sign_method,
        ("item_id" if method == UPGRADE_GET else "num_iids"): ",".join(ids),
        **extra,
    }
    params["sign"] = sign(params, key.secret, sign_method)
    return params


async def post(http: aiohttp.ClientSession, url: str, params: dict[str, str]) -> Any:
    async with http.post(url, data=params) as resp:
        assert resp.status == 200
        return orjson.loads(await resp.read())


async def get(http: aiohttp.ClientSession, url: str, params: dict[str, str] | None = None) -> Any:
    async with http.get(url, params=params) as resp:
        assert resp.status == 200
        return orjson.loads(await resp.read())


def error_code(doc: Any) -> int | None:
    return doc["error_response"]["code"] if "error_response" in doc else None


async def test_port_zero_picks_a_free_port(sim: Simulator) -> None:
    assert sim.port > 0
    assert sim.base_url == f"http://127.0.0.1:{sim.port}"
    assert sim.url == f"{sim.base_url}/router/rest"
    assert sim.reseller_url == f"{sim.base_url}/taobao/item_get/"


@pytest.mark.parametrize("sign_method", ["md5", "hmac", "hmac-sha256"])
async def test_signed_get_and_post_succeed(
    sim: Simulator, http: aiohttp.ClientSession, sign_method: str
) -> None:
    ids = present(sim, 40)
    params = signed(ids, sign_method=sign_method)
    by_post = await post(http, sim.url, params)
    by_get = await get(http, sim.url, params)
    for doc in (by_post, by_get):
        items = doc["tbk_item_info_get_response"]["results"]["n_tbk_item"]
        assert [i["num_iid"] for i in items] == ids


async def test_params_split_between_query_and_body(
    sim: Simulator, http: aiohttp.ClientSession
) -> None:
    ids = present(sim, 3)
    params = signed(ids)
    query = {k: v for k, v in params.items() if k != "num_iids"}
    async with http.post(sim.url, params=query, data={"num_iids": params["num_iids"]}) as resp:
        doc = orjson.loads(await resp.read())
    assert set(parse_items(orjson.dumps(doc), INFO_GET, ids)) == set(ids)


async def test_top_provider_parameters_are_accepted(
    sim: Simulator, http: aiohttp.ClientSession
) -> None:
    ids = present(sim, 10)
    for method, simplify in ((INFO_GET, False), (UPGRADE_GET, True)):
        provider = TopProvider(url=sim.url, method=method, simplify=simplify, session=http)
        params = provider.build_params(ids, Credential(app_key=FAST.app_key, secret=FAST.secret))
        items = items_only(
            parse_items(orjson.dumps(await post(http, sim.url, params)), method, ids)
        )
        truth = (await get(http, f"{sim.base_url}/_sim/truth", {"ids": ",".join(ids)}))["items"]
        assert set(items) == set(ids)
        for num_iid, item in items.items():
            assert str(item.final_price) == truth[num_iid]["final_price"]
            assert str(item.zk_final_price) == truth[num_iid]["zk_final_price"]


async def test_refusals(sim: Simulator, http: aiohttp.ClientSession) -> None:
    ids = present(sim, 41)
    wrong_secret = signed(ids[:1], key=SimKey(app_key=FAST.app_key, secret="wrong"))
    unknown = signed(ids[:1], key=SimKey(app_key="00000000", secret="x"))
    skewed = {**signed(ids[:1]), "timestamp": beijing_timestamp(time.time() - 3600)}
    skewed["sign"] = sign(skewed, FAST.secret, "hmac-sha256")
    doc = await post(http, sim.url, wrong_secret)
    assert doc["error_response"]["sub_code"] == "isv.invalid-signature"
    assert error_code(doc) == 25
    doc = await post(http, sim.url, unknown)
    assert (error_code(doc), doc["error_response"]["sub_code"]) == (29, "isv.appkey-not-exists")
    assert error_code(await post(http, sim.url, skewed)) == 31
    doc = await post(http, sim.url, signed(ids))
    assert (error_code(doc), doc["error_response"]["sub_code"]) == (41, "isv.invalid-parameter")
    assert doc["error_response"]["request_id"]


async def test_simplify_and_upgrade_shapes(sim: Simulator, http: aiohttp.ClientSession) -> None:
    ids = present(sim, 20)
    doc = await post(http, sim.url, signed(ids, simplify="true"))
    assert set(doc) == {"results", "request_id"}
    assert [i["num_iid"] for i in doc["results"]] == ids
    assert all(isinstance(i.get("small_images", []), list) for i in doc["results"])
    normal = await post(http, sim.url, signed(ids, method=UPGRADE_GET))
    inner = normal["tbk_item_info_upgrade_get_response"]
    detail = inner["results"]["tbk_item_detail"][0]
    assert set(detail) == {"item_id", "item_basic_info", "price_promotion_info", "publish_info"}
    assert (
        "final_promotion_path_map_data"
        in detail["price_promotion_info"]["final_promotion_path_list"]
    )
    assert detail["publish_info"]["click_url"].startswith("https://")
    simple = await post(http, sim.url, signed(ids, method=UPGRADE_GET, simplify="true"))
    assert isinstance(
        simple["results"][0]["price_promotion_info"]["final_promotion_path_list"], list
    )


async def test_code_7_and_the_ban(sim: Simulator, http: aiohttp.ClientSession) -> None:
    ids = present(sim, 1)
    codes = [error_code(await post(http, sim.url, signed(ids, key=SLOW))) for _ in range(4)]
    assert codes == [None, None, 7, 7]
    doc = await post(http, sim.url, signed(ids, key=SLOW))
    assert doc["error_response"]["sub_code"] == "accesscontrol.limited-by-app-access-count"
    assert doc["error_response"]["sub_msg"] in {
        "This ban will last for 30 more seconds",
        "This ban will last for 29 more seconds",
    }
    row = (await get(http, f"{sim.base_url}/_sim/stats"))["keys"][SLOW.app_key]
    assert (row["ok"], row["code7"], row["calls_during_ban"]) == (2, 3, 2)
    assert row["max_calls_in_1s"] == 5
    assert 29 < row["banned_for_s"] <= 30
    assert sim.stats()["keys"][SLOW.app_key]["code7"] == 3


async def set_fault(http: aiohttp.ClientSession, sim: Simulator, **doc: Any) -> Any:
    async with http.post(f"{sim.base_url}/_sim/faults", json=doc) as resp:
        assert resp.status == 200
        return await resp.json()


async def test_faults(sim: Simulator, http: aiohttp.ClientSession) -> None:
    params = signed(present(sim, 2))
    await set_fault(http, sim, kind="outage", duration_s=30)
    async with http.post(sim.url, data=params) as resp:
        assert resp.status == 503
        assert "json" not in resp.content_type
    listed = await get(http, f"{sim.base_url}/_sim/faults")
    assert [f["kind"] for f in listed["faults"]] == ["outage"]
    async with http.delete(f"{sim.base_url}/_sim/faults") as resp:
        assert (await resp.json()) == {"cleared": 1}

    await set_fault(http, sim, kind="malformed", duration_s=30)
    async with http.post(sim.url, data=params) as resp:
        assert resp.status == 200
        with pytest.raises(orjson.JSONDecodeError):
            orjson.loads(await resp.read())
    sim.state.faults.clear()

    await set_fault(http, sim, kind="code15", duration_s=30, ratio=1.0)
    doc = await post(http, sim.url, params)
    assert (error_code(doc), doc["error_response"]["sub_code"]) == (15, "isp.remote-service-error")
    sim.state.faults.clear()

    await set_fault(http, sim, kind="revoke", duration_s=30, app_key=FAST.app_key)
    assert error_code(await post(http, sim.url, params)) == 29
    assert error_code(await post(http, sim.url, signed(present(sim, 1), key=SLOW))) is None
    sim.state.faults.clear()

    fault = await set_fault(http, sim, kind="slow", duration_s=30, extra_latency_ms=150)
    assert fault["fault"]["extra_latency_ms"] == 150
    started = time.perf_counter()
    assert error_code(await post(http, sim.url, params)) is None
    assert time.perf_counter() - started >= 0.15
    assert sim.stats()["totals"]["faulted"] == 2


@pytest.mark.parametrize(
    "body",
    [b"not json", b'{"kind": "fire", "duration_s": 1}', b'{"kind": "outage", "duration_s": -1}'],
)
async def test_bad_fault_json_is_a_400(
    sim: Simulator, http: aiohttp.ClientSession, body: bytes
) -> None:
    async with http.post(f"{sim.base_url}/_sim/faults", data=body) as resp:
        assert resp.status == 400
        assert (await resp.json())["error"]


async def test_reseller_endpoint(sim: Simulator, http: aiohttp.ClientSession) -> None:
    num_iid = present(sim, 1)[0]
    query = {"key": FAST.app_key, "secret": FAST.secret, "num_iid": num_iid, "is_promotion": "1"}
    doc = await get(http, sim.reseller_url, query)
    truth = (await get(http, f"{sim.base_url}/_sim/truth", {"ids": num_iid}))["items"][num_iid]
    assert (doc["error_code"], doc["reason"], doc["error"]) == ("0000", "ok", "")
    assert doc["request_id"].startswith("gw-")
    assert Decimal(repr(doc["item"]["price"])) == Decimal(truth["zk_final_price"])
    assert doc["item"]["orginal_price"] == truth["reserve_price"]
    assert doc["item"]["promotion_price"] == truth["final_price"]
    assert doc["api_info"].startswith("today:")
    absent = next(i for i in sim.catalog.ids() if sim.catalog.kind(i) is ItemKind.ABSENT)
    cases = [
        ({**query, "secret": "wrong"}, "4005"),
        ({**query, "key": "nobody"}, "4005"),
        ({**query, "num_iid": ""}, "4000"),
        ({**query, "num_iid": absent}, "2000"),
    ]
    for params, code in cases:
        assert (await get(http, sim.reseller_url, params))["error_code"] == code
    slow = {"key": SLOW.app_key, "secret": SLOW.secret, "num_iid": num_iid}
    codes = [(await get(http, sim.reseller_url, slow))["error_code"] for _ in range(3)]
    assert codes == ["0000", "0000", "4013"]
    limited = await get(http, sim.reseller_url, slow)
    assert limited["reason"].startswith("请求频率超限 This ban will last for ")


async def test_truth_matches_the_api_answer(sim: Simulator, http: aiohttp.ClientSession) -> None:
    ids = present(sim, 40)
    doc = await post(http, sim.url, signed(ids))
    truth = await get(http, f"{sim.base_url}/_sim/truth", {"ids": ",".join([*ids, "1"])})
    assert truth["items"]["1"] is None
    assert truth["now"] == pytest.approx(time.time(), abs=5)
    for item in doc["tbk_item_info_get_response"]["results"]["n_tbk_item"]:
        row = truth["items"][item["num_iid"]]
        assert item["zk_final_price"] == row["zk_final_price"]
        assert item["reserve_price"] == row["reserve_price"]
        if row["final_price_basis"] == "coupon":
            final = Decimal(item["zk_final_price"]) - Decimal(item["coupon_amount"])
            assert str(final) == row["final_price"]
        else:
            assert item["zk_final_price"] == row["final_price"]


async def test_reset_and_catalog_paging(sim: Simulator, http: aiohttp.ClientSession) -> None:
    await post(http, sim.url, signed(present(sim, 5)))
    await set_fault(http, sim, kind="slow", duration_s=30, extra_latency_ms=1)
    assert (await get(http, f"{sim.base_url}/_sim/stats"))["totals"]["ok"] == 1
    async with http.post(f"{sim.base_url}/_sim/reset") as resp:
        assert resp.status == 200
    stats = await get(http, f"{sim.base_url}/_sim/stats")
    assert stats["totals"]["calls"] == 0
    assert stats["keys"][FAST.app_key]["cost"] == "0.00"
    assert (await get(http, f"{sim.base_url}/_sim/faults"))["faults"] == []
    page = await get(http, f"{sim.base_url}/_sim/catalog", {"offset": "4990", "limit": "100"})
    assert page == {"ids": sim.catalog.ids()[4990:], "size": 5000}
    first = await get(http, f"{sim.base_url}/_sim/catalog")
    assert len(first["ids"]) == 1000
    async with http.get(f"{sim.base_url}/_sim/catalog", params={"limit": "x"}) as resp:
        assert resp.status == 400


async def test_many_concurrent_calls_overlap_their_latency(http: aiohttp.ClientSession) -> None:
    import asyncio

    settings = SimSettings(latency_ms=(200, 200), catalog_size=1000)
    async with Simulator([FAST], settings=settings, port=0) as sim:
        ids = present(sim, 40)
        started = time.perf_counter()
        docs = await asyncio.gather(*(post(http, sim.url, signed(ids)) for _ in range(50)))
        assert time.perf_counter() - started < 2.0  # 50 × 0.2 s serially would be 10 s
        assert all(error_code(d) is None for d in docs)


async def test_a_whitelisted_key_is_served_only_from_its_address() -> None:
    fenced = SimKey(app_key="33333333", secret="fencedsecret", qps=100, whitelist=("127.0.0.2",))
    settings = SimSettings(latency_ms=(0, 0), catalog_size=1000)
    async with (
        Simulator([fenced], settings=settings, host="127.0.0.1", port=0) as sim,
        aiohttp.ClientSession() as plain,
        aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(local_addr=("127.0.0.2", 0))
        ) as from_home,
    ):
        ids = present(sim, 2)
        refused = (await post(plain, sim.url, signed(ids, key=fenced)))["error_response"]
        assert (refused["code"], refused["msg"], refused["sub_code"]) == (
            11,
            "Insufficient ISV Permissions",
            "isv.permission-ip-whitelist-limit",
        )
        assert refused["sub_msg"] == "ip 127.0.0.1 is not in the app's whitelist"
        served = await post(from_home, sim.url, signed(ids, key=fenced))
        assert error_code(served) is None
        assert len(served["tbk_item_info_get_response"]["results"]["n_tbk_item"]) == 2
        query = {"key": fenced.app_key, "secret": fenced.secret, "num_iid": ids[0]}
        assert (await get(plain, sim.reseller_url, query))["error_code"] == "4003"
        assert (await get(from_home, sim.reseller_url, query))["error_code"] == "0000"
        stats = await get(plain, f"{sim.base_url}/_sim/stats")
        home, elsewhere = stats["ips"]["127.0.0.2"], stats["ips"]["127.0.0.1"]
        assert (home["calls"], home["code11"], elsewhere["calls"], elsewhere["code11"]) == (
            2,
            0,
            2,
            2,
        )
        assert (stats["keys"][fenced.app_key]["code11"], stats["totals"]["code11"]) == (2, 2)
