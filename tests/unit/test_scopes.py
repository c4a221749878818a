"""Limit scopes on a fake clock: a call waits for the slowest of its scopes."""

from __future__ import annotations

import pytest

from taogate import Credential
from taogate.providers.base import Egress
from taogate.quota import CredentialPool, PoolPolicy
from taogate.quota.budget import DayBudget
from taogate.quota.health import Aimd, Quarantine
from taogate.quota.scopes import Scope
from taogate.testing import FakeClock


def ready_at(scopes: tuple[Scope, ...], now: float, share: float = 1.0) -> float:
    return max(scope.ready_at(now, share) for scope in scopes)


def take(scopes: tuple[Scope, ...], now: float, share: float = 1.0) -> None:
    for scope in scopes:
        scope.take(now, share)


def test_a_call_consuming_two_scopes_waits_for_the_slower_one() -> None:
    clock = FakeClock(1000.0)
    key = Scope(kind="key", name="key", id="key", qps=10.0)
    egress = Scope(kind="key", name="egress", id="egress", qps=2.0)
    take((key, egress), clock.now)
    assert key.ready_at(clock.now, 1.0) == pytest.approx(1000.1)
    assert ready_at((key, egress), clock.now) == pytest.approx(1000.5)  # the egress's pace
    clock.advance(0.5)
    assert ready_at((key, egress), clock.now) == pytest.approx(clock.now)


def test_the_pool_paces_a_key_by_its_egress_when_that_is_slower() -> None:
    clock = FakeClock(1000.0)
    egress = Egress(name="e", max_qps=1.0)
    pool = CredentialPool(
        [Credential(app_key="k1", secret="s-k1", qps=10.0, egress="e")],
        PoolPolicy(safety_factor=1.0, egress_window_guard_s=0.05),
        clock=clock,
        egresses=[egress],
    )
    assert pool.try_acquire() is not None
    _, at = pool.next_ready()
    assert at == pytest.approx(1001.05)  # the egress's window, not the key's 0.1 s


def test_a_paused_scope_delays_every_key_using_it() -> None:
    clock = FakeClock(1000.0)
    shared = Scope(kind="key", name="egress:a", id="egress:a", qps=50.0)
    other = Scope(kind="key", name="egress:b", id="egress:b", qps=50.0)
    calls = {
        "k1": (Scope(kind="key", name="k1", id="k1", qps=10.0), shared),
        "k2": (Scope(kind="key", name="k2", id="k2", qps=10.0), shared),
        "k3": (Scope(kind="key", name="k3", id="k3", qps=10.0), other),
    }
    shared.pause(clock.now + 3.0)
    assert ready_at(calls["k1"], clock.now) == pytest.approx(1003.0)
    assert ready_at(calls["k2"], clock.now) == pytest.approx(1003.0)
    assert ready_at(calls["k3"], clock.now) == clock.now
    shared.hold(clock.now + 5.0)  # what the shared limiter said holds it the same way
    assert ready_at(calls["k2"], clock.now) == pytest.approx(1005.0)


def test_the_window_holds_floor_qps_calls_per_second_plus_the_guard() -> None:
    clock = FakeClock(1000.0)
    scope = Scope(kind="key", name="key", id="key", qps=5.0, burst=5, guard_s=0.05)
    for _ in range(5):
        assert scope.ready_at(clock.now, 1.0) == pytest.approx(clock.now)  # the burst
        scope.take(clock.now, 1.0)
    assert scope.ready_at(clock.now, 1.0) == pytest.approx(1001.05)


def test_deciding_alone_a_scope_keeps_its_share_and_an_extra_guard() -> None:
    clock = FakeClock(1000.0)
    scope = Scope(kind="key", name="key", id="key", qps=10.0, guard_s=0.05, local_guard_s=0.1)
    assert scope.rate(clock.now, 0.5) == pytest.approx(5.0)
    for _ in range(5):
        clock.advance(scope.ready_at(clock.now, 0.5) - clock.now)
        scope.take(clock.now, 0.5)
    assert scope.window_limit(0.5) == 5
    # paced at 5/s the next slot is 1000.0 + 1.0; the window's guard holds it 0.15 s more
    assert scope.ready_at(clock.now, 0.5) == pytest.approx(1001.15)


def test_a_given_back_slot_returns_only_if_nothing_came_after() -> None:
    clock = FakeClock(1000.0)
    scope = Scope(kind="key", name="key", id="key", qps=10.0)
    first = scope.take(clock.now, 1.0)
    clock.advance(0.3)
    second = scope.take(clock.now, 1.0)
    scope.give_back(1000.0, first)  # the schedule stays after the second grant
    assert scope.ready_at(clock.now, 1.0) == pytest.approx(1000.4)
    scope.give_back(clock.now, second)
    assert scope.ready_at(clock.now, 1.0) == clock.now
    assert (scope.calls, scope.in_flight) == (0, 0)


def test_a_ban_pauses_the_scope_and_cuts_its_rate_once() -> None:
    clock = FakeClock(1000.0)
    aimd = Aimd(decrease=0.5, min_factor=0.25, recovery_per_s=0.1)
    scope = Scope(kind="key", name="key", id="key", qps=10.0, aimd=aimd)
    scope.ban(clock.now, granted_at=999.9, retry_after=2.0)
    assert scope.ready_at(clock.now, 1.0) == pytest.approx(1002.0)
    assert scope.rate(clock.now) == pytest.approx(5.0)
    scope.ban(clock.now + 0.1, granted_at=999.95, retry_after=2.0)  # sent before the ban
    assert scope.rate(clock.now) == pytest.approx(5.0)  # not cut again
    assert scope.paused_until == pytest.approx(1002.1)  # but the ban is extended
    clock.advance(3.0)
    assert scope.rate(clock.now) == pytest.approx(8.0)  # (0.5 + 0.1 x 3) of 10


def test_a_quarantine_doubles_its_wait_per_failed_probe() -> None:
    quarantine = Quarantine(probe_after_s=30.0, max_probe_after_s=100.0)
    quarantine.begin(1000.0)
    assert not quarantine.usable(1029.0)
    assert quarantine.usable(1030.0)
    quarantine.probing = True
    assert not quarantine.usable(1031.0)  # one probe at a time
    for wait in (60.0, 100.0, 100.0):
        quarantine.begin(2000.0)
        assert quarantine.probe_at == 2000.0 + wait
    quarantine.retry_now(2001.0)  # a new secret: probe at once
    assert quarantine.usable(2001.0)


def test_a_day_budget_starts_again_when_the_day_turns_in_beijing() -> None:
    wall = FakeClock(1704124700.0)  # 2024-01-01 23:58:20 in Beijing
    budget = DayBudget(4, wall)
    for _ in range(2):
        assert budget.left(0.5)
        budget.spend()
    assert not budget.left(0.5)  # deciding alone for half the quota: half the budget
    assert budget.left(1.0)
    wall.advance(200)
    assert budget.left(0.5)
    assert budget.calls == 0
