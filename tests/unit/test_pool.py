"""The credential pool on a fake clock: pacing, bans, AIMD, quarantine, budgets."""

from __future__ import annotations

import asyncio
import itertools
import math
from collections.abc import Sequence
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from taogate import Credential, NoCredentialAvailable
from taogate.providers.base import Egress
from taogate.quota import (
    CredentialPool,
    CredentialStatus,
    FixedShare,
    PoolPolicy,
    SharedVerdict,
)
from taogate.quota.scopes import Scope
from taogate.testing import FakeClock


def cred(key: str, qps: float = 10.0, **kw: object) -> Credential:
    return Credential(app_key=key, secret="s-" + key, qps=qps, **kw)  # type: ignore[arg-type]


def drain(
    pool: CredentialPool, clock: FakeClock, seconds: float, step: float = 0.001
) -> list[tuple[float, str]]:
    """Take every lease the pool grants over ``seconds`` of fake time."""
    sent = []
    end = clock.now + seconds
    while clock.now < end:
        lease = pool.try_acquire()
        if lease is None:
            clock.advance(step)
            continue
        sent.append((clock.now, lease.credential.app_key))
        pool.on_success(lease)
    return sent


def test_pacing_follows_qps_times_safety() -> None:
    clock = FakeClock(1000.0)
    pool = CredentialPool([cred("k1")], PoolPolicy(safety_factor=0.8), clock=clock)
    sent = drain(pool, clock, 10.0)
    assert len(sent) == pytest.approx(80, abs=1)
    gaps = [b[0] - a[0] for a, b in itertools.pairwise(sent)]
    assert min(gaps) >= 0.125 - 1e-6


def test_window_guard_at_full_rate() -> None:
    clock = FakeClock(1000.0)
    pool = CredentialPool(
        [cred("k1")], PoolPolicy(safety_factor=1.0, window_guard_s=0.02), clock=clock
    )
    times = [t for t, _ in drain(pool, clock, 5.0)]
    for i in range(len(times) - 10):
        assert times[i + 10] - times[i] >= 1.02 - 1e-9


def test_soonest_credential_is_chosen_and_load_spreads() -> None:
    clock = FakeClock(1000.0)
    pool = CredentialPool(
        [cred("k1"), cred("k2"), cred("k3")], PoolPolicy(safety_factor=0.9), clock=clock
    )
    sent = drain(pool, clock, 10.0)
    per_key = {k: sum(1 for _, key in sent if key == k) for k in ("k1", "k2", "k3")}
    assert all(88 <= n <= 91 for n in per_key.values()), per_key
    assert pool.total_rate() == pytest.approx(27.0)


def test_ban_pauses_and_aimd_halves_then_recovers() -> None:
    clock = FakeClock(1000.0)
    policy = PoolPolicy(safety_factor=1.0, recovery_per_s=0.1)
    pool = CredentialPool([cred("k1")], policy, clock=clock)
    lease = pool.try_acquire()
    assert lease is not None
    pool.on_rate_limited(lease, retry_after=3.0)
    assert pool.status(lease.credential) is CredentialStatus.BANNED
    assert pool.try_acquire() is None
    credential, at = pool.next_ready()
    assert credential is not None
    assert at == pytest.approx(1003.0)
    assert pool.rate(lease.credential) == pytest.approx(5.0)
    clock.advance(3.0)
    assert pool.rate(lease.credential) == pytest.approx(8.0)  # (0.5 + 0.1 * 3) of 10 qps
    assert pool.try_acquire() is not None
    clock.advance(10.0)
    assert pool.rate(lease.credential) == pytest.approx(10.0)


