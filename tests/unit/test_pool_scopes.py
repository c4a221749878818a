"""The pool on a fake clock against every limit the platform enforces (docs/limits.md): an
account over several keys, the API method over every key, a key × method pair, a key's day, and
an egress the key's IP whitelist refuses."""

from __future__ import annotations

import math
from collections import deque

import pytest

from taogate import Account, Credential, Egress
from taogate.quota import CredentialPool, CredentialStatus, PoolPolicy
from taogate.quota.pool import Lease
from taogate.testing import FakeClock

METHOD = "taobao.tbk.item.info.get"
#: 2024-01-01 15:22:18 in Beijing: 31062 s to midnight (the ban seen in the wild)
WALL = 1704093738.0


def cred(key: str, qps: float = 10.0, **kw: object) -> Credential:
    return Credential(app_key=key, secret=f"s-{key}", qps=qps, **kw)  # type: ignore[arg-type]


def account_pool(clock: FakeClock, *, keys: int = 3, account_qps: float = 4.0) -> CredentialPool:
    return CredentialPool(
        [cred(f"k{i}", account="main") for i in range(keys)],
        PoolPolicy(safety_factor=1.0),
        clock=clock,
        accounts=[Account(name="main", qps=account_qps)],
        method=METHOD,
    )


def grants_over(pool: CredentialPool, clock: FakeClock, seconds: float) -> list[Lease]:
    """Every lease granted while the clock steps 1 ms at a time, answered at once."""
    leases = []
    end = clock.now + seconds
    while clock.now < end:
        lease = pool.try_acquire()
        if lease is None:
            clock.advance(0.001)
            continue
        leases.append(lease)
        pool.on_success(lease)
    return leases


def most_in_one_second(times: list[float]) -> int:
    window: deque[float] = deque()
    most = 0
    for t in sorted(times):
        window.append(t)
        while window[0] <= t - 1.0:
            window.popleft()
        most = max(most, len(window))
    return most


# --- account ------------------------------------------------------------------------------


def test_keys_of_one_account_together_stay_under_its_qps() -> None:
    clock = FakeClock(1000.0)
    pool = account_pool(clock)  # 3 keys of 10 qps under an account of 4
    leases = grants_over(pool, clock, 10.0)
    assert most_in_one_second([lease.granted_at for lease in leases]) <= 4
    assert len(leases) >= 4 * 9  # and the account is used, not starved
    assert len({lease.credential.app_key for lease in leases}) == 3  # spread over its keys
    assert pool.total_rate() == pytest.approx(4.0)


def test_an_account_answer_pauses_the_account_and_cuts_its_rate_not_the_keys() -> None:
    clock = FakeClock(1000.0)
    pool = account_pool(clock)
    lease = pool.try_acquire()
    assert lease is not None
    pool.on_rate_limited(lease, 1.0, "account")
    # every key of the account waits the second out
    assert pool.try_acquire() is None
    _, at = pool.next_ready()
    assert at == pytest.approx(1001.0)
    (account, _method) = pool.stats().scopes
    assert account.kind == "account"
    assert account.name == "main"
    assert account.limited == 1
    assert account.rate == pytest.approx(2.0)  # halved (AIMD)
    for row in pool.stats().credentials:
        assert row.rate == pytest.approx(10.0)  # no key is blamed
        assert row.rate_limited == 0
        assert row.status is CredentialStatus.ACTIVE


def test_a_credential_naming_an_unknown_account_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown account"):
        CredentialPool([cred("k1", account="nope")], clock=FakeClock(0.0))


# --- the API method over every key ---------------------------------------------------------


def test_a_method_ban_pauses_every_key_and_cuts_no_rate() -> None:
    clock = FakeClock(1000.0)
    pool = CredentialPool(
        [cred("k1"), cred("k2")], PoolPolicy(safety_factor=1.0), clock=clock, method=METHOD
    )
    lease = pool.try_acquire()
    assert lease is not None
    pool.on_rate_limited(lease, 3.0, "api")
    assert pool.try_acquire() is None  # not the other key either
    _, at = pool.next_ready()
    assert at == pytest.approx(1003.0)
    stats = pool.stats()
    assert [(s.kind, s.name, s.limited) for s in stats.scopes] == [("method", METHOD, 1)]
    for row in stats.credentials:
        assert row.rate == pytest.approx(10.0)
        assert row.rate_limited == 0  # not counted against the key
        assert row.banned_for_s == 0.0
    clock.advance(3.0)
    assert pool.try_acquire() is not None


