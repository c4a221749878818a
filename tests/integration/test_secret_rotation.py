"""A secret rotated in its file is picked up under load, with the simulator over real HTTP.

The simulator changes the key's secret the way the platform does when a secret is reset; the
file is rewritten the way secret stores do it (a rename, or a Kubernetes ``..data`` symlink
swap). Every request made meanwhile must succeed: none answered from stale cache
(``allow_stale=false``), every one fetched upstream (``max_age=0``).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from taogate import Settings
from taogate._settings import SimSettings
from taogate.http import create_app
from taogate.quota import CredentialStatus
from taogate.testing import SimKey, Simulator
from tests.unit.test_secret_files import KubeSecretVolume, write_atomically

pytestmark = pytest.mark.integration

APP_KEY = "70000001"
OLD = "rotation-test-secret-old-0001"
NEW = "rotation-test-secret-new-0002"


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    cfg = SimSettings(latency_ms=(10.0, 30.0), catalog_size=5_000, seed=3, absent_ratio=0.0)
    async with Simulator(
        [SimKey(app_key=APP_KEY, secret=OLD, qps=1000.0)], settings=cfg, port=0
    ) as s:
        yield s


class SecretStore:
    """A secret file written the way a secret store writes it."""

    def __init__(self, root: Path, how: str) -> None:
        self.how = how
        if how == "kubernetes":
            self._volume: KubeSecretVolume | None = KubeSecretVolume(root / "vol", "key", OLD)
            self.path = self._volume.path
        else:
            self._volume = None
            self.path = root / "key"
            write_atomically(self.path, OLD + "\n")

    def write(self, secret: str) -> None:
        if self._volume is not None:
            self._volume.update(secret)
        else:
            write_atomically(self.path, secret + "\n")


def make_settings(sim: Simulator, store: SecretStore, kind: str, poll_s: float) -> Settings:
    url = sim.url if kind == "top" else sim.reseller_url
    return Settings(
        upstream={"kind": kind, "url": url},
        credentials=[{"app_key": APP_KEY, "secret_file": str(store.path), "qps": 1000}],
        limits={"safety_factor": 0.9, "deadline_s": 5.0},
        secrets={"poll_s": poll_s},
    )


class Load:
    """Clients asking for items upstream without pause; every status is kept."""

    def __init__(self, client: httpx.AsyncClient, ids: list[str], clients: int = 8) -> None:
        self.client = client
        self.ids = ids
        self.statuses: list[int] = []
        self._stop = asyncio.Event()
        self._tasks = [asyncio.create_task(self._run(i, clients)) for i in range(clients)]

    async def _run(self, first: int, step: int) -> None:
        i = first
        while not self._stop.is_set():
            num_iid = self.ids[i % len(self.ids)]
            i += step
            resp = await self.client.get(f"/v1/items/{num_iid}?max_age=0&allow_stale=false")
            self.statuses.append(resp.status_code)

    async def answers(self, n: int) -> None:
        """Wait until ``n`` more answers came (bounded: a stall fails the test)."""
        target = len(self.statuses) + n
        async with asyncio.timeout(30):
            while len(self.statuses) < target:
                await asyncio.sleep(0.01)

    async def stop(self) -> list[int]:
        self._stop.set()
        await asyncio.gather(*self._tasks)
        return self.statuses


async def until(condition: Callable[[], bool]) -> None:
    async with asyncio.timeout(10):
        while not condition():
            await asyncio.sleep(0.01)


@contextlib.asynccontextmanager
async def serve(settings: Settings) -> AsyncIterator[tuple[Any, httpx.AsyncClient]]:
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://taogate") as client:
            yield app, client


@pytest.mark.parametrize(
    ("how", "kind"), [("rename", "top"), ("kubernetes", "top"), ("rename", "reseller")]
)
async def test_a_refused_old_secret_swaps_in_the_new_one_without_a_failed_request(
    tmp_path: Path, sim: Simulator, how: str, kind: str
) -> None:
    """The store has the new secret, then the upstream switches to it and refuses the old.

    No poll runs (``poll_s = 0``): the first refusal makes the gateway re-read the file, swap
    the secret in and send the refused ids again; the credential is never quarantined.
    """
    store = SecretStore(tmp_path, how)
    ids = sim.catalog.ids()[:400]
    async with serve(make_settings(sim, store, kind, poll_s=0)) as (app, client):
        gw = app.state.gateway
        load = Load(client, ids)
        try:
            await load.answers(50)
            store.write(NEW)
            await load.answers(30)  # still signed with the old secret, still accepted
            assert gw.pool.credentials[0].secret == OLD
            sim.set_secret(APP_KEY, NEW)  # the platform refuses the old secret from now on
            await load.answers(150)
        finally:
            statuses = await load.stop()
        assert gw.pool.credentials[0].secret == NEW
        assert gw.pool.status(gw.pool.credentials[0]) is CredentialStatus.ACTIVE
        (row,) = gw.snapshot()["secret_files"]
        assert row["rotations"] == 1
        metrics = (await client.get("/metrics")).text
        assert 'taogate_secret_rotations_total{credential="700…001"} 1.0' in metrics
        assert 'taogate_secret_read_failures_total{credential="700…001"} 0.0' in metrics
        assert NEW not in metrics
        assert OLD not in metrics
    assert statuses.count(200) == len(statuses), {s: statuses.count(s) for s in set(statuses)}
    refused = sim.stats()["keys"][APP_KEY]["errors"]
    assert refused >= 1  # what made the gateway look again


async def test_the_simulator_rotates_a_secret_over_http(sim: Simulator) -> None:
    async with httpx.AsyncClient(base_url=sim.base_url) as client:
        for body in (
            b"nope",
            b"[]",
            b'{"app_key": "70000001"}',
            b'{"secret": "x", "app_key": "1"}',
        ):
            resp = await client.post("/_sim/secret", content=body)
            assert resp.status_code == 400, body
        resp = await client.post(
            "/_sim/secret", json={"app_key": APP_KEY, "secret": NEW, "keep_old_s": True}
        )
        assert resp.status_code == 400
        resp = await client.post(
            "/_sim/secret", json={"app_key": APP_KEY, "secret": NEW, "keep_old_s": 5}
        )
        assert resp.status_code == 200
        assert resp.json() == {"app_key": APP_KEY, "keep_old_s": 5.0}
        assert NEW not in resp.text
    key = sim.state.keys[APP_KEY]
    assert key.key.secret == NEW
    assert OLD in key.accepted_secrets(key.previous_until - 1)
    assert key.accepted_secrets(key.previous_until) == (NEW,)
    with pytest.raises(ValueError, match="keep_old_s"):
        sim.set_secret(APP_KEY, OLD, keep_old_s=-1)
    with pytest.raises(ValueError, match="empty"):
        sim.set_secret(APP_KEY, "")


@pytest.mark.parametrize("how", ["rename", "kubernetes"])
async def test_the_poll_picks_up_a_rotation_while_both_secrets_work(
    tmp_path: Path, sim: Simulator, how: str
) -> None:
    """The platform accepts both secrets for a while; the poll swaps before the old one ends."""
    store = SecretStore(tmp_path, how)
    ids = sim.catalog.ids()[:400]
    async with serve(make_settings(sim, store, "top", poll_s=0.05)) as (app, client):
        gw = app.state.gateway
        load = Load(client, ids)
        try:
            await load.answers(50)
            sim.set_secret(APP_KEY, NEW, keep_old_s=60)
            store.write(NEW)
            await until(lambda: gw.snapshot()["secret_files"][0]["rotations"] == 1)
            # calls signed before the swap land within the simulator's latency (<= 30 ms);
            # then the old secret stops working
            await asyncio.sleep(0.5)
            sim.set_secret(APP_KEY, NEW)
            await load.answers(150)
        finally:
            statuses = await load.stop()
        assert gw.pool.credentials[0].secret == NEW
    assert statuses.count(200) == len(statuses), {s: statuses.count(s) for s in set(statuses)}
    assert sim.stats()["keys"][APP_KEY]["errors"] == 0  # not one call was refused
