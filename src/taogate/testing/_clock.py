"""A clock that moves only when the test moves it, for limiter, breaker, window and TTL tests.

Every timer in taogate reads an injected clock (a ``Callable[[], float]``); a test hands it a
``FakeClock`` and calls ``advance`` instead of sleeping, so it runs in no time and cannot flake
on a busy machine. A second instance serves as a fake wall clock.
"""

from __future__ import annotations

import math
from collections.abc import Callable

__all__ = ["FakeClock"]


def _zero() -> float:
    return 0.0


class FakeClock:
    """A monotonic fake clock: ``clock()`` is ``start`` plus what ``advance`` has added.

    For limiter, breaker, window and TTL tests: move it with ``advance``, never ``sleep``.
    With ``base`` (another monotonic clock, such as ``asyncio.get_running_loop().time``) it
    reads ``base()`` plus that offset: a component's own timers (``call_at``, ``wait_for``)
    keep running on the real loop while the ages and deadlines it reads jump forward.
    """

    __slots__ = ("_base", "_offset")

    def __init__(self, start: float = 0.0, *, base: Callable[[], float] | None = None) -> None:
        if not math.isfinite(start):
            raise ValueError(f"a fake clock starts at a finite time, not {start!r}")
        self._offset = float(start)
        self._base = _zero if base is None else base

    def __call__(self) -> float:
        return self._base() + self._offset

    @property
    def now(self) -> float:
        """The time now (the same as calling the clock)."""
        return self()

    def advance(self, seconds: float) -> None:
        """Move the clock ``seconds`` forward; it never moves back."""
        if not (math.isfinite(seconds) and seconds >= 0):
            raise ValueError(f"a fake clock moves forward only, by a finite time: {seconds!r}")
        self._offset += seconds

    def __repr__(self) -> str:
        if self._base is _zero:
            return f"FakeClock(now={self._offset!r})"
        return f"FakeClock(offset={self._offset!r}, base={self._base!r})"
