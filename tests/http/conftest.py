"""An app in front of an in-process simulator, driven in-process through httpx."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from taogate import Settings
from taogate._settings import SimSettings
from taogate.http import create_app
from taogate.testing import SimKey, Simulator

KEYS = [SimKey(app_key=f"5000000{i}", secret=f"http-test-secret-{i}", qps=1000.0) for i in range(2)]
TOKENS = {
    "site": "site-client-token-value-0001-abcdef",
    "ops": "ops-client-token-value-0002-abcdefg",
    "slow": "slow-client-token-value-0003-abcdef",
}


def make_settings(sim: Simulator, **server: Any) -> Settings:
    return Settings(
        upstream={"url": sim.url},
        credentials=[{"app_key": k.app_key, "secret": k.secret, "qps": k.qps} for k in KEYS],
        limits={"safety_factor": 0.9, "deadline_s": 5.0},
        server={
            "clients": [
                {"name": "site", "token": TOKENS["site"], "rate": 10_000},
                {"name": "ops", "token": TOKENS["ops"], "rate": 10_000, "admin": True},
                {"name": "slow", "token": TOKENS["slow"], "rate": 2},
            ],
            **server,
        },
    )


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    settings = SimSettings(latency_ms=(0.0, 0.0), catalog_size=5_000, seed=9, legacy_ratio=0.01)
    async with Simulator(KEYS, settings=settings, port=0) as simulator:
        yield simulator


class Service:
    """The app and an httpx client for it, authenticated as ``site`` by default."""

    def __init__(self, app: Any, client: httpx.AsyncClient, sim: Simulator) -> None:
        self.app = app
        self.client = client
        self.sim = sim

    def auth(self, who: str = "site") -> dict[str, str]:
        return {"Authorization": f"Bearer {TOKENS[who]}"}

    def present_ids(self, n: int) -> list[str]:
        ids = self.sim.catalog.ids()[: n * 3]
        truth = self.sim.truth(ids)
        return [i for i in ids if truth[i] is not None and not self.sim.catalog.is_legacy(i)][:n]


async def open_service(settings: Settings, sim: Simulator) -> AsyncIterator[Service]:
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://taogate") as client:
            yield Service(app, client, sim)


@pytest.fixture
async def service(sim: Simulator) -> AsyncIterator[Service]:
    async for s in open_service(make_settings(sim), sim):
        yield s
