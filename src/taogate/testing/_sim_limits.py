"""The simulator's limit primitives: the exact peak of calls in any second, a one-second window
of accepted calls with the ban that going over it starts, and a quota per Beijing day.

Pure state driven by clock readings passed in (``now`` monotonic, ``wall`` POSIX time), so unit
tests move a fake clock and never sleep. A window is checked and entered in two steps, so that
a call one limit accepts and a later one refuses enters no window at all.
"""

from __future__ import annotations

import math
from collections import deque

from taogate._beijing import seconds_to_beijing_midnight

__all__ = ["DailyQuota", "PeakWindow", "RateWindow", "ban_seconds"]


def ban_seconds(remaining: float) -> int:
    """The whole seconds a ban message announces (rounded up, as the platform does)."""
    return math.ceil(remaining)


class PeakWindow:
    """The most events seen in any one-second window (t-1, t], exactly, with a deque."""

    __slots__ = ("peak", "times")

    def __init__(self) -> None:
        self.times: deque[float] = deque()
        self.peak = 0

    def add(self, now: float) -> None:
        times = self.times
        while times and times[0] <= now - 1.0:
            times.popleft()
        times.append(now)
        if len(times) > self.peak:
            self.peak = len(times)


class RateWindow:
    """The accepted calls of the last second against a calls-per-second limit, and a ban.

    A limit of ``qps`` admits ``floor(qps)`` calls in any window (t-1, t]; the call that would
    make one more is refused and starts a ban (``ban_s`` 0: the refusal alone).
    """

    __slots__ = ("banned_until", "times")

    def __init__(self) -> None:
        self.times: deque[float] = deque()
        self.banned_until = -math.inf

    def banned(self, now: float) -> bool:
        return now < self.banned_until

    def banned_for(self, now: float) -> float:
        return max(0.0, self.banned_until - now)

    def check(self, now: float, qps: float, ban_s: float) -> float | None:
        """``None`` if a call at ``now`` fits, else the ban's remaining seconds (a new ban of
        ``ban_s`` when the window is full). The call does not enter the window: :meth:`enter`."""
        if now < self.banned_until:
            return self.banned_until - now
        times = self.times
        while times and times[0] <= now - 1.0:
            times.popleft()
        if len(times) + 1 > qps:
            self.banned_until = now + ban_s
            return ban_s
        return None

    def enter(self, now: float) -> None:
        """Count an accepted call (one every limit let through) in the window."""
        self.times.append(now)


class DailyQuota:
    """Accepted calls per Beijing calendar day; once the day's quota is spent, a ban until
    midnight Beijing time, when the count starts again."""

    __slots__ = ("calls", "day_ends", "spent")

    def __init__(self) -> None:
        self.calls = 0
        self.day_ends = -math.inf  # wall time of the next midnight in Beijing
        self.spent = False

    def _roll(self, wall: float) -> None:
        if wall >= self.day_ends:
            self.calls = 0
            self.spent = False
            self.day_ends = wall + seconds_to_beijing_midnight(wall)

    def today(self, wall: float) -> int:
        """The calls accepted on ``wall``'s Beijing day."""
        self._roll(wall)
        return self.calls

    def banned_for(self, wall: float) -> float | None:
        """Seconds to midnight if the day's quota is spent, else ``None``."""
        self._roll(wall)
        return self.day_ends - wall if self.spent else None

    def check(self, wall: float, quota: int) -> float | None:
        """``None`` if a call at ``wall`` fits in the day's ``quota``, else the seconds to
        midnight (the day is then spent: :meth:`banned_for` answers until it ends)."""
        self._roll(wall)
        if self.calls >= quota:
            self.spent = True
            return self.day_ends - wall
        return None

    def enter(self, wall: float) -> None:
        """Count an accepted call on ``wall``'s day."""
        self._roll(wall)
        self.calls += 1
