"""``/v1/admin/degrade``, ``/readyz`` and the metrics of degraded mode; the CLI against two
``taogate serve`` processes sharing a Redis."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from taogate._degrade import format_time
from taogate.http import create_app
from taogate.testing import FakeClock, Simulator
from tests.conftest import RedisServer, free_port, start_serve
from tests.http.conftest import KEYS, TOKENS, Service, make_settings, open_service
from tests.http.test_api import assert_problem


@pytest.fixture
async def clocked(sim: Simulator) -> AsyncIterator[tuple[Service, FakeClock]]:
    clock = FakeClock(base=asyncio.get_running_loop().time)
    app = create_app(make_settings(sim), clock=clock)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://taogate") as client:
            yield Service(app, client, sim), clock


async def test_admin_route_needs_an_operator(service: Service) -> None:
    for method, body in (("GET", None), ("PUT", {"mode": "on"})):
        resp = await service.client.request(method, "/v1/admin/degrade", json=body)
        assert_problem(resp, 401, "unauthorized")
        resp = await service.client.request(
            method, "/v1/admin/degrade", json=body, headers=service.auth("site")
        )
        assert_problem(resp, 403, "forbidden")
    assert not service.app.state.gateway.degrade.active


async def test_switch_on_shows_in_readyz_and_metrics_then_off(service: Service) -> None:
    ops = service.auth("ops")
    state = (await service.client.get("/v1/admin/degrade", headers=ops)).json()
    assert state == {
        "degraded": {"on": False, "source": None, "reason": None, "until": None, "by": None},
        "override": None,
        "windows": [],
        "max_age_s": 600 + 3600,
        "reserve_share": 0.3,
        "scope": "process",
    }
    until = format_time(time.time() + 3600)
    resp = await service.client.put(
        "/v1/admin/degrade", json={"mode": "on", "until": until, "reason": "双11"}, headers=ops
    )
    assert resp.status_code == 200, resp.text
    doc = resp.json()
    assert doc["degraded"] == {
        "on": True,
        "source": "manual",
        "reason": "双11",
        "until": until,
        "by": "ops",
    }
    assert doc["override"]["mode"] == "on"
    ready = await service.client.get("/readyz")
    assert ready.status_code == 200  # degraded is still ready
    assert ready.json()["degraded"] == {
        "on": True,
        "source": "manual",
        "reason": "双11",
        "until": until,
    }
    metrics = (await service.client.get("/metrics")).text
    assert "taogate_degraded 1.0" in metrics
    assert 'taogate_degraded_source{source="manual"} 1.0' in metrics
    assert 'taogate_degraded_source{source="none"} 0.0' in metrics
    resp = await service.client.put("/v1/admin/degrade", json={"mode": "auto"}, headers=ops)
    assert resp.json()["degraded"]["on"] is False
    assert (await service.client.get("/readyz")).json()["degraded"]["on"] is False
    metrics = (await service.client.get("/metrics")).text
    assert "taogate_degraded 0.0" in metrics
    assert 'taogate_degraded_source{source="none"} 1.0' in metrics
    assert "taogate_degraded_changes_total 2.0" in metrics


@pytest.mark.parametrize(
    ("body", "words"),
    [
        (b"not json", "not valid JSON"),
        (b"[]", "JSON object"),
        (b'{"mode": "on", "for": 3}', "unknown field"),
        (b'{"mode": "maybe"}', '"mode"'),
        (b"{}", '"mode"'),
        (b'{"mode": "on", "until": 5}', "RFC 3339"),
        (b'{"mode": "on", "until": "2099-01-01T00:00:00"}', "UTC offset"),
        (b'{"mode": "on", "until": "2099-01-01T12:99:00Z"}', "minute must be"),
        (b'{"mode": "auto", "until": "2099-01-01T00:00:00Z"}', 'not "auto"'),
        (b'{"mode": "on", "reason": 7}', '"reason"'),
        (b'{"mode": "on", "reason": "' + b"x" * 201 + b'"}', "200 characters"),
    ],
)
async def test_bad_switches_are_400(service: Service, body: bytes, words: str) -> None:
    resp = await service.client.put("/v1/admin/degrade", content=body, headers=service.auth("ops"))
    problem = assert_problem(resp, 400, "bad-request")
    assert words in str(problem["detail"])
    assert not service.app.state.gateway.degrade.active


async def test_a_passed_until_is_409(service: Service) -> None:
    body = {"mode": "on", "until": "2020-01-01T00:00:00+08:00"}
    resp = await service.client.put("/v1/admin/degrade", json=body, headers=service.auth("ops"))
    problem = assert_problem(resp, 409, "until-passed")
    assert "has passed" in str(problem["detail"])


async def test_degraded_answers_carry_their_true_age(
    clocked: tuple[Service, FakeClock],
) -> None:
    service, clock = clocked
    (num_iid,) = service.present_ids(1)
    first = await service.client.get(f"/v1/items/{num_iid}", headers=service.auth())
    assert first.json()["source"] == "upstream"
    clock.advance(700.0)  # past [cache] max_age_s (600)
    await service.client.put("/v1/admin/degrade", json={"mode": "on"}, headers=service.auth("ops"))
    resp = await service.client.get(f"/v1/items/{num_iid}", headers=service.auth())
    body = resp.json()
    assert (body["source"], body["stale"]) == ("l1", False)
    assert body["age_s"] == pytest.approx(700.0, abs=5.0)
    batch = await service.client.post(
        "/v1/items:batch", json={"ids": [num_iid]}, headers=service.auth()
    )
    assert batch.json()["results"][num_iid]["source"] == "l1"
    strict = await service.client.get(f"/v1/items/{num_iid}?max_age=60", headers=service.auth())
    assert strict.json()["source"] == "upstream"  # the caller's own max_age wins


async def services_on_redis(
    sim: Simulator, url: str, prefix: str
) -> AsyncIterator[tuple[Service, Service]]:
    settings = make_settings(sim).model_copy(
        update={
            "redis": make_settings(sim).redis.model_copy(
                update={"url": url, "prefix": prefix, "heartbeat_s": 0.2}
            )
        }
    )
    async for a in open_service(settings, sim):
        async for b in open_service(settings, sim):
            yield a, b


@pytest.mark.integration
async def test_a_switch_through_one_app_shows_in_the_others_readyz(
    sim: Simulator, redis_server: RedisServer
) -> None:
    async for a, b in services_on_redis(sim, redis_server.url, "h" + os.urandom(3).hex()):
        await asyncio.sleep(0.3)
        resp = await a.client.put(
            "/v1/admin/degrade", json={"mode": "on", "reason": "sale"}, headers=a.auth("ops")
        )
        assert resp.json()["scope"] == "replicas"
        loop = asyncio.get_running_loop()
        end = loop.time() + 1.0
        while not (await b.client.get("/readyz")).json()["degraded"]["on"]:
            assert loop.time() < end, "the other app did not follow within 1 s"
            await asyncio.sleep(0.02)
        state = (await b.client.get("/v1/admin/degrade", headers=b.auth("ops"))).json()
        assert state["degraded"]["by"] == "ops"
        assert state["degraded"]["reason"] == "sale"


@pytest.mark.integration
async def test_a_switch_without_redis_is_503_and_changes_nothing(
    sim: Simulator, own_redis: RedisServer
) -> None:
    async for a, _ in services_on_redis(sim, own_redis.url, "h" + os.urandom(3).hex()):
        own_redis.stop()
        gw = a.app.state.gateway
        loop = asyncio.get_running_loop()
        end = loop.time() + 2.0
        while gw.replicas.mode != "local":
            assert loop.time() < end
            await asyncio.sleep(0.02)
        resp = await a.client.put("/v1/admin/degrade", json={"mode": "on"}, headers=a.auth("ops"))
        problem = assert_problem(resp, 503, "unavailable")
        assert problem["reason"] == "DegradeNotShared"
        assert resp.headers["retry-after"] == "1"
        assert not gw.degrade.active


@pytest.mark.integration
async def test_cli_switches_two_serve_processes(
    tmp_path: Path, sim: Simulator, redis_server: RedisServer
) -> None:
    prefix = "c" + os.urandom(3).hex()
    ports = [free_port(), free_port()]
    configs = []
    for n, port in enumerate(ports):
        config = tmp_path / f"taogate-{n}.toml"
        config.write_text(
            f'[upstream]\nurl = "{sim.url}"\n\n[[credentials]]\napp_key = "{KEYS[0].app_key}"\n'
            f'secret = "{KEYS[0].secret}"\n\n[redis]\nurl = "{redis_server.url}"\n'
            f'prefix = "{prefix}"\nheartbeat_s = 0.2\n\n[server]\nport = {port}\n'
            f'log_level = "warning"\n\n[[server.clients]]\nname = "ops"\n'
            f'token = "{TOKENS["ops"]}"\nadmin = true\n',
            encoding="utf-8",
        )
        configs.append(config)
    servers = [await start_serve(c, p) for c, p in zip(configs, ports, strict=True)]

    async def cli(*args: str, code: int = 0) -> str:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "taogate.cli",
            "degrade",
            *args,
            "--config",
            str(configs[0]),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env={**os.environ, "COLUMNS": "200"},
        )
        out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
        assert proc.returncode == code, err.decode()
        return (out + err).decode()

    async def other_on() -> Any:
        async with httpx.AsyncClient() as client:
            resp = await client.get(f"http://127.0.0.1:{ports[1]}/readyz")
            return resp.json()["degraded"]["on"]

    try:
        on = await cli("on", "--for", "1h", "--reason", "flash sale")
        loop = asyncio.get_running_loop()
        end = loop.time() + 1.0
        while not await other_on():
            assert loop.time() < end, "the second process did not follow within 1 s"
            await asyncio.sleep(0.02)
        status = await cli("status")
        bad = await cli("auto", "--for", "1h", code=2)
        passed = await cli("on", "--until", "2020-01-01T00:00:00Z", code=2)
        off = await cli("auto")
        end = loop.time() + 1.0
        while await other_on():
            assert loop.time() < end, "the second process did not follow within 1 s"
            await asyncio.sleep(0.02)
    finally:
        for server in servers:
            server.send_signal(signal.SIGTERM)
        for server in servers:
            await asyncio.wait_for(server.wait(), timeout=15)
    assert "degraded mode on (manual by ops: flash sale; until" in on
    assert "every replica" in on
    assert "degraded mode on (manual by ops" in status
    assert "go with on or off" in bad
    assert "has passed" in passed
    assert "degraded mode off (auto, no window now)" in off