def test_quarantine_and_half_open_probe() -> None:
    clock = FakeClock(1000.0)
    good, bad = cred("good"), cred("bad")
    pool = CredentialPool([bad, good], PoolPolicy(probe_after_s=30.0), clock=clock)
    lease = pool.try_acquire()
    assert lease is not None
    assert lease.credential is bad
    pool.on_invalid(lease)
    assert pool.status(bad) is CredentialStatus.QUARANTINED
    # the others carry the load meanwhile
    assert {k for _, k in drain(pool, clock, 5.0)} == {"good"}
    clock.advance(30.0)
    probe = None
    while probe is None or probe.credential is not bad:
        probe = pool.try_acquire()
        clock.advance(0.01)
    assert pool.status(bad) is CredentialStatus.PROBING
    # one probe at a time
    assert all(k == "good" for _, k in drain(pool, clock, 1.0))
    pool.on_invalid(probe)
    row = next(r for r in pool.snapshot() if r["credential"] == bad.masked)
    assert row["probe_in_s"] == pytest.approx(60.0)  # backs off
    clock.advance(60.0)
    probe = None
    while probe is None or probe.credential is not bad:
        probe = pool.try_acquire()
        clock.advance(0.01)
    pool.on_success(probe)
    assert pool.status(bad) is CredentialStatus.ACTIVE


def test_all_quarantined_raises_with_retry_after() -> None:
    clock = FakeClock(1000.0)
    pool = CredentialPool([cred("k1")], PoolPolicy(probe_after_s=30.0), clock=clock)
    lease = pool.try_acquire()
    assert lease is not None
    pool.on_invalid(lease)
    credential, at = pool.next_ready()
    assert credential is None
    assert at == pytest.approx(1030.0)
    assert pool.total_rate() == 0


async def test_acquire_raises_when_nothing_is_usable() -> None:
    clock = FakeClock(1000.0)
    pool = CredentialPool([cred("k1")], clock=clock)
    lease = pool.try_acquire()
    assert lease is not None
    pool.on_invalid(lease)
    with pytest.raises(NoCredentialAvailable) as info:
        await pool.acquire()
    assert info.value.retry_after == pytest.approx(30.0)


def test_daily_budget_counts_per_beijing_day() -> None:
    clock = FakeClock(1000.0)
    wall = FakeClock(1704124700.0)  # 2024-01-01 23:58:20 in Beijing
    pool = CredentialPool([cred("k1", daily_budget=3)], clock=clock, wall_clock=wall)
    assert len(drain(pool, clock, 5.0)) == 3
    assert pool.status(pool.credentials[0]) is CredentialStatus.EXHAUSTED
    credential, at = pool.next_ready()
    assert credential is None
    assert math.isinf(at)
    wall.advance(200)  # past midnight in Beijing
    assert len(drain(pool, clock, 5.0)) == 3


def test_cost_and_release_unused() -> None:
    clock = FakeClock(1000.0)
    pool = CredentialPool([cred("k1", cost_per_call=Decimal("0.01"))], clock=clock)
    lease = pool.try_acquire()
    assert lease is not None
    assert pool.snapshot()[0]["cost"] == "0.01"
    pool.release_unused(lease)
    row = pool.snapshot()[0]
    assert row["cost"] == "0.00"
    assert row["calls"] == 0
    assert pool.try_acquire() is not None  # the slot came back


def test_policy_validation() -> None:
    with pytest.raises(ValueError, match="safety_factor"):
        PoolPolicy(safety_factor=1.2)
    with pytest.raises(ValueError, match="AIMD"):
        PoolPolicy(aimd_decrease=1.0)
    with pytest.raises(ValueError, match="at least one"):
        CredentialPool([], clock=FakeClock(1000.0))


@settings(max_examples=150, deadline=None)
@given(
    qps=st.sampled_from([1.0, 5.0, 10.0]),
    safety=st.sampled_from([0.5, 0.8, 0.9, 1.0]),
    keys=st.integers(min_value=1, max_value=4),
    gaps=st.lists(st.floats(min_value=0.0, max_value=0.3), min_size=1, max_size=150),
)
def test_no_credential_ever_exceeds_its_qps_in_any_second(
    qps: float, safety: float, keys: int, gaps: list[float]
) -> None:
    """For any pattern of acquire attempts, no key is granted more than qps in a second."""
    clock = FakeClock(1000.0)
    pool = CredentialPool(
        [cred(f"k{i}", qps=qps) for i in range(keys)], PoolPolicy(safety_factor=safety), clock=clock
    )
    granted: dict[str, list[float]] = {}
    for gap in gaps:
        clock.advance(gap)
        lease = pool.try_acquire()
        if lease is not None:
            granted.setdefault(lease.credential.app_key, []).append(clock.now)
            pool.on_success(lease)
    for times in granted.values():
        j = 0
        for i, t in enumerate(times):
            while times[j] <= t - 1.0:
                j += 1
            assert i - j + 1 <= qps


