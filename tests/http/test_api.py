"""The HTTP API in-process: answers, problem details, auth, limits, admission."""

from __future__ import annotations

import asyncio
from decimal import Decimal

from taogate.testing import Simulator
from tests.http.conftest import Service, make_settings, open_service


def assert_problem(resp: object, status: int, slug: str) -> dict[str, object]:
    import httpx

    assert isinstance(resp, httpx.Response)
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"] == "application/problem+json"
    body = resp.json()
    assert body["type"] == f"urn:taogate:problem:{slug}"
    assert body["status"] == status
    assert body["title"]
    assert body["request_id"] == resp.headers["x-request-id"]
    return dict(body)


async def test_get_item_answers_with_exact_prices(service: Service) -> None:
    (num_iid,) = service.present_ids(1)
    resp = await service.client.get(f"/v1/items/{num_iid}", headers=service.auth())
    assert resp.status_code == 200
    body = resp.json()
    assert set(body) == {"item", "source", "stale", "age_s"}
    assert body["source"] == "upstream"
    assert body["stale"] is False
    truth = service.sim.truth([num_iid])[num_iid]
    assert truth is not None
    assert body["item"]["final_price"] == truth["final_price"]
    assert isinstance(body["item"]["zk_final_price"], str)
    Decimal(body["item"]["zk_final_price"])
    again = await service.client.get(f"/v1/items/{num_iid}", headers=service.auth())
    assert again.json()["source"] == "l1"
    metrics = (await service.client.get("/metrics")).text
    assert 'taogate_upstream_ids_by_priority_total{priority="interactive"} 1.0' in metrics
    assert 'taogate_upstream_calls_by_priority_total{priority="interactive"} 1.0' in metrics
    assert 'taogate_upstream_ids_by_priority_total{priority="bulk"} 0.0' in metrics


async def test_absent_item_is_404(service: Service) -> None:
    resp = await service.client.get("/v1/items/999999999999", headers=service.auth())
    body = assert_problem(resp, 404, "item-not-found")
    assert body["num_iid"] == "999999999999"


async def test_bad_id_and_bad_query_are_400(service: Service) -> None:
    resp = await service.client.get("/v1/items/12%2C34", headers=service.auth())
    assert_problem(resp, 400, "invalid-item-id")
    resp = await service.client.get("/v1/items/" + "1" * 21, headers=service.auth())
    assert_problem(resp, 400, "invalid-item-id")
    for query in ("max_age=abc", "max_age=-1", "max_age=nan", "allow_stale=maybe"):
        resp = await service.client.get(f"/v1/items/123?{query}", headers=service.auth())
        assert_problem(resp, 400, "bad-request")


async def test_upstream_refused_id_is_422_naming_it(service: Service) -> None:
    legacy = next(i for i in service.sim.catalog.ids() if service.sim.catalog.is_legacy(i))
    resp = await service.client.get(f"/v1/items/{legacy}", headers=service.auth())
    body = assert_problem(resp, 422, "upstream-rejected-id")
    assert body["num_iid"] == legacy
    assert legacy in str(body["detail"])


async def test_auth(service: Service) -> None:
    resp = await service.client.get("/v1/items/123")
    assert_problem(resp, 401, "unauthorized")
    assert resp.headers["www-authenticate"].startswith("Bearer")
    resp = await service.client.get("/v1/items/123", headers={"Authorization": "Bearer nope"})
    assert_problem(resp, 401, "unauthorized")
    resp = await service.client.get("/v1/items/123", headers={"Authorization": "Basic abc"})
    assert_problem(resp, 401, "unauthorized")
    resp = await service.client.post(
        "/v1/items:invalidate", json={"ids": ["1"]}, headers=service.auth()
    )
    assert_problem(resp, 403, "forbidden")
    resp = await service.client.get("/v1/admin/keys", headers=service.auth())
    assert_problem(resp, 403, "forbidden")
    for path in ("/healthz", "/readyz", "/metrics", "/openapi.json"):
        assert (await service.client.get(path)).status_code == 200, path


async def test_client_rate_limit_is_429_with_headers(service: Service) -> None:
    statuses = []
    for _ in range(4):
        resp = await service.client.get("/v1/items/999999999999", headers=service.auth("slow"))
        statuses.append(resp.status_code)
    assert statuses[:2] == [404, 404]  # a burst of one second's worth (2)
    assert 429 in statuses
    resp = await service.client.get("/v1/items/999999999999", headers=service.auth("slow"))
    body = assert_problem(resp, 429, "client-rate-limited")
    assert int(resp.headers["retry-after"]) >= 1
    assert resp.headers["ratelimit-limit"] == "2"
    assert resp.headers["ratelimit-remaining"] == "0"
    assert body["retry_after"] >= 1  # type: ignore[operator]


