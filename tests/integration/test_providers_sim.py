"""The providers against the simulator over real loopback HTTP."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from decimal import Decimal

import pytest

from taogate import (
    Credential,
    CredentialInvalid,
    EgressUnreachable,
    FinalPriceBasis,
    ProtocolMismatch,
    RateLimited,
    UpstreamBadRequest,
    UpstreamTransient,
)
from taogate._settings import SimSettings
from taogate.providers import ResellerProvider, TopProvider
from taogate.providers.top import UPGRADE_GET
from taogate.testing import SimKey, Simulator, items_only

pytestmark = pytest.mark.integration

KEY = SimKey(app_key="12345678", secret="helloworld", qps=5.0)
CRED = Credential(app_key=KEY.app_key, secret=KEY.secret)


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    settings = SimSettings(
        latency_ms=(0.0, 0.0), catalog_size=2_000, seed=3, ban_s=4.0, legacy_ratio=0.01
    )
    async with Simulator([KEY], settings=settings, port=0) as simulator:
        yield simulator


def present_ids(sim: Simulator, n: int) -> list[str]:
    truth = sim.truth(sim.catalog.ids()[: n * 3])
    return [i for i, row in truth.items() if row is not None and not sim.catalog.is_legacy(i)][:n]


@pytest.mark.parametrize("sign_method", ["md5", "hmac", "hmac-sha256"])
@pytest.mark.parametrize("simplify", [False, True])
async def test_signed_calls_are_accepted(sim: Simulator, sign_method: str, simplify: bool) -> None:
    ids = present_ids(sim, 40)
    async with TopProvider(url=sim.url, sign_method=sign_method, simplify=simplify) as provider:  # type: ignore[arg-type]
        items = items_only(await provider.fetch(ids, CRED))
    assert set(items) == set(ids)
    truth = sim.truth(ids)
    for num_iid, item in items.items():
        row = truth[num_iid]
        assert row is not None
        assert item.zk_final_price == Decimal(row["zk_final_price"])
        assert item.final_price == Decimal(row["final_price"])
        assert item.final_price_basis == row["final_price_basis"]
    assert sim.stats()["keys"][KEY.app_key]["items_per_ok_call"] == 40


async def test_upgrade_method(sim: Simulator) -> None:
    ids = present_ids(sim, 20)
    async with TopProvider(url=sim.url, method=UPGRADE_GET) as provider:
        items = items_only(await provider.fetch(ids, CRED))
    assert set(items) == set(ids)
    assert all(i.final_price_basis is FinalPriceBasis.FINAL_PROMOTION_PRICE for i in items.values())
    assert all(i.final_price is not None for i in items.values())


async def test_absent_id_is_not_in_the_answer(sim: Simulator) -> None:
    ids = present_ids(sim, 3)
    async with TopProvider(url=sim.url) as provider:
        items = items_only(await provider.fetch([*ids, "999999999999"], CRED))
    assert set(items) == set(ids)


async def test_wrong_secret_is_credential_invalid(sim: Simulator) -> None:
    async with TopProvider(url=sim.url) as provider:
        with pytest.raises(CredentialInvalid) as info:
            await provider.fetch(["1"], Credential(app_key=KEY.app_key, secret="wrong-secret"))
    assert info.value.code == 25
    assert "wrong-secret" not in str(info.value)
    assert info.value.credential == "123…678"


async def test_unknown_key_is_credential_invalid(sim: Simulator) -> None:
    async with TopProvider(url=sim.url) as provider:
        with pytest.raises(CredentialInvalid) as info:
            await provider.fetch(["1"], Credential(app_key="00000000", secret="x"))
    assert info.value.code == 29


async def test_clock_skew_is_a_protocol_mismatch(sim: Simulator) -> None:
    import time

    async with TopProvider(url=sim.url, wall_clock=lambda: time.time() - 8 * 3600) as provider:
        with pytest.raises(ProtocolMismatch) as info:
            await provider.fetch(["1"], CRED)
    assert info.value.code == 31


async def test_code_7_carries_the_ban_seconds(sim: Simulator) -> None:
    ids = present_ids(sim, 10)
    async with TopProvider(url=sim.url) as provider:
        results = await asyncio.gather(
            *(provider.fetch([i], CRED) for i in ids), return_exceptions=True
        )
    limited = [r for r in results if isinstance(r, RateLimited)]
    assert sum(isinstance(r, dict) for r in results) == 5
    assert len(limited) == 5
    assert all(3 <= r.retry_after <= 4 for r in limited)
    assert all(r.code == 7 and r.scope == "app" for r in limited)
    stats = sim.stats()["keys"][KEY.app_key]
    assert stats["code7"] == 5
    assert stats["max_calls_in_1s"] == 10


async def test_legacy_id_is_a_bad_request_naming_the_batch(sim: Simulator) -> None:
    legacy = next(i for i in sim.catalog.ids() if sim.catalog.is_legacy(i))
    async with TopProvider(url=sim.url) as provider:
        with pytest.raises(UpstreamBadRequest) as info:
            await provider.fetch([legacy, "520000000001"], CRED)
    assert info.value.sub_code == "-4003"
    assert legacy in info.value.ids


@pytest.mark.parametrize("kind", ["malformed", "outage", "code15"])
async def test_faults_are_transient(sim: Simulator, kind: str) -> None:
    sim.set_fault(kind, 30.0)
    async with TopProvider(url=sim.url) as provider:
        with pytest.raises(UpstreamTransient):
            await provider.fetch(present_ids(sim, 1), CRED)


async def test_revoked_key(sim: Simulator) -> None:
    sim.set_fault("revoke", 30.0, app_key=KEY.app_key)
    async with TopProvider(url=sim.url) as provider:
        with pytest.raises(CredentialInvalid):
            await provider.fetch(present_ids(sim, 1), CRED)


async def test_timeout_is_transient(sim: Simulator) -> None:
    sim.set_fault("slow", 30.0, extra_latency_ms=2_000)
    async with TopProvider(url=sim.url, timeout_s=0.2) as provider:
        with pytest.raises(UpstreamTransient, match="transport failure"):
            await provider.fetch(present_ids(sim, 1), CRED)


async def test_connection_refused_is_transient() -> None:
    async with TopProvider(url="http://127.0.0.1:9/router/rest", timeout_s=1) as provider:
        with pytest.raises(UpstreamTransient, match="no connection through egress") as info:
            await provider.fetch(["1"], CRED)
    assert isinstance(info.value, EgressUnreachable)  # the pool decides whom to blame
    assert info.value.egress == "default"
    assert info.value.__cause__ is None
    assert info.value.__context__ is None


async def test_reseller_provider(sim: Simulator) -> None:
    (num_iid,) = present_ids(sim, 1)
    async with ResellerProvider(url=sim.reseller_url) as provider:
        items = items_only(await provider.fetch([num_iid], CRED))
        truth = sim.truth([num_iid])[num_iid]
        assert truth is not None
        assert items[num_iid].zk_final_price == Decimal(truth["zk_final_price"])
        assert await provider.fetch(["999999999999"], CRED) == {}
        with pytest.raises(CredentialInvalid) as info:
            await provider.fetch([num_iid], Credential(app_key=KEY.app_key, secret="bad-secret"))
        assert "bad-secret" not in repr(info.value) + str(info.value)
        assert info.value.__cause__ is None
        assert info.value.__context__ is None


async def test_reseller_transport_failure_carries_no_secret() -> None:
    async with ResellerProvider(url="http://127.0.0.1:9/taobao/item_get/", timeout_s=1) as p:
        with pytest.raises(UpstreamTransient) as info:
            await p.fetch(["1"], Credential(app_key=KEY.app_key, secret="url-secret"))
    assert info.value.__context__ is None
    assert info.value.__cause__ is None
    assert "url-secret" not in repr(info.value) + str(info.value)
