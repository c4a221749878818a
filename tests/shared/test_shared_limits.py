"""The shared limiter's Lua scripts against a real redis-server the suite started."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from datetime import datetime, time, timedelta, timezone

import pytest
from redis.asyncio import Redis

from taogate import Credential, Egress
from taogate._credentials import Account
from taogate.quota import PoolPolicy
from taogate.quota.redis import SharedLimits
from tests.conftest import RedisServer

pytestmark = pytest.mark.integration

METHOD = "taobao.tbk.item.info.get"
BEIJING = timezone(timedelta(hours=8))


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


async def test_every_limit_key_is_in_one_hash_slot(client: Redis) -> None:
    shared = limits(client)
    p = PoolPolicy()
    cred = Credential(app_key="k1", secret="s", egress="proxy-a", account="main")
    scopes = [
        p.egress_scope(Egress(name="proxy-a")),
        p.account_scope(Account(name="main")),
        p.method_scope(METHOD, None),
        p.pair_scope(cred, METHOD),
    ]
    keys = shared.keys(cred, scopes)
    tag = f"{{{shared._prefix}:limits}}"
    assert all(key.startswith(tag + ":") for key in keys)  # a Cluster runs them in one script
    assert keys[:2] == [f"{tag}:key:k1:state", f"{tag}:key:k1:sent"]  # no egress in the name
    assert keys[4] == f"{tag}:account:main:state"
    assert keys[6] == f"{tag}:method:{METHOD}:state"


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
    # the longest wait answers: the window's (its guard past the rate's slot)
    assert bulk_first.reason == "window"  # bulk asking first claims nothing
    waiting = await a.acquire(cred, urgent=True)
    assert not waiting.granted
    assert waiting.reason == "window"
    bulk = await b.acquire(cred, urgent=False)
    assert not bulk.granted
    assert bulk.reason == "yield"  # held off A's slot, and a little past it
    assert bulk.wait_s == pytest.approx(waiting.wait_s + 0.03, abs=0.01)
    other = await b.acquire(cred, urgent=True)  # B's own interactive lookups are not held off
    assert other.reason == "window"


async def test_an_egress_caps_every_credential_on_it(client: Redis) -> None:
    shared = limits(client, safety_factor=1.0)
    egress = (PoolPolicy().egress_scope(Egress(name="nat", max_qps=1.0)),)
    one, two = (Credential(app_key=k, secret="s", qps=10, egress="nat") for k in ("k1", "k2"))
    for cred in (one, two):
        await born(client, shared, cred)
    assert (await shared.acquire(one, scopes=egress)).granted
    held = await shared.acquire(two, scopes=egress)  # another key, the same way out
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
    egress = (PoolPolicy().egress_scope(Egress(name="nat", max_qps=1.0)),)
    k1, k2, k3 = (Credential(app_key=k, secret="s", qps=10, egress="nat") for k in "xyz")
    for cred in (k1, k2, k3):
        await born(client, a, cred)
    assert (await b.acquire(k1, urgent=False, scopes=egress)).granted
    waiting = await a.acquire(k2, urgent=True, scopes=egress)
    assert waiting.reason == "egress"  # the egress, not the key, holds A back: A claims it
    bulk = await b.acquire(k3, urgent=False, scopes=egress)  # another key on that egress
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


def max_in_any_second(times: list[float]) -> int:
    """The most of ``times`` (sorted, seconds) within any one second."""
    j = best = 0
    for i, t in enumerate(times):
        while times[j] <= t - 1.0:
            j += 1
        best = max(best, i - j + 1)
    return best


async def test_two_replicas_keep_an_account_of_three_keys_under_its_cap(client: Redis) -> None:
    """Three keys at 10 calls/s each, in one account capped at 4 calls/s, asked by two
    replicas at once: the account never has more than 4 calls in any second (server time)."""
    policy = PoolPolicy(safety_factor=1.0)
    a = limits(client, safety_factor=1.0)
    b = SharedLimits(client, prefix=a._prefix, policy=policy, probe_hold_s=10)
    account = policy.account_scope(Account(name="main", qps=4.0))
    method = policy.method_scope(METHOD, None)
    egress = policy.egress_scope(Egress(name="nat", max_qps=100.0))
    creds = [Credential(app_key=f"k{i}", secret="s", qps=10.0, account="main") for i in "123"]
    for cred in creds:
        await born(client, a, cred)
    granted: list[int] = []
    reasons: set[str] = set()
    loop = asyncio.get_running_loop()
    end = loop.time() + 2.5

    async def replica(shared: SharedLimits, cred: Credential, *, urgent: bool) -> None:
        scopes = (egress, account, method, policy.pair_scope(cred, METHOD))
        while loop.time() < end:
            verdict = await shared.acquire(cred, urgent=urgent, scopes=scopes)
            if verdict.granted:
                granted.append(verdict.server_us)
            else:
                reasons.add(verdict.reason)
                await asyncio.sleep(min(verdict.wait_s, 0.2))

    await asyncio.gather(
        *(replica(shared, c, urgent=shared is a) for shared in (a, b) for c in creds)
    )
    times = sorted(us / 1e6 for us in granted)
    assert max_in_any_second(times) <= 4  # floor(4): the keys alone would allow 30
    assert len(times) >= 6
    assert "account" in reasons


async def test_a_method_pause_holds_every_key_on_that_method(client: Redis) -> None:
    shared = limits(client)
    policy = PoolPolicy()
    method = policy.method_scope(METHOD, None)
    creds = [Credential(app_key=f"k{i}", secret="s", qps=1_000_000) for i in "123"]
    for cred in creds:
        await born(client, shared, cred)
    lease = await shared.acquire(creds[0], scopes=(method,))
    assert lease.granted
    state = await shared.record_scope(method, "pause", granted_us=lease.server_us, retry_after=3)
    assert state.paused_until - state.server_now == pytest.approx(3.0, abs=1e-3)
    assert state.factor == 1.0  # a method's pause cuts no rate
    for cred in creds:  # every key, not only the one whose call was refused
        verdict = await shared.acquire(cred, scopes=(method, policy.pair_scope(cred, METHOD)))
        assert not verdict.granted
        assert verdict.reason == "method"
        assert verdict.wait_s == pytest.approx(
            state.paused_until - verdict.server_us / 1e6, abs=1e-5
        )
        assert 2.9 < verdict.wait_s <= 3.0
    shorter = await shared.record_scope(method, "pause", granted_us=lease.server_us, retry_after=1)
    assert shorter.paused_until == state.paused_until  # a pause never shortens one recorded
    other = policy.method_scope("taobao.tbk.item.info.upgrade.get", None)
    assert (await shared.acquire(creds[0], scopes=(other,))).granted  # another method goes on


async def test_a_pair_pause_holds_only_that_key_on_that_method(client: Redis) -> None:
    shared = limits(client)
    policy = PoolPolicy()
    one, two = (Credential(app_key=k, secret="s", qps=1_000_000) for k in ("k1", "k2"))
    for cred in (one, two):
        await born(client, shared, cred)
    await shared.record_scope(
        policy.pair_scope(one, METHOD), "pause", granted_us=0, retry_after=5.0
    )
    held = await shared.acquire(one, scopes=(policy.pair_scope(one, METHOD),))
    assert held.reason == "pair"
    assert 4.9 < held.wait_s <= 5.0
    assert (await shared.acquire(two, scopes=(policy.pair_scope(two, METHOD),))).granted


async def test_an_account_ban_halves_its_rate_once_per_ban(client: Redis) -> None:
    policy = PoolPolicy(safety_factor=1.0)
    shared = limits(client, safety_factor=1.0)
    account = replace(policy.account_scope(Account(name="main", qps=10.0)), burst=1)
    state_key = shared.scope_keys(account.id)[0]
    cred = Credential(app_key="k1", secret="s", qps=1_000_000, account="main")
    await born(client, shared, cred)
    first = await shared.acquire(cred, scopes=(account,))
    assert first.granted
    ban = await shared.record_scope(account, "ban", granted_us=first.server_us, retry_after=0)
    assert ban.factor == pytest.approx(0.5, abs=0.01)
    late = await shared.record_scope(account, "ban", granted_us=first.server_us, retry_after=0)
    assert late.factor == pytest.approx(0.5, abs=0.01)  # granted before the ban: the same ban
    paused = await shared.record_scope(account, "pause", granted_us=0, retry_after=0)
    assert paused.factor == pytest.approx(0.5, abs=0.01)  # a pause cuts nothing
    await client.hset(state_key, "tat", "0")  # the schedule caught up (instead of sleeping)
    second = await shared.acquire(cred, scopes=(account,))
    assert second.granted
    held = await shared.acquire(cred, scopes=(account,))
    assert held.reason == "account"
    assert held.wait_s == pytest.approx(0.2, abs=0.01)  # 5 calls/s: half of 10
    again = await shared.record_scope(account, "ban", granted_us=second.server_us, retry_after=0)
    assert again.factor == pytest.approx(0.25, abs=0.01)  # a call granted after it: a new ban


async def test_an_exhausted_key_waits_for_midnight_in_beijing_on_every_replica(
    client: Redis,
) -> None:
    a = limits(client)
    b = SharedLimits(client, prefix=a._prefix, policy=PoolPolicy(), probe_hold_s=10)
    spent, other = (Credential(app_key=k, secret="s", qps=1_000_000) for k in ("k1", "k2"))
    for cred in (spent, other):
        await born(client, a, cred)
    lease = await a.acquire(spent)
    assert lease.granted
    await a.record(spent, "exhausted", granted_us=lease.server_us, probe=False, retry_after=3600)
    verdict = await b.acquire(spent)
    assert not verdict.granted
    assert verdict.reason == "budget"
    now = datetime.fromtimestamp(verdict.server_us / 1e6, BEIJING)
    midnight = datetime.combine(now.date() + timedelta(days=1), time(), BEIJING)
    assert verdict.wait_s == pytest.approx((midnight - now).total_seconds(), abs=1e-3)
    assert (await b.acquire(other)).granted  # only that key's day is spent


async def test_a_call_one_scope_refuses_takes_nothing_from_the_others(client: Redis) -> None:
    policy = PoolPolicy(safety_factor=1.0)
    shared = limits(client, safety_factor=1.0)
    account = policy.account_scope(Account(name="main", qps=10.0))
    method = replace(policy.method_scope(METHOD, 1.0), burst=1)
    one, two = (Credential(app_key=k, secret="s", qps=10, account="main") for k in ("k1", "k2"))
    for cred in (one, two):
        await born(client, shared, cred)
    assert (await shared.acquire(one, scopes=(account, method))).granted
    account_state, account_sent = shared.scope_keys(account.id)
    before = (await client.hgetall(account_state), await client.lrange(account_sent, 0, -1))
    held = await shared.acquire(two, urgent=False, scopes=(account, method))
    assert held.reason == "method"
    assert (await client.hgetall(account_state), await client.lrange(account_sent, 0, -1)) == before
    assert await client.hget(shared.keys(two)[0], "tat") is None  # nor from its key


async def test_hostile_scope_state_is_survived(client: Redis) -> None:
    policy = PoolPolicy(safety_factor=1.0)
    shared = limits(client, safety_factor=1.0)
    account = policy.account_scope(Account(name="main", qps=10.0))
    method = policy.method_scope(METHOD, 10.0)
    cred = Credential(app_key="k1", secret="s", qps=10, account="main")
    await born(client, shared, cred)
    account_state, account_sent = shared.scope_keys(account.id)
    method_state, method_sent = shared.scope_keys(method.id)
    await client.hset(
        account_state,
        mapping={
            "tat": "garbage",
            "factor": "nan",
            "factor_at": "-inf",
            "decreased_at": "1e300",
            "paused_until": "1e300",
            "urgent_until": "x",
        },
    )
    await client.rpush(account_sent, *([b"garbage"] * 20))
    await client.rpush(method_state, b"garbage")  # a list where the state hash goes
    await client.hset(method_sent, "x", "y")  # a hash where the send list goes
    verdict = await shared.acquire(cred, urgent=False, scopes=(account, method))
    assert verdict.granted
    tat = await client.hget(account_state, "tat")
    assert tat is not None
    assert float(tat) > verdict.server_us / 1e6  # a number again: the next slot
    assert await client.type(method_state) == b"hash"
    assert await client.type(method_sent) == b"list"
    await client.delete(method_state)
    await client.rpush(method_state, b"garbage")
    state = await shared.record_scope(method, "ban", granted_us=verdict.server_us, retry_after=1)
    assert state.paused_until - state.server_now == pytest.approx(1.0, abs=1e-3)
    with pytest.raises(ValueError, match="unknown scope outcome"):
        await shared.record_scope(method, "halve", granted_us=0, retry_after=1)
