"""The shared limiter's Lua scripts against a real redis-server the suite started."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable

import pytest
from redis.asyncio import Redis

from taogate import Credential, Egress
from taogate.quota import PoolPolicy
from taogate.quota.redis import SharedLimits
from tests.conftest import RedisServer

pytestmark = pytest.mark.integration


@pytest.fixture
async def client(redis_server: RedisServer) -> AsyncIterator[Redis]:
    r = Redis.from_url(redis_server.url)
    yield r
    await r.aclose()


async def born(client: Redis, shared: SharedLimits, cred: Credential) -> None:
    """Age the credential's state past its first window (a new state waits one window)."""
    await client.hset(shared.keys(cred)[0], "born", "0")


def limits(
    client: Redis, share: Callable[[], float] = lambda: 1.0, **policy: float
) -> SharedLimits:
    prefix = "t" + os.urandom(4).hex()  # each test its own keys on the shared test server
    return SharedLimits(
        client,
        prefix=prefix,
        policy=PoolPolicy(**policy),  # type: ignore[arg-type]
        probe_hold_s=10.0,
        share=share,
    )


async def test_grants_at_the_rate_then_waits(client: Redis) -> None:
    shared = limits(client, safety_factor=1.0)
    cred = Credential(app_key="k1", secret="s", qps=10)
    await born(client, shared, cred)
    first = await shared.acquire(cred)
    second = await shared.acquire(cred)
    assert first.granted
    assert first.reason == "ok"
    assert not second.granted
    assert second.reason == "rate"
    assert 0.05 < second.wait_s <= 0.1 + 1e-3


async def test_keys_share_one_hash_slot(client: Redis) -> None:
    shared = limits(client)
    keys = shared.keys(Credential(app_key="k1", secret="s", egress="proxy-a"))
    state, sent, egress_state, egress_sent = keys
    assert state.split("}")[0] == sent.split("}")[0]  # the credential's two keys: one slot
    assert ":c:k1}" in state  # its own tag: it stays put if the key changes egress
    assert egress_state.split("}")[0] == egress_sent.split("}")[0]
    assert ":e:proxy-a}" in egress_state


async def test_ban_is_seen_by_every_acquire_and_halves_once(client: Redis) -> None:
    shared = limits(client, safety_factor=1.0)
    cred = Credential(app_key="k1", secret="s", qps=100)
    await born(client, shared, cred)
    lease = await shared.acquire(cred)
    state = await shared.record(cred, "ban", granted_us=lease.server_us, probe=False, retry_after=2)
    assert state.factor == pytest.approx(0.5, abs=0.01)
    again = await shared.record(cred, "ban", granted_us=lease.server_us, probe=False, retry_after=2)
    assert again.factor == pytest.approx(0.5, abs=0.01)  # the same ban, seen by a second call
    verdict = await shared.acquire(cred)
    assert not verdict.granted
    assert verdict.reason == "banned"
    assert 1.5 < verdict.wait_s <= 2.0


async def test_quarantine_lets_one_probe_out(client: Redis) -> None:
    shared = limits(client, probe_after_s=0.0)
    cred = Credential(app_key="k1", secret="s", qps=1_000_000)
    await born(client, shared, cred)
    lease = await shared.acquire(cred)
    await shared.record(cred, "invalid", granted_us=lease.server_us, probe=False)
    probe = await shared.acquire(cred)  # probe_after 0: the probe may go at once
    assert probe.granted
    assert probe.probe
    other = await shared.acquire(cred)
    assert not other.granted
    assert other.reason == "probing"
    state = await shared.record(cred, "probe_ok", granted_us=probe.server_us, probe=True)
    assert not state.quarantined
    assert (await shared.acquire(cred)).granted


async def test_daily_budget_is_shared(client: Redis) -> None:
    shared_a = limits(client)
    shared_b = SharedLimits(client, prefix=shared_a._prefix, policy=PoolPolicy(), probe_hold_s=10)
    cred = Credential(app_key="k1", secret="s", qps=1_000_000, daily_budget=3)
    await born(client, shared_a, cred)
    granted = 0
    for shared in (shared_a, shared_b) * 3:
        granted += (await shared.acquire(cred)).granted
    assert granted == 3
    verdict = await shared_b.acquire(cred)
    assert verdict.reason == "budget"
    assert 0 < verdict.wait_s <= 86_400