def test_a_method_cap_paces_every_key_together() -> None:
    clock = FakeClock(1000.0)
    pool = CredentialPool(
        [cred("k1"), cred("k2"), cred("k3")],
        PoolPolicy(safety_factor=1.0),
        clock=clock,
        method=METHOD,
        method_qps=5.0,
    )
    leases = grants_over(pool, clock, 5.0)
    assert most_in_one_second([lease.granted_at for lease in leases]) <= 5


# --- key × method ---------------------------------------------------------------------------


def test_a_pair_ban_pauses_that_key_only_and_backs_off() -> None:
    clock = FakeClock(1000.0)
    pool = CredentialPool(
        [cred("k1"), cred("k2")], PoolPolicy(safety_factor=1.0), clock=clock, method=METHOD
    )
    lease = pool.try_acquire()
    assert lease is not None
    banned = lease.credential.app_key
    pool.on_rate_limited(lease, 2.0, "app_api")
    other = pool.try_acquire()
    assert other is not None
    assert other.credential.app_key != banned
    pool.on_success(other)
    row = next(r for r in pool.stats().credentials if r.credential == lease.credential.masked)
    assert row.method_limited == 1
    assert row.rate_limited == 0
    assert row.rate == pytest.approx(10.0)
    # the next ban right after the pause: twice as long
    clock.advance(2.0)
    again = pool.try_acquire()
    while again is not None and again.credential.app_key != banned:
        pool.on_success(again)
        clock.advance(0.1)
        again = pool.try_acquire()
    assert again is not None
    pool.on_rate_limited(again, 2.0, "app_api")
    assert pool._state(again.credential).pair.paused_until == pytest.approx(clock.now + 4.0)
    # a ban long after: back to the platform's seconds
    clock.advance(600.0)
    third = pool.try_acquire()
    while third is not None and third.credential.app_key != banned:
        pool.on_success(third)
        third = pool.try_acquire()
    assert third is not None
    pool.on_rate_limited(third, 2.0, "app_api")
    assert pool._state(third.credential).pair.paused_until == pytest.approx(clock.now + 2.0)


# --- a key's day --------------------------------------------------------------------------


def test_a_ban_until_midnight_marks_the_day_spent_until_it_turns() -> None:
    clock = FakeClock(1000.0)
    wall = FakeClock(WALL)
    pool = CredentialPool([cred("k1"), cred("k2")], clock=clock, wall_clock=wall)
    lease = pool.try_acquire()
    assert lease is not None
    pool.on_rate_limited(lease, 31062.0, "app")
    state = pool.status(lease.credential)
    assert state is CredentialStatus.EXHAUSTED
    row = next(r for r in pool.stats().credentials if r.credential == lease.credential.masked)
    assert row.exhausted_for_s == pytest.approx(31062.0)
    assert row.rate == pytest.approx(8.0)  # a spent day is not a rate exceeded: no cut
    assert pool.snapshot()[0 if lease.credential.app_key == "k1" else 1]["status"] == "exhausted"
    # the day turns in Beijing: the key is back
    wall.advance(31063.0)
    clock.advance(31063.0)
    assert pool.status(lease.credential) is CredentialStatus.ACTIVE


def test_a_short_ban_is_a_ban_not_a_spent_day() -> None:
    clock = FakeClock(1000.0)
    pool = CredentialPool([cred("k1")], clock=clock, wall_clock=FakeClock(WALL))
    lease = pool.try_acquire()
    assert lease is not None
    pool.on_rate_limited(lease, 10.0, "app")
    assert pool.status(lease.credential) is CredentialStatus.BANNED
    assert pool.rate(lease.credential) == pytest.approx(4.0)  # halved


