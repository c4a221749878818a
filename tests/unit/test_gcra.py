"""GCRA on a fake clock: exact spacing, bursts, and the one-second window property."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from taogate.quota.gcra import Gcra


def test_calls_are_spaced_by_the_interval() -> None:
    gcra = Gcra(rate=10)
    d1 = gcra.check(0.0, now=100.0)
    assert d1.allowed
    d2 = gcra.check(d1.tat, now=100.0)
    assert not d2.allowed
    assert d2.retry_after == pytest.approx(0.1)
    d3 = gcra.check(d1.tat, now=100.1 + 1e-6)
    assert d3.allowed


def test_burst_allows_that_many_at_once_then_the_rate() -> None:
    gcra = Gcra(rate=10, burst=3)
    tat = 0.0
    for _ in range(3):
        d = gcra.check(tat, now=5.0)
        assert d.allowed
        tat = d.tat
    refused = gcra.check(tat, now=5.0)
    assert not refused.allowed
    assert refused.retry_after == pytest.approx(0.1)
    assert gcra.check(tat, now=5.1 + 1e-6).allowed


def test_cost_above_the_burst_is_never_allowed() -> None:
    assert not Gcra(rate=10, burst=2).check(0.0, now=50.0, cost=3).allowed
    assert Gcra(rate=10, burst=2).check(0.0, now=50.0, cost=2).allowed


def test_idle_time_does_not_bank_more_than_the_burst() -> None:
    gcra = Gcra(rate=1, burst=2)
    tat = gcra.check(0.0, now=0.0).tat
    allowed = 0
    for _ in range(5):
        d = gcra.check(tat, now=1000.0)
        if d.allowed:
            allowed += 1
            tat = d.tat
    assert allowed == 2


def test_ready_at() -> None:
    gcra = Gcra(rate=4, burst=1)
    assert gcra.ready_at(10.0, now=9.0) == 10.0
    assert gcra.ready_at(10.0, now=11.0) == 11.0


@pytest.mark.parametrize(("rate", "burst"), [(0, 1), (-1, 1), (1, 0)])
def test_invalid(rate: float, burst: int) -> None:
    with pytest.raises(ValueError, match="must be"):
        Gcra(rate=rate, burst=burst)


def max_in_window(times: list[float], width: float = 1.0) -> int:
    """The most times in any half-open window [t, t + width)."""
    best = 0
    j = 0
    for i, t in enumerate(times):
        while times[j] <= t - width:
            j += 1
        best = max(best, i - j + 1)
    return best


@settings(max_examples=300, deadline=None)
@given(
    rate=st.sampled_from([1.0, 2.5, 8.0, 9.0, 10.0, 27.0]),
    gaps=st.lists(st.floats(min_value=0.0, max_value=0.5), min_size=1, max_size=200),
)
def test_no_one_second_window_holds_more_than_rate(rate: float, gaps: list[float]) -> None:
    """For any arrival pattern, the calls GCRA lets through (burst 1) fit the rate."""
    gcra = Gcra(rate=rate)
    now = 0.0
    tat = 0.0
    sent: list[float] = []
    for gap in gaps:
        now += gap
        decision = gcra.check(tat, now)
        if decision.allowed:
            tat = decision.tat
            sent.append(now)
        else:
            # a caller that waits exactly as told is allowed then
            later = now + decision.retry_after
            if decision.retry_after > 1e-6:  # the wait told is not longer than needed
                assert not gcra.check(tat, later - 1e-6).allowed
            again = gcra.check(tat, later)
            assert again.allowed
            tat = again.tat
            sent.append(later)
            now = later
    assert max_in_window(sent) <= math.ceil(rate)