async def test_a_new_state_waits_one_window(client: Redis) -> None:
    """After a Redis restart the last second's calls are unknown: nobody sends for a window."""
    shared = limits(client)
    cred = Credential(app_key="k1", secret="s", qps=10)
    first = await shared.acquire(cred)
    second = await shared.acquire(cred)
    assert not first.granted
    assert first.reason == "fresh"
    assert 1.0 < first.wait_s <= 1.0 + PoolPolicy().window_guard_s
    assert second.reason == "fresh"
    assert second.wait_s <= first.wait_s


async def test_shared_rate_leaves_departed_replicas_their_share(client: Redis) -> None:
    # one of two replicas is cut off and decides locally
    shared = limits(client, safety_factor=1.0, share=lambda: 0.5)
    cred = Credential(app_key="k1", secret="s", qps=10)
    await born(client, shared, cred)
    assert (await shared.acquire(cred)).granted
    verdict = await shared.acquire(cred)
    assert verdict.reason == "rate"
    assert verdict.wait_s == pytest.approx(0.2, abs=0.01)  # 5 calls/s: half of 10


async def test_an_interactive_waiter_claims_its_slot_from_other_replicas_bulk(
    client: Redis,
) -> None:
    """Replica A has interactive lookups waiting; replica B only bulk: B yields A's slot."""
    a = limits(client, safety_factor=1.0, claim_s=0.03)
    b = SharedLimits(
        client, prefix=a._prefix, policy=PoolPolicy(safety_factor=1.0), probe_hold_s=10
    )
    cred = Credential(app_key="k1", secret="s", qps=1)  # one slot a second: no race with time
    await born(client, a, cred)
    assert (await b.acquire(cred, urgent=False)).granted  # bulk takes a free slot
    bulk_first = await b.acquire(cred, urgent=False)
    assert bulk_first.reason == "rate"  # bulk asking first claims nothing
    waiting = await a.acquire(cred, urgent=True)
    assert not waiting.granted
    assert waiting.reason == "rate"
    bulk = await b.acquire(cred, urgent=False)
    assert not bulk.granted
    assert bulk.reason == "yield"  # held off A's slot, and a little past it
    assert bulk.wait_s == pytest.approx(waiting.wait_s + 0.03, abs=0.01)
    other = await b.acquire(cred, urgent=True)  # B's own interactive lookups are not held off
    assert other.reason == "rate"


async def test_an_egress_caps_every_credential_on_it(client: Redis) -> None:
    shared = limits(client, safety_factor=1.0)
    egress = Egress(name="nat", max_qps=1.0)
    one, two = (Credential(app_key=k, secret="s", qps=10, egress="nat") for k in ("k1", "k2"))
    for cred in (one, two):
        await born(client, shared, cred)
    assert (await shared.acquire(one, egress=egress)).granted
    held = await shared.acquire(two, egress=egress)  # another key, the same way out
    assert not held.granted
    assert held.reason == "egress"
    assert 0.9 < held.wait_s <= 1.0 + PoolPolicy().egress_window_guard_s + 1e-3  # its window
    assert (await shared.acquire(two)).granted  # without the egress cap it would have gone


async def test_an_interactive_waiter_claims_the_egress_from_bulk_on_its_other_keys(
    client: Redis,
) -> None:
    a = limits(client, safety_factor=1.0, claim_s=0.03)
    b = SharedLimits(
        client, prefix=a._prefix, policy=PoolPolicy(safety_factor=1.0), probe_hold_s=10
    )
    egress = Egress(name="nat", max_qps=1.0)
    k1, k2, k3 = (Credential(app_key=k, secret="s", qps=10, egress="nat") for k in "xyz")
    for cred in (k1, k2, k3):
        await born(client, a, cred)
    assert (await b.acquire(k1, urgent=False, egress=egress)).granted
    waiting = await a.acquire(k2, urgent=True, egress=egress)
    assert waiting.reason == "egress"  # the egress, not the key, holds A back: A claims it
    bulk = await b.acquire(k3, urgent=False, egress=egress)  # another key on that egress
    assert bulk.reason == "yield"
    assert bulk.wait_s == pytest.approx(waiting.wait_s + 0.03, abs=0.01)


async def test_a_rotated_secret_lets_a_quarantined_key_probe_now(client: Redis) -> None:
    shared = limits(client, probe_after_s=30.0)
    cred = Credential(app_key="k1", secret="s", qps=1_000_000)
    await born(client, shared, cred)
    lease = await shared.acquire(cred)
    await shared.record(cred, "invalid", granted_us=lease.server_us, probe=False)
    held = await shared.acquire(cred)
    assert held.reason == "quarantined"
    assert held.wait_s > 25
    await shared.record(cred, "rotated", granted_us=0, probe=False)
    probe = await shared.acquire(cred)  # every replica: the probe may go at once
    assert probe.granted
    assert probe.probe