async def test_batch(service: Service) -> None:
    ids = service.present_ids(5)
    legacy = next(i for i in service.sim.catalog.ids() if service.sim.catalog.is_legacy(i))
    body = {"ids": [*ids, ids[0], "999999999999", legacy]}
    resp = await service.client.post("/v1/items:batch", json=body, headers=service.auth())
    assert resp.status_code == 200
    results = resp.json()["results"]
    assert list(results) == [*ids, "999999999999", legacy]
    assert all(results[i]["item"]["num_iid"] == i for i in ids)
    assert results["999999999999"]["item"] is None
    assert results[legacy]["error"]["status"] == 422
    assert service.sim.stats()["totals"]["ok"] >= 1


async def test_batch_refusals(service: Service) -> None:
    auth = service.auth()
    cases = [
        (b"not json", 400, "bad-request"),
        (b"[1, 2]", 400, "bad-request"),
        (b'{"ids": []}', 400, "bad-request"),
        (b'{"ids": "123"}', 400, "bad-request"),
        (b'{"ids": [123]}', 400, "invalid-item-id"),
        (b'{"ids": ["1,2"]}', 400, "invalid-item-id"),
        (b'{"ids": ["1"], "extra": 1}', 400, "bad-request"),
        (b'{"ids": ["1"], "max_age": "x"}', 400, "bad-request"),
        (b'{"ids": ["1"], "allow_stale": "x"}', 400, "bad-request"),
    ]
    for raw, status, slug in cases:
        resp = await service.client.post("/v1/items:batch", content=raw, headers=auth)
        assert_problem(resp, status, slug)
    too_many = {"ids": [str(i) for i in range(1001)]}
    resp = await service.client.post("/v1/items:batch", json=too_many, headers=auth)
    assert_problem(resp, 400, "batch-too-large")


async def test_invalidate(service: Service) -> None:
    (num_iid,) = service.present_ids(1)
    await service.client.get(f"/v1/items/{num_iid}", headers=service.auth())
    resp = await service.client.post(
        "/v1/items:invalidate", json={"ids": [num_iid, "1"]}, headers=service.auth("ops")
    )
    assert resp.json() == {"invalidated": 1, "everywhere": True}
    again = await service.client.get(f"/v1/items/{num_iid}", headers=service.auth())
    assert again.json()["source"] == "upstream"


async def test_unknown_route_and_method_are_problems(service: Service) -> None:
    assert_problem(await service.client.get("/nope"), 404, "not-found")
    assert_problem(await service.client.delete("/v1/items/1"), 405, "method-not-allowed")


async def test_keys_route(service: Service) -> None:
    resp = await service.client.get("/v1/admin/keys", headers=service.auth("ops"))
    rows = resp.json()["credentials"]
    assert [r["credential"] for r in rows] == ["500…000", "500…001"]
    assert [(s["kind"], s["credentials"]) for s in resp.json()["scopes"]] == [("method", 2)]
    assert "http-test-secret" not in resp.text


async def test_request_id_is_echoed_or_made(service: Service) -> None:
    resp = await service.client.get("/healthz", headers={"X-Request-ID": "abc-123"})
    assert resp.headers["x-request-id"] == "abc-123"
    resp = await service.client.get("/healthz", headers={"X-Request-ID": "bad id;drop"})
    assert resp.headers["x-request-id"] != "bad id;drop"


async def test_overload_is_shed_at_once(sim: Simulator) -> None:
    sim.set_fault("slow", 30.0, extra_latency_ms=500)
    async for service in open_service(make_settings(sim, max_in_flight=2), sim):
        ids = service.present_ids(3)
        slow = [
            asyncio.create_task(service.client.get(f"/v1/items/{i}", headers=service.auth()))
            for i in ids[:2]
        ]
        await asyncio.sleep(0.05)
        resp = await service.client.get(f"/v1/items/{ids[2]}", headers=service.auth())
        body = assert_problem(resp, 503, "shed")
        assert resp.headers["retry-after"] == "1"
        assert body["retry_after"] == 1
        assert (await service.client.get("/healthz")).status_code == 200  # never shed
        assert all(r.status_code == 200 for r in await asyncio.gather(*slow))
        metrics = (await service.client.get("/metrics")).text
        assert "taogate_shed_requests_total 1.0" in metrics


async def test_unavailable_upstream_is_503_with_retry_after(sim: Simulator) -> None:
    sim.set_fault("outage", 60.0)
    async for service in open_service(make_settings(sim), sim):
        resp = await service.client.get(
            "/v1/items/123456789012?allow_stale=false", headers=service.auth()
        )
        body = assert_problem(resp, 503, "unavailable")
        assert int(resp.headers["retry-after"]) >= 1
        assert body["reason"] in ("UpstreamTransient", "UpstreamUnavailable")
