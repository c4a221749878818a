"""Metrics without the HTTP service: a library user registers the gateway's collector in a
registry of their own, and it exports what ``/metrics`` exports, from the same typed stats."""

from __future__ import annotations

import subprocess
import sys

import httpx
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from taogate import Gateway, GatewayStats, Priority, Settings
from taogate.http import create_app
from taogate.metrics import GatewayCollector
from taogate.testing import FakeProvider

IDS = [f"5200000{i:05d}" for i in range(60)]
#: the HTTP service's own families: requests, their latency, requests shed
HTTP_ONLY = (
    "taogate_http_requests",
    "taogate_http_request_duration_seconds",
    "taogate_shed_requests",
)


def http_only(family: str) -> bool:
    """One of the service's own families (or the ``_created`` gauge the parser splits off)."""
    return any(family == name or family.startswith(f"{name}_") for name in HTTP_ONLY)


def settings() -> Settings:
    return Settings(
        credentials=[
            {"app_key": f"1000000{k}", "secret": f"secret-{k}", "qps": 1000.0} for k in range(2)
        ],
        limits={"safety_factor": 1.0, "batch_window_ms": 5.0},
    )


def series(text: str) -> dict[str, set[tuple[str, tuple[tuple[str, str], ...]]]]:
    """Each family's samples, by name and labels."""
    return {
        family.name: {(s.name, tuple(sorted(s.labels.items()))) for s in family.samples}
        for family in text_string_to_metric_families(text)
    }


async def test_a_library_user_collects_metrics_without_the_http_service() -> None:
    provider = FakeProvider.with_ids(IDS[:50])  # the other ten do not exist
    gateway = Gateway(settings(), provider=provider)
    registry = CollectorRegistry()
    registry.register(GatewayCollector(gateway))
    assert generate_latest(registry) == b""  # nothing to tell before the start
    async with gateway:
        await gateway.get_many(IDS[:40])
        await gateway.get_many(IDS[30:60], priority=Priority.BULK)
        await gateway.get(IDS[0])
        stats = gateway.stats()
        value = registry.get_sample_value
        assert isinstance(stats, GatewayStats)
        assert value("taogate_lookups_total", {"outcome": "l1_hit"}) == stats.l1_hits == 11
        assert value("taogate_lookups_total", {"outcome": "miss"}) == 60
        assert value("taogate_upstream_ids_total") == stats.dispatcher.counts.ids_sent == 60
        assert value("taogate_upstream_items_found_total") == 50
        assert value("taogate_upstream_ids_by_priority_total", {"priority": "bulk"}) == 20
        assert value("taogate_upstream_calls_by_priority_total", {"priority": "refresh"}) == 0
        assert value("taogate_upstream_items_per_call_count") == stats.dispatcher.counts.calls == 2
        assert value("taogate_l1_entries") == stats.cache.l1_entries == 60
        assert value("taogate_mode", {"mode": "single"}) == 1
        assert value("taogate_breaker_state", {"provider": "upstream"}) == 0
        assert value("taogate_degraded") == 0
        assert value("taogate_credential_calls_total", {"credential": "100…000"}) is not None
        assert value("taogate_dispatch_queue_depth", {"priority": "interactive"}) == 0
    assert generate_latest(registry) == b""  # nor after the stop


async def test_http_metrics_are_the_library_metrics_and_the_service_own() -> None:
    app = create_app(settings(), provider=FakeProvider.with_ids(IDS))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://taogate") as client:
            assert (await client.get(f"/v1/items/{IDS[0]}")).status_code == 200
            served = series((await client.get("/metrics")).text)
            registry = CollectorRegistry()
            registry.register(GatewayCollector(app.state.gateway))
            library = series(generate_latest(registry).decode())
    assert {"taogate_http_requests", "taogate_shed_requests", "taogate_lookups"} <= set(served)
    assert {name: s for name, s in served.items() if not http_only(name)} == library


def test_the_metrics_module_loads_no_http_service() -> None:
    code = (
        "import sys, taogate.metrics; "
        "print(sorted(m for m in sys.modules if m.startswith(('taogate.http', 'starlette'))))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "[]"
