"""The limits keys share, as operators see them: ``/v1/admin/keys`` and the console's state
show each key's account, its code 11 answers and a day the platform said is spent, and a row
per account and for the API method; both answers match the OpenAPI document."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from taogate import IpNotWhitelisted, RateLimited, Settings
from taogate._beijing import seconds_to_beijing_midnight
from taogate.http import create_app
from taogate.http._console import ConsoleRoutes
from taogate.testing import FakeProvider
from tests.http.test_openapi import answer_schema, validator

ADMIN = "scopes-admin-client-token-0000000001"
SITE = "scopes-site-client-token-00000000002"
SECRETS = [f"scopes-test-secret-{i}" for i in range(3)]
IDS = [str(600_000 + i) for i in range(40)]
METHOD = "taobao.tbk.item.info.get"


def settings(*, method_qps: float | None = 500) -> Settings:
    """Three keys: two of one promoter account, one alone; the API method paced at 500/s."""
    return Settings(
        upstream={"method": METHOD, "method_qps": method_qps},
        credentials=[
            {"app_key": "93000001", "secret": SECRETS[0], "qps": 100, "account": "promoter-a"},
            {"app_key": "93000002", "secret": SECRETS[1], "qps": 100, "account": "promoter-a"},
            {"app_key": "93000003", "secret": SECRETS[2], "qps": 100},
        ],
        accounts=[{"name": "promoter-a", "qps": 40}],
        limits={"safety_factor": 0.9},
        server={
            "clients": [
                {"name": "site", "token": SITE, "rate": 10_000},
                {"name": "ops", "token": ADMIN, "rate": 10_000, "admin": True},
            ]
        },
    )


class Running:
    def __init__(self, app: Any, client: httpx.AsyncClient, provider: FakeProvider) -> None:
        self.app = app
        self.client = client
        self.provider = provider

    async def get(self, path: str, who: str = ADMIN) -> Any:
        resp = await self.client.get(path, headers={"Authorization": f"Bearer {who}"})
        assert resp.status_code == 200, resp.text
        for secret in (*SECRETS, ADMIN, SITE):
            assert secret not in resp.text
        return resp.json()

    @property
    def console(self) -> ConsoleRoutes:
        return console_of(self.app)


def console_of(app: Any) -> ConsoleRoutes:
    route = next(r for r in app.routes if getattr(r, "path", "") == "/v1/admin/state")
    routes: ConsoleRoutes = route.endpoint.__self__
    return routes


@pytest.fixture
async def running() -> AsyncIterator[Running]:
    provider = FakeProvider.with_ids(IDS)
    app = create_app(settings(), provider=provider)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://taogate") as client:
            yield Running(app, client, provider)


async def platform_refuses_two_keys(running: Running) -> None:
    """The platform refuses one key's egress (code 11: the only egress, so the key pauses) and
    says another's quota for today is spent (a ban until midnight in Beijing); the lookup is
    answered through the third key."""
    running.provider.fail_next(
        IpNotWhitelisted("Invalid ip", code=11, sub_code="isv.permission-ip-whitelist-limit"),
        RateLimited(
            "App Call Limited",
            retry_after=seconds_to_beijing_midnight(time.time()),
            scope="app",
            code=7,
        ),
    )
    await running.get(f"/v1/items/{IDS[0]}", who=SITE)


async def test_keys_answer_shows_accounts_the_method_a_spent_day_and_the_whitelist(
    running: Running,
) -> None:
    for num_iid in IDS[1:6]:
        await running.get(f"/v1/items/{num_iid}", who=SITE)
    keys = await running.get("/v1/admin/keys")
    rows = {r["credential"]: r for r in keys["credentials"]}
    assert {k: r["account"] for k, r in rows.items()} == {
        "930…001": "promoter-a",
        "930…002": "promoter-a",
        "930…003": None,
    }
    assert all(r["status"] == "active" and r["ip_refused"] == 0 for r in rows.values())
    assert all(r["exhausted_for_s"] is None and r["refused_egresses"] == [] for r in rows.values())
    account, method = keys["scopes"]
    assert account == {
        "kind": "account",
        "name": "promoter-a",
        "qps": 40.0,
        "rate": pytest.approx(36.0),  # the safety factor's share
        "credentials": 2,
        "calls": rows["930…001"]["calls"] + rows["930…002"]["calls"],
        "limited": 0,
        "paused_for_s": 0.0,
    }
    assert method["kind"] == "method"
    assert method["name"] == METHOD
    assert method["qps"] == 500.0
    assert method["credentials"] == 3
    assert method["calls"] == sum(r["calls"] for r in rows.values()) >= 1

    await platform_refuses_two_keys(running)
    keys = await running.get("/v1/admin/keys")
    by_status = {r["status"]: r for r in keys["credentials"]}
    assert sorted(by_status) == ["active", "exhausted", "not-whitelisted"]
    refused = by_status["not-whitelisted"]
    assert refused["ip_refused"] == 1
    assert refused["refused_egresses"] == ["default"]
    spent = by_status["exhausted"]
    assert spent["exhausted_for_s"] == pytest.approx(
        seconds_to_beijing_midnight(time.time()), abs=5
    )
    assert spent["rate_limited"] == 1
    assert by_status["active"]["exhausted_for_s"] is None

    doc = await running.get("/openapi.json")
    check = validator(doc, answer_schema(doc, "/v1/admin/keys", "get", "200"))
    check.validate(keys)
    statuses = doc["components"]["schemas"]["CredentialRow"]["properties"]["status"]["enum"]
    assert "not-whitelisted" in statuses
    assert not check.is_valid(keys | {"scopes": [account | {"kind": "egress"}]})


async def test_console_state_has_shared_limits_with_their_rates(running: Running) -> None:
    sampler = running.console.sampler
    sampler.sample()
    for num_iid in IDS[1:11]:
        await running.get(f"/v1/items/{num_iid}", who=SITE)
    await platform_refuses_two_keys(running)
    state: Any = running.console.build_state()
    assert state["code11"] == 1  # the dispatcher saw the platform's code 11
    account, method = state["scopes"]
    assert (account["kind"], account["name"]) == ("account", "promoter-a")
    assert (method["kind"], method["name"]) == ("method", METHOD)
    assert state["window_s"] > 0
    assert method["calls"] >= 11
    # every call since the first sample went through the method, some through the account
    assert method["calls_per_s"] > 0
    assert method["calls_per_s"] >= account["calls_per_s"]
    for scope in (account, method):
        assert scope["use"] == pytest.approx(scope["calls_per_s"] / scope["rate"], abs=1e-4)
    keys = {k["status"]: k for k in state["credentials"]}
    assert keys["not-whitelisted"]["ip_refused"] == 1
    assert keys["exhausted"]["exhausted_for_s"] > 0
    assert {k["account"] for k in state["credentials"]} == {"promoter-a", None}

    doc = await running.get("/openapi.json")
    validator(doc, answer_schema(doc, "/v1/admin/state", "get", "200")).validate(
        await running.get("/v1/admin/state")
    )


async def test_an_unpaced_method_has_no_rate_and_no_use() -> None:
    app = create_app(settings(method_qps=None), provider=FakeProvider.with_ids(IDS))
    async with app.router.lifespan_context(app):
        state: Any = console_of(app).build_state()
    (method,) = [s for s in state["scopes"] if s["kind"] == "method"]
    assert method["qps"] is None
    assert method["rate"] is None
    assert method["use"] is None
