"""GCRA (the generic cell rate algorithm): an exact rate limit in one number of state.

The state is the theoretical arrival time ``tat``: when the next call would be due if calls came
exactly at the rate. A call at ``now`` is allowed when ``tat - now <= tolerance``; it then moves
``tat`` one emission interval on. With ``burst = 1`` the tolerance is zero and allowed calls are
at least one interval apart, so no window of one second (half-open) holds more than ``rate``.
The functions are pure, so the memory and Redis backends and the tests share one definition.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Gcra", "GcraDecision"]


@dataclass(frozen=True, slots=True)
class GcraDecision:
    """The outcome of one check: ``allowed``, the new ``tat``, and the wait before it would be."""

    allowed: bool
    tat: float
    retry_after: float


@dataclass(frozen=True, slots=True)
class Gcra:
    """A limit of ``rate`` calls per second with bursts of up to ``burst`` calls."""

    rate: float
    burst: int = 1

    def __post_init__(self) -> None:
        if not self.rate > 0:
            raise ValueError("rate must be positive")
        if self.burst < 1:
            raise ValueError("burst must be at least 1")

    @property
    def interval(self) -> float:
        """Seconds between calls at the steady rate (the emission interval).

        A hair longer than ``1 / rate`` so that float rounding in a long run of intervals can
        never fit one call too many into a window.
        """
        return (1.0 / self.rate) * (1.0 + 1e-9)

    @property
    def tolerance(self) -> float:
        """How far ahead of ``now`` the ``tat`` may run: ``(burst - 1)`` intervals."""
        return (self.burst - 1) * self.interval

    def check(self, tat: float, now: float, cost: int = 1) -> GcraDecision:
        """Whether ``cost`` calls may go at ``now`` given ``tat``; nothing is mutated."""
        start = max(tat, now)
        # How far past ``now`` the last of the ``cost`` calls would be due; zero exactly when the
        # limit is idle. A cost above the burst never fits.
        ahead = (start - now) + (cost - 1) * self.interval
        if ahead <= self.tolerance:
            return GcraDecision(True, start + cost * self.interval, 0.0)
        # waking after retry_after is never early: a nanosecond of margin for float rounding
        return GcraDecision(False, tat, ahead - self.tolerance + 1e-9)

    def ready_at(self, tat: float, now: float) -> float:
        """The earliest time at or after ``now`` when one call would be allowed."""
        return max(now, tat - self.tolerance)
