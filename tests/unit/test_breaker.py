"""Breaker, retry budget and back-off on a fake clock (no sleeps)."""

from __future__ import annotations

import random

import pytest

from taogate._breaker import BreakerPolicy, BreakerState, CircuitBreaker, RetryBudget, backoff
from taogate.testing import FakeClock

POLICY = BreakerPolicy(
    window=10,
    min_calls=4,
    failure_ratio=0.5,
    slow_call_s=1.0,
    slow_ratio=0.75,
    open_s=5.0,
    half_open_probes=2,
)


def state(breaker: CircuitBreaker) -> BreakerState:
    """The state, read through a call so the type checker does not narrow it across steps."""
    return breaker.state


def make() -> tuple[CircuitBreaker, FakeClock]:
    clock = FakeClock(1000.0)
    return CircuitBreaker(POLICY, clock=clock), clock


def test_stays_closed_below_min_calls() -> None:
    breaker, _ = make()
    for _ in range(3):
        assert breaker.allow()
        breaker.record(failed=True, duration_s=0.1)
    assert state(breaker) is BreakerState.CLOSED


def test_opens_on_failure_ratio_and_refuses() -> None:
    breaker, clock = make()
    for failed in (False, True, False, True):
        breaker.record(failed=failed, duration_s=0.1)
    assert state(breaker) is BreakerState.OPEN
    assert not breaker.allow()
    assert breaker.retry_after() == pytest.approx(5.0)
    clock.advance(2)
    assert breaker.retry_after() == pytest.approx(3.0)
    assert breaker.opened_count == 1


def test_opens_on_slow_call_ratio() -> None:
    breaker, _ = make()
    for duration in (1.5, 1.2, 0.1, 3.0):
        breaker.record(failed=False, duration_s=duration)
    assert state(breaker) is BreakerState.OPEN


def test_window_forgets_old_outcomes() -> None:
    breaker, _ = make()

    def feed(pattern: str) -> None:
        for c in pattern:
            breaker.record(failed=c == "F", duration_s=0.1)

    feed("SSSSSSFFFF")  # 4 of 10 failed: closed
    feed("SSSSSSSSSS")  # the failures have left the window
    feed("FFFF")  # 4 of 10 again, not 8
    assert state(breaker) is BreakerState.CLOSED
    feed("F")  # 5 of 10
    assert state(breaker) is BreakerState.OPEN


def test_half_open_probes_close_it() -> None:
    breaker, clock = make()
    for _ in range(4):
        breaker.record(failed=True, duration_s=0.1)
    clock.advance(5.0)
    assert state(breaker) is BreakerState.HALF_OPEN
    assert breaker.allow()
    assert breaker.allow()
    assert not breaker.allow()  # only two probes
    breaker.record(failed=False, duration_s=0.1)
    assert state(breaker) is BreakerState.HALF_OPEN
    breaker.record(failed=False, duration_s=0.1)
    assert state(breaker) is BreakerState.CLOSED
    assert breaker.allow()


def test_half_open_failure_opens_again() -> None:
    breaker, clock = make()
    for _ in range(4):
        breaker.record(failed=True, duration_s=0.1)
    clock.advance(5.0)
    assert breaker.allow()
    breaker.record(failed=True, duration_s=0.1)
    assert state(breaker) is BreakerState.OPEN
    assert breaker.opened_count == 2


def test_released_probe_frees_its_place() -> None:
    breaker, clock = make()
    for _ in range(4):
        breaker.record(failed=True, duration_s=0.1)
    clock.advance(5.0)
    assert breaker.allow()
    assert breaker.allow()
    breaker.release()
    assert breaker.allow()


def test_policy_validation() -> None:
    with pytest.raises(ValueError, match="min_calls"):
        BreakerPolicy(window=5, min_calls=6)
    with pytest.raises(ValueError, match="ratios"):
        BreakerPolicy(failure_ratio=0)
    with pytest.raises(ValueError, match="open_s"):
        BreakerPolicy(open_s=0)


def test_retry_budget_is_a_share_of_calls_plus_a_floor() -> None:
    clock = FakeClock(1000.0)
    budget = RetryBudget(ratio=0.1, min_per_s=0.5, ttl_s=10.0, clock=clock)
    # floor alone: 0.5/s over 10 s = 5 retries
    assert sum(budget.try_withdraw() for _ in range(20)) == 5
    for _ in range(100):
        budget.deposit()
    # 100 calls add 10 more
    assert sum(budget.try_withdraw() for _ in range(50)) == 10


def test_retry_budget_forgets_after_ttl() -> None:
    clock = FakeClock(1000.0)
    budget = RetryBudget(ratio=0.0, min_per_s=0.2, ttl_s=10.0, clock=clock)
    assert sum(budget.try_withdraw() for _ in range(10)) == 2
    clock.advance(10.0)
    assert sum(budget.try_withdraw() for _ in range(10)) == 2


def test_backoff_is_jittered_and_capped() -> None:
    rng = random.Random(1)
    values = [backoff(n, base_s=0.1, cap_s=1.0, rng=rng) for n in range(1, 8)]
    assert all(0 <= v <= 1.0 for v in values)
    assert backoff(1, base_s=0.1, rng=rng) <= 0.1
    assert max(backoff(10, base_s=0.1, cap_s=1.0, rng=rng) for _ in range(100)) > 0.5


def test_permits_tells_without_taking() -> None:
    breaker, clock = make()
    assert breaker.permits()
    for _ in range(4):
        breaker.record(failed=True, duration_s=0.1)
    assert not breaker.permits()
    clock.advance(5.0)
    assert breaker.permits()
    assert breaker.permits()  # asking twice takes nothing
    assert breaker.allow()
    assert breaker.allow()
    assert not breaker.permits()