def test_calls_in_flight_when_quarantine_begins_do_not_decide_it() -> None:
    clock = FakeClock(1000.0)
    pool = CredentialPool([cred("k1", qps=1000)], PoolPolicy(probe_after_s=30.0), clock=clock)
    leases = []
    for _ in range(6):
        lease = pool.try_acquire()
        assert lease is not None
        leases.append(lease)
        clock.advance(0.02)  # under the implicit egress cap (80/s)
    for lease in leases[:4]:
        pool.on_invalid(lease)  # one revocation seen by four calls: one quarantine
    pool.on_success(leases[4])  # an old call that went through proves nothing now
    row = pool.snapshot()[0]
    assert row["status"] == "quarantined"
    assert row["probe_in_s"] == pytest.approx(30.0, abs=0.1)
    clock.advance(30.0)
    probe = pool.try_acquire()
    assert probe is not None
    assert probe.probe
    pool.on_done(leases[5])  # an old call ending does not free a second probe
    assert pool.try_acquire() is None
    pool.on_success(probe)
    assert pool.snapshot()[0]["status"] == "active"


def test_one_ban_halves_the_rate_once() -> None:
    clock = FakeClock(1000.0)
    pool = CredentialPool([cred("k1", qps=100)], PoolPolicy(safety_factor=1.0), clock=clock)
    leases = []
    for _ in range(5):
        lease = pool.try_acquire()
        assert lease is not None
        leases.append(lease)
        clock.advance(0.011)
    for lease in leases:
        pool.on_rate_limited(lease, retry_after=2.0)
    assert pool.rate(leases[0].credential) == pytest.approx(50.0)
    clock.advance(2.0)
    again = pool.try_acquire()
    assert again is not None
    pool.on_rate_limited(again, retry_after=2.0)  # a new ban: halved again
    assert pool.rate(again.credential) == pytest.approx(25.0, rel=0.1)


def test_a_replica_deciding_alone_spends_its_share_of_the_budget() -> None:
    clock = FakeClock(1000.0)
    pool = CredentialPool(
        [cred("k1", qps=1000, daily_budget=10)], clock=clock, replicas=FixedShare(0.25)
    )
    assert len(drain(pool, clock, 5.0)) == 2  # floor of 10 x 1/4 = 2.5


