"""The gateway against the simulator's every limit, over loopback HTTP (docs/limits.md): an
account over several keys, an API method's ban, and an IP whitelist judged by the calling
address (127.0.0.2 and 127.0.0.3 are distinct egresses)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from typing import Any

import pytest

from taogate import Settings
from taogate._gateway import Gateway
from taogate._settings import SimSettings
from taogate.quota import CredentialStatus
from taogate.testing import SimAccount, SimKey, Simulator
from tests.conftest import flood_gateway

pytestmark = pytest.mark.integration

ACCOUNT = "alimama-main"


def keys(whitelist: tuple[str, ...] = (), account: str | None = None) -> list[SimKey]:
    return [
        SimKey(
            app_key=f"7100000{i}",
            secret=f"scopes-secret-{i}",
            qps=10.0,
            account=account,
            whitelist=whitelist if i == 0 else (),
        )
        for i in range(4)
    ]


async def simulator(
    sim_keys: list[SimKey], accounts: Iterable[SimAccount] = ()
) -> AsyncIterator[Simulator]:
    settings = SimSettings(latency_ms=(10.0, 30.0), catalog_size=20_000, seed=23, ban_s=5.0)
    async with Simulator(sim_keys, settings=settings, port=0, accounts=accounts) as sim:
        yield sim


def settings(sim: Simulator, sim_keys: list[SimKey], **extra: Any) -> Settings:
    credentials = extra.pop("credentials", None) or [
        {"app_key": k.app_key, "secret": k.secret, "qps": k.qps} for k in sim_keys
    ]
    safety_factor = extra.pop("safety_factor", 1.0)
    return Settings(
        upstream={"url": sim.url},
        credentials=credentials,
        limits={"safety_factor": safety_factor, "deadline_s": 20.0},
        **extra,
    )


async def test_keys_of_one_account_stay_under_its_cap() -> None:
    sim_keys = keys(account=ACCOUNT)
    async for sim in simulator(sim_keys, [SimAccount(name=ACCOUNT, qps=8.0)]):
        credentials = [
            {"app_key": k.app_key, "secret": k.secret, "qps": k.qps, "account": ACCOUNT}
            for k in sim_keys
        ]
        # paced at 80 %, as deployed: at the full rate an event-loop stall shared with the
        # in-process simulator could bunch its arrival stamps into one second
        config = settings(
            sim,
            sim_keys,
            credentials=credentials,
            accounts=[{"name": ACCOUNT, "qps": 8.0}],
            safety_factor=0.8,
        )
        ids = sim.catalog.ids()[:1280]  # 32 calls of 40: about 5 s at 6.4 calls/s
        async with Gateway(config) as gw:
            await flood_gateway(gw, ids)
            scopes = {s.name: s for s in gw.stats().pool.scopes}
        stats = sim.stats()
        account = stats["accounts"][ACCOUNT]
        assert account["max_calls_in_1s"] <= 8  # 4 keys x 10 qps held to the account's 8
        assert account["code15_9100"] == 0
        assert stats["totals"]["code7"] == 0
        assert account["ok"] >= 32
        assert scopes[ACCOUNT].calls >= 32


async def test_an_undeclared_account_over_its_cap_is_paused_not_retried_at_once() -> None:
    """The simulator's account is tighter than the gateway was told: 9100s come back, and each
    pauses the account; the ids are still all answered."""
    sim_keys = keys(account=ACCOUNT)
    async for sim in simulator(sim_keys, [SimAccount(name=ACCOUNT, qps=6.0)]):
        credentials = [
            {"app_key": k.app_key, "secret": k.secret, "qps": k.qps, "account": ACCOUNT}
            for k in sim_keys
        ]
        config = settings(
            sim, sim_keys, credentials=credentials, accounts=[{"name": ACCOUNT, "qps": 12.0}]
        )
        ids = sim.catalog.ids()[:800]
        async with Gateway(config) as gw:
            answers = await gw.get_many(ids, deadline_s=20.0)
            scopes = {s.name: s for s in gw.stats().pool.scopes}
            rows = gw.stats().pool.credentials
        assert all(a.error is None for a in answers.values())
        refused = sim.stats()["accounts"][ACCOUNT]["code15_9100"]
        assert refused >= 1
        assert scopes[ACCOUNT].limited == refused  # each 9100 went to the account
        rate = scopes[ACCOUNT].rate
        assert rate is not None
        assert rate < 12.0  # and cut its rate
        assert all(r.rate_limited == 0 for r in rows)  # no key was blamed
        assert all(r.rate == pytest.approx(10.0) for r in rows)


async def test_a_method_ban_pauses_every_key_once_and_blames_none() -> None:
    sim_keys = keys()
    async for sim in simulator(sim_keys):
        ids = sim.catalog.ids()[:2000]
        async with Gateway(settings(sim, sim_keys)) as gw:
            sim.set_fault("method_ban", 1.5)
            answers = await gw.get_many(ids, deadline_s=20.0)
            stats = gw.stats().pool
        assert all(a.error is None for a in answers.values())
        (method,) = stats.scopes
        assert method.kind == "method"
        assert method.limited >= 1
        for row in stats.credentials:
            assert row.rate_limited == 0
            assert row.rate == pytest.approx(10.0)
            assert row.status is CredentialStatus.ACTIVE


async def test_a_key_refused_by_its_egress_moves_to_one_its_whitelist_accepts() -> None:
    sim_keys = keys(whitelist=("127.0.0.3",))
    async for sim in simulator(sim_keys):
        credentials = [
            {"app_key": k.app_key, "secret": k.secret, "qps": k.qps, "egress": "a"}
            for k in sim_keys
        ]
        egress = [
            {"name": "a", "local_address": "127.0.0.2", "max_qps": 50},
            {"name": "b", "local_address": "127.0.0.3", "max_qps": 50},
        ]
        ids = sim.catalog.ids()[:2400]
        async with Gateway(settings(sim, sim_keys, credentials=credentials, egress=egress)) as gw:
            await flood_gateway(gw, ids)
            rows = {r.credential: r for r in gw.stats().pool.credentials}
        picky = sim.stats()["keys"][sim_keys[0].app_key]
        assert picky["code11"] == 1  # its first call through "a" went alone
        assert picky["ok"] >= 5  # then it served through "b"
        row = rows[next(iter(rows))]
        assert row.egress == "b"
        assert row.refused_egresses == ("a",)
        assert row.status is CredentialStatus.ACTIVE
        assert row.invalid == 0
        assert sim.stats()["ips"]["127.0.0.3"]["code11"] == 0