def test_calls_today_start_again_at_midnight_without_a_budget() -> None:
    clock = FakeClock(1000.0)
    wall = FakeClock(1704124700.0)  # 23:58:20 in Beijing
    pool = CredentialPool([cred("k1")], clock=clock, wall_clock=wall)
    lease = pool.try_acquire()
    assert lease is not None
    pool.on_success(lease)
    assert pool.stats().credentials[0].calls_today == 1
    wall.advance(200.0)
    assert pool.stats().credentials[0].calls_today == 0


# --- IP whitelist -------------------------------------------------------------------------


def whitelist_pool(clock: FakeClock, egresses: int = 2) -> CredentialPool:
    names = [chr(ord("a") + i) for i in range(egresses)]
    return CredentialPool(
        [cred("k1", egress="a")],
        PoolPolicy(safety_factor=1.0),
        clock=clock,
        egresses=[Egress(name=n, max_qps=80.0) for n in names],
    )


def test_a_refused_egress_moves_the_key_to_another_and_never_quarantines_it() -> None:
    clock = FakeClock(1000.0)
    pool = whitelist_pool(clock)
    lease = pool.try_acquire()
    assert lease is not None
    assert pool.try_acquire() is None  # the key's first call through "a" goes alone
    assert pool.on_ip_refused(lease) == "b"
    clock.advance(0.2)
    moved = pool.try_acquire()
    assert moved is not None
    assert moved.state.egress.egress.name == "b"
    row = pool.stats().credentials[0]
    assert row.status is CredentialStatus.ACTIVE
    assert row.egress == "b"
    assert row.ip_refused == 1
    assert row.refused_egresses == ("a",)
    assert row.invalid == 0
    pool.on_success(moved)  # proven on "b": calls no longer go one at a time
    clock.advance(0.2)
    first = pool.try_acquire()
    clock.advance(0.2)
    second = pool.try_acquire()
    assert first is not None
    assert second is not None


def test_calls_in_flight_through_a_refused_egress_do_not_move_the_key_again() -> None:
    clock = FakeClock(1000.0)
    pool = CredentialPool(
        [cred("k1", egress="a")],
        PoolPolicy(safety_factor=1.0, prove_egress=False),
        clock=clock,
        egresses=[Egress(name=n, max_qps=80.0) for n in "abc"],
    )
    first = pool.try_acquire()
    clock.advance(0.2)
    second = pool.try_acquire()
    assert first is not None
    assert second is not None
    assert pool.on_ip_refused(first) == "b"
    assert pool.on_ip_refused(second) == "b"  # it was sent through "a" too
    assert pool.stats().credentials[0].refused_egresses == ("a",)


def test_with_no_egress_left_the_pair_pauses_and_is_tried_again_later() -> None:
    clock = FakeClock(1000.0)
    pool = whitelist_pool(clock, egresses=1)
    lease = pool.try_acquire()
    assert lease is not None
    assert pool.on_ip_refused(lease) is None
    assert pool.status(lease.credential) is CredentialStatus.NOT_WHITELISTED
    assert pool.try_acquire() is None
    credential, at = pool.next_ready()
    assert credential is not None
    assert at == pytest.approx(1060.0)
    clock.advance(60.0)
    again = pool.try_acquire()
    assert again is not None  # tried again: the whitelist may have been fixed
    assert pool.on_ip_refused(again) is None
    _, at = pool.next_ready()
    assert at == pytest.approx(clock.now + 120.0)  # doubling
    assert pool.total_rate() == 0.0
    assert not math.isnan(pool.total_rate())


# --- what a review found ----------------------------------------------------------------


def test_a_pair_ban_longer_than_the_back_off_cap_is_kept_whole() -> None:
    clock = FakeClock(1000.0)
    pool = CredentialPool([cred("k1")], clock=clock, method=METHOD)
    lease = pool.try_acquire()
    assert lease is not None
    pool.on_rate_limited(lease, 3600.0, "app_api")  # an app not yet launched: an hour
    assert pool._state(lease.credential).pair.paused_until == pytest.approx(clock.now + 3600.0)


