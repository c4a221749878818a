"""The operator console's state and lookup routes: content and auth."""

from __future__ import annotations

import pytest

from tests.http.conftest import Service


async def test_state_needs_an_admin_token(service: Service) -> None:
    assert (await service.client.get("/v1/admin/state")).status_code == 401
    resp = await service.client.get("/v1/admin/state", headers=service.auth("site"))
    assert resp.status_code == 403
    assert resp.headers["content-type"].startswith("application/problem+json")
    assert (await service.client.get("/v1/admin/state", headers=service.auth("ops"))).is_success


async def test_state_shows_keys_egresses_queue_cache_and_history(service: Service) -> None:
    ids = service.present_ids(30)
    for num_iid in ids:  # 30 misses, then 30 hits
        await service.client.get(f"/v1/items/{num_iid}", headers=service.auth())
    for num_iid in ids:
        await service.client.get(f"/v1/items/{num_iid}", headers=service.auth())
    state = (await service.client.get("/v1/admin/state", headers=service.auth("ops"))).json()
    assert state["replica"] == {"mode": "single", "live_replicas": None, "id": None}
    assert state["breaker"] == "closed"
    assert state["code7"] == 0
    assert state["quota"]["rate"] == pytest.approx(90.0)  # 2 keys x 900/s, one egress at 90
    keys = state["credentials"]
    assert [k["credential"] for k in keys] == ["500…000", "500…001"]
    assert all(k["egress"] == "default" and k["status"] == "active" for k in keys)
    assert sum(k["calls"] for k in keys) >= 1
    assert all(k["cost_today"] == "0" for k in keys)  # these keys cost nothing
    assert "http-test-secret" not in str(state)  # nothing but masked keys
    (egress,) = state["egresses"]
    assert egress["egress"] == "default"
    assert egress["max_qps"] == pytest.approx(90.0)  # 100 x the safety factor
    assert set(state["queue"]) >= {"interactive", "refresh", "bulk", "in_flight", "wait_ms"}
    cache = state["cache"]
    assert cache["l1_entries"] >= 30
    assert set(state["history"]) == {"t", "calls_per_s", "quota_per_s", "hit_ratio"}
    # no [[accounts]]: the API method is the only limit the keys share, and not paced
    assert all(k["account"] is None for k in keys)
    (method,) = state["scopes"]
    assert (method["kind"], method["credentials"]) == ("method", 2)
    assert method["calls"] == sum(k["calls"] for k in keys)
    assert (method["qps"], method["rate"], method["use"]) == (None, None, None)
    assert state["code11"] == 0
    # the dispatcher, the sampler and this request's own task at least
    assert state["process"]["asyncio_tasks"] >= 3


async def test_state_rates_come_from_the_sampler(service: Service) -> None:
    """Rates are counter differences between samples: calls/s and hit ratios add up."""
    console = next(r for r in service.app.routes if getattr(r, "path", "") == "/v1/admin/state")
    routes = console.endpoint.__self__  # the ConsoleRoutes instance
    sampler = routes.sampler
    sampler.sample()
    ids = service.present_ids(10)
    for num_iid in ids:
        await service.client.get(f"/v1/items/{num_iid}", headers=service.auth())
        await service.client.get(f"/v1/items/{num_iid}", headers=service.auth())
    kept = len(sampler._samples)
    state = routes.build_state()
    routes.build_state()
    assert len(sampler._samples) == kept  # a poll reads; only the sampler's clock adds history
    cache = state["cache"]
    assert cache["l1_hit_ratio"] == pytest.approx(0.5, abs=0.05)  # every id: a miss, then a hit
    assert state["quota"]["calls_per_s"] > 0
    assert cache["lookups_per_s"] == pytest.approx(20 / state["window_s"], rel=0.05)


async def test_admin_lookup_names_the_credential_that_fetched(service: Service) -> None:
    (num_iid,) = service.present_ids(1)
    resp = await service.client.get(f"/v1/admin/items/{num_iid}", headers=service.auth("ops"))
    body = resp.json()
    assert body["source"] == "upstream"
    assert body["fetched_by"]["credential"] in ("500…000", "500…001")
    assert body["fetched_by"]["egress"] == "default"
    again = (
        await service.client.get(f"/v1/admin/items/{num_iid}", headers=service.auth("ops"))
    ).json()
    assert again["source"] == "l1"
    assert again["fetched_by"] == body["fetched_by"]
    missing = await service.client.get("/v1/admin/items/999999999999", headers=service.auth("ops"))
    assert missing.status_code == 404
    denied = await service.client.get(f"/v1/admin/items/{num_iid}", headers=service.auth())
    assert denied.status_code == 403


async def test_the_page_and_its_files(service: Service) -> None:
    page = await service.client.get("/console")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp
    assert "frame-ancestors 'none'" in csp
    assert '<script src="/console/console.js"' in page.text
    assert "<script>" not in page.text  # no inline script: the CSP forbids it
    for name, kind in (("console.js", "text/javascript"), ("console.css", "text/css")):
        asset = await service.client.get(f"/console/{name}")
        assert asset.status_code == 200
        assert asset.headers["content-type"].startswith(kind)
    assert (await service.client.get("/console/../_settings.py")).status_code == 404
    assert (await service.client.get("/console/secrets.txt")).status_code == 404