class UrgentFirstShared:
    """A shared limiter seam: urgent calls are granted; the others are told to wait 5 s,
    for ``reason`` (``yield``: another replica claimed the slot; ``rate``: the schedule)."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        self.asked: list[bool] = []
        #: the kinds of the other scopes each ask covered
        self.scopes: list[tuple[str, ...]] = []

    async def acquire(
        self, credential: Credential, *, urgent: bool = True, scopes: Sequence[Scope] = ()
    ) -> SharedVerdict:
        self.asked.append(urgent)
        self.scopes.append(tuple(scope.kind for scope in scopes))
        if urgent:
            return SharedVerdict(granted=True, wait_s=0.0, reason="ok", server_us=1, probe=False)
        return SharedVerdict(
            granted=False, wait_s=5.0, reason=self.reason, server_us=1, probe=False
        )

    async def record(self, credential: Credential, op: str, **kw: object) -> None:
        return None

    async def record_scope(self, scope: Scope, op: str, **kw: object) -> None:
        return None


async def test_a_yield_holds_back_only_calls_that_are_not_urgent() -> None:
    clock = FakeClock(1000.0)
    shared = UrgentFirstShared("yield")
    pool = CredentialPool([cred("k1")], PoolPolicy(safety_factor=1.0), clock=clock, shared=shared)
    urgency = iter([False, True])  # bulk only at first; then an interactive lookup arrives
    lease = await pool.acquire(urgent=lambda: next(urgency))
    assert shared.asked == [False, True]
    assert shared.scopes[-1] == ("egress", "method", "pair")  # the key's are the limiter's own
    assert lease.granted_at == clock.now  # the yield did not delay the interactive call
    clock.advance(1.0)
    _, bulk_at = pool.next_ready(urgent=False)
    _, urgent_at = pool.next_ready(urgent=True)
    assert urgent_at == clock.now
    assert bulk_at == pytest.approx(clock.now + 4.0)  # what is left of the 5 s yield


@pytest.mark.parametrize(
    ("safety", "slack"),
    [(1.0, 0.05), (0.9, 10 / 9 - 1 + 0.05), (0.8, 10 / 8 - 1 + 0.05)],
)
def test_send_slack_is_what_pacing_leaves_of_the_window(safety: float, slack: float) -> None:
    clock = FakeClock(1000.0)
    pool = CredentialPool([cred("k1")], PoolPolicy(safety_factor=safety), clock=clock)
    lease = pool.try_acquire()
    assert lease is not None
    assert pool.send_slack(lease) == pytest.approx(slack)


def max_in_any_second(times: list[float]) -> int:
    j = best = 0
    for i, t in enumerate(times):
        while times[j] <= t - 1.0:
            j += 1
        best = max(best, i - j + 1)
    return best


def test_an_egress_caps_all_its_credentials_together() -> None:
    clock = FakeClock(1000.0)
    egress = Egress(name="proxy-a", max_qps=20.0)
    creds = [cred(f"k{i}", egress="proxy-a") for i in range(6)]  # 6 × 10 qps on a 20/s egress
    pool = CredentialPool(creds, PoolPolicy(safety_factor=0.9), clock=clock, egresses=[egress])
    sent = drain(pool, clock, 20.0)
    times = [t for t, _ in sent]
    assert max_in_any_second(times) <= 20
    assert len(sent) >= 0.95 * 20 * 20  # the cap is the limit, not the keys (54/s)
    assert len({k for _, k in sent}) == 6  # spread over every key
    row = pool.egress_snapshot()[0]
    assert row["egress"] == "proxy-a"
    assert row["credentials"] == 6
    assert row["calls"] == len(sent)


def test_credentials_naming_no_egress_share_an_implicit_one_at_the_ip_limit() -> None:
    clock = FakeClock(1000.0)
    creds = [cred(f"k{i}", qps=50.0) for i in range(4)]  # 4 × 50 × 0.8 = 160/s of keys
    pool = CredentialPool(creds, PoolPolicy(safety_factor=0.8), clock=clock)
    sent = drain(pool, clock, 5.0)
    assert max_in_any_second([t for t, _ in sent]) <= 80  # 100 × safety factor
    assert pool.egresses == [Egress(name="default", max_qps=80.0)]


def test_a_released_lease_gives_back_its_egress_slot() -> None:
    clock = FakeClock(1000.0)
    egress = Egress(name="e", max_qps=1.0)
    pool = CredentialPool(
        [cred("k1", egress="e"), cred("k2", egress="e")], clock=clock, egresses=[egress]
    )
    lease = pool.try_acquire()
    assert lease is not None
    assert pool.try_acquire() is None  # the egress allows one call a second
    pool.release_unused(lease)
    assert pool.try_acquire() is not None


def test_an_unreachable_egress_pauses_while_another_works() -> None:
    clock = FakeClock(1000.0)
    a, b = Egress(name="a", max_qps=50.0), Egress(name="b", max_qps=50.0)
    creds = [cred("ka", egress="a"), cred("kb", egress="b")]
    pool = CredentialPool(creds, PoolPolicy(egress_pause_s=5.0), clock=clock, egresses=[a, b])
    blamed = []
    for _ in range(3):
        lease = pool.try_acquire()
        while lease is not None and lease.credential.egress != "a":
            pool.on_success(lease)  # b works
            lease = pool.try_acquire()
        assert lease is not None
        pool.on_done(lease)
        blamed.append(pool.on_egress_unreachable(lease))
        clock.advance(0.5)
    assert blamed == [True, True, True]
    assert {k for _, k in drain(pool, clock, 4.0)} == {"kb"}  # a is paused, b carries on
    assert float(pool.egress_snapshot()[0]["paused_for_s"]) > 0  # type: ignore[arg-type]
    clock.advance(2.0)
    assert "ka" in {k for _, k in drain(pool, clock, 1.0)}  # the pause ends


def test_when_every_egress_fails_the_upstream_is_blamed() -> None:
    clock = FakeClock(1000.0)
    a, b = Egress(name="a", max_qps=50.0), Egress(name="b", max_qps=50.0)
    pool = CredentialPool(
        [cred("ka", egress="a"), cred("kb", egress="b")], clock=clock, egresses=[a, b]
    )
    first, second = pool.try_acquire(), pool.try_acquire()
    assert first is not None
    assert second is not None
    assert {first.credential.egress, second.credential.egress} == {"a", "b"}
    pool.on_done(first)
    assert pool.on_egress_unreachable(first)  # the other had no failure yet
    pool.on_done(second)
    assert not pool.on_egress_unreachable(second)  # both fail: the upstream's fault
    assert all(row["paused_for_s"] == 0 for row in pool.egress_snapshot())


def test_a_credential_naming_an_unknown_egress_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown egress"):
        CredentialPool(
            [cred("k1", egress="nope")], clock=FakeClock(1000.0), egresses=[Egress(name="a")]
        )


def test_cost_today_is_the_days_calls_at_the_price() -> None:
    clock = FakeClock(1000.0)
    pool = CredentialPool([cred("k1", cost_per_call=Decimal("0.002"))], clock=clock)
    for _ in range(3):
        lease = pool.try_acquire()
        assert lease is not None
        pool.on_success(lease)
        clock.advance(1.0)
    (row,) = pool.snapshot()
    assert row["cost_today"] == "0.006"  # exact: Decimal, never float
    assert row["cost"] == "0.006"


async def test_an_urgent_caller_asks_again_instead_of_waiting_out_a_bulk_answer() -> None:
    """Told to wait while only bulk was queued, the pool asks again (and so claims the slot
    in Redis) as soon as interactive work arrives, instead of sleeping the wait out."""
    clock = FakeClock(1000.0)
    shared = UrgentFirstShared("rate")
    pool = CredentialPool([cred("k1")], PoolPolicy(safety_factor=1.0), clock=clock, shared=shared)
    urgency = iter([False, True])
    lease = await asyncio.wait_for(pool.acquire(urgent=lambda: next(urgency, True)), 1.0)
    assert shared.asked == [False, True]
    assert lease.asked_at == clock.now


def test_a_given_back_lease_does_not_undo_later_grants() -> None:
    clock = FakeClock(1000.0)
    pool = CredentialPool([cred("k1", qps=10.0)], PoolPolicy(safety_factor=1.0), clock=clock)
    first = pool.try_acquire()
    assert first is not None
    clock.advance(0.3)
    second = pool.try_acquire()
    assert second is not None
    pool.release_unused(first)  # given back after the second grant: the schedule stays
    assert pool.try_acquire() is None  # the next slot is still 0.1 s after the second
    clock.advance(0.11)
    assert pool.try_acquire() is not None


def test_total_rate_counts_an_egress_cap() -> None:
    clock = FakeClock(1000.0)
    egress = Egress(name="e", max_qps=20.0)
    creds = [cred(f"k{i}", egress="e") for i in range(6)]  # 6 x 9 = 54/s of keys
    pool = CredentialPool(creds, PoolPolicy(safety_factor=0.9), clock=clock, egresses=[egress])
    assert pool.total_rate() == pytest.approx(20.0)


def test_stats_are_frozen_values_behind_the_snapshot_rows() -> None:
    clock = FakeClock(1000.0)
    egress = Egress(name="e", max_qps=20.0, proxy="http://user:pw@proxy.example:8080")
    pool = CredentialPool(
        [cred("k1", egress="e", cost_per_call=Decimal("0.01"))], clock=clock, egresses=[egress]
    )
    lease = pool.try_acquire()
    assert lease is not None
    pool.on_rate_limited(lease, retry_after=2.0)
    stats = pool.stats()
    (key,) = stats.credentials
    assert key.status is CredentialStatus.BANNED
    assert (key.calls, key.rate_limited, key.cost) == (1, 1, Decimal("0.01"))
    assert key.banned_for_s == pytest.approx(2.0)
    field = "calls"
    with pytest.raises(AttributeError):  # frozen
        setattr(key, field, 2)
    assert [key.as_row()] == pool.snapshot()
    assert [e.as_row() for e in stats.egresses] == pool.egress_snapshot()
    assert "pw" not in str(stats)