def test_a_short_pause_of_an_account_or_the_method_is_not_a_lost_rate() -> None:
    clock = FakeClock(1000.0)
    pool = account_pool(clock)
    lease = pool.try_acquire()
    assert lease is not None
    pool.on_rate_limited(lease, 1.0, "account")
    assert pool.total_rate() == pytest.approx(2.0)  # halved, not 0 for the pause's second
    other = pool.try_acquire()
    assert other is None
    clock.advance(1.0)
    again = pool.try_acquire()
    assert again is not None
    pool.on_rate_limited(again, 3.0, "api")
    assert pool.total_rate() > 0


def test_a_trial_call_holds_the_key_back_at_most_a_second() -> None:
    clock = FakeClock(1000.0)
    pool = whitelist_pool(clock)
    trial = pool.try_acquire()
    assert trial is not None
    clock.advance(0.5)
    assert pool.try_acquire() is None  # its answer has not come
    clock.advance(0.5)
    assert pool.try_acquire() is not None  # a second after its grant: the next one goes


def test_a_trial_that_found_no_connection_proves_nothing() -> None:
    clock = FakeClock(1000.0)
    pool = whitelist_pool(clock)
    trial = pool.try_acquire()
    assert trial is not None
    pool.on_done(trial)
    pool.on_egress_unreachable(trial)
    state = pool._state(trial.credential)
    assert not state.proven
    assert state.trial_at is None


def test_outcomes_of_calls_through_the_old_egress_count_for_it_after_a_move() -> None:
    clock = FakeClock(1000.0)
    pool = CredentialPool(
        [cred("k1", egress="a")],
        PoolPolicy(safety_factor=1.0, prove_egress=False),
        clock=clock,
        egresses=[Egress(name=n, max_qps=80.0) for n in "abc"],
    )
    first = pool.try_acquire()
    clock.advance(0.2)
    second = pool.try_acquire()
    assert first is not None
    assert second is not None
    assert pool.on_ip_refused(first) == "b"
    pool.on_done(second)
    pool.on_egress_unreachable(second)  # it went through "a"
    egresses = {e.egress: e for e in pool.stats().egresses}
    assert egresses["a"].unreachable == 1
    assert egresses["b"].unreachable == 0
    assert pool.egress_name(second) == "a"


def test_an_egress_paused_as_unreachable_is_still_one_to_move_to() -> None:
    clock = FakeClock(1000.0)
    pool = whitelist_pool(clock)
    pool._egresses["b"].scope.pause(clock.now + 5.0)  # unreachable a moment ago
    lease = pool.try_acquire()
    assert lease is not None
    assert pool.on_ip_refused(lease) == "b"
    assert pool.status(lease.credential) is CredentialStatus.ACTIVE


def test_a_refusal_only_this_replica_knows_is_not_claimed_in_the_shared_limiter() -> None:
    clock = FakeClock(1000.0)
    pool = whitelist_pool(clock, egresses=1)
    lease = pool.try_acquire()
    assert lease is not None
    pool.on_ip_refused(lease)
    assert pool._state(lease.credential).waits_on_its_own(clock.now)


def test_a_short_ban_just_before_midnight_is_not_a_spent_day() -> None:
    clock = FakeClock(1000.0)
    wall = FakeClock(1704124799.0)  # 23:59:59 in Beijing
    pool = CredentialPool([cred("k1")], clock=clock, wall_clock=wall)
    lease = pool.try_acquire()
    assert lease is not None
    pool.on_rate_limited(lease, 1.0, "app")
    assert pool.status(lease.credential) is CredentialStatus.BANNED


def test_a_spent_budget_tells_when_the_day_turns() -> None:
    clock = FakeClock(1000.0)
    pool = CredentialPool([cred("k1", daily_budget=1)], clock=clock, wall_clock=FakeClock(WALL))
    lease = pool.try_acquire()
    assert lease is not None
    pool.on_success(lease)
    row = pool.stats().credentials[0]
    assert row.status is CredentialStatus.EXHAUSTED
    assert row.exhausted_for_s == pytest.approx(31062.0)
