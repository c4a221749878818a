"""taogate.testing.FakeClock: moves only forward, only when told, optionally over another clock."""

from __future__ import annotations

import asyncio
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from taogate.testing import FakeClock


def test_starts_where_asked_and_moves_only_when_told() -> None:
    assert FakeClock()() == 0.0
    clock = FakeClock(1000.0)
    assert clock() == clock.now == 1000.0
    assert isinstance(clock(), float)
    assert clock() == 1000.0  # reading it does not move it
    clock.advance(2.5)
    assert clock() == clock.now == 1002.5
    clock.advance(0)
    assert clock() == 1002.5


@pytest.mark.parametrize("seconds", [-0.001, -1.0, math.nan, math.inf, -math.inf])
def test_it_never_moves_back_nor_to_infinity(seconds: float) -> None:
    clock = FakeClock(10.0)
    with pytest.raises(ValueError, match="forward only"):
        clock.advance(seconds)
    assert clock() == 10.0


@pytest.mark.parametrize("start", [math.nan, math.inf, -math.inf])
def test_it_starts_at_a_finite_time(start: float) -> None:
    with pytest.raises(ValueError, match="finite"):
        FakeClock(start)


@given(st.floats(-1e9, 1e9), st.lists(st.floats(0, 1e6), max_size=50))
def test_readings_never_decrease(start: float, steps: list[float]) -> None:
    clock = FakeClock(start)
    readings = [clock()]
    for step in steps:
        clock.advance(step)
        readings.append(clock())
    assert readings == sorted(readings)
    assert readings[-1] == pytest.approx(start + math.fsum(steps), abs=1e-3)


def test_over_a_base_it_adds_its_offset_to_the_base() -> None:
    mono = FakeClock(1000.0)
    wall = FakeClock(1_700_000_000.0 - 1000.0, base=mono)  # a wall clock that moves with mono
    assert wall() == 1_700_000_000.0
    mono.advance(30.0)
    assert wall() == 1_700_000_030.0
    wall.advance(5.0)  # the wall clock alone jumps (an NTP step)
    assert (mono(), wall()) == (1030.0, 1_700_000_035.0)


async def test_over_the_loop_it_is_the_loop_time_plus_what_was_advanced() -> None:
    loop = asyncio.get_running_loop()
    clock = FakeClock(base=loop.time)
    before = loop.time()
    assert before <= clock() <= loop.time()
    clock.advance(3600.0)
    assert before + 3600.0 <= clock() <= loop.time() + 3600.0


def test_repr_shows_the_time() -> None:
    assert repr(FakeClock(12.5)) == "FakeClock(now=12.5)"
    assert repr(FakeClock(1.0, base=FakeClock(2.0))) == (
        "FakeClock(offset=1.0, base=FakeClock(now=2.0))"
    )
