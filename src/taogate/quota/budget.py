"""A credential's day: its calls per Beijing calendar day (the platform's day) against its
budget, and whether the platform said the day's quota is spent.

The count starts again when the day in Beijing turns, read from an injected wall clock. While a
replica decides alone for a share of the quota, it spends only that share of the budget. A ban
that lasts until midnight in Beijing (``This ban will last for 31062 more seconds`` at 15:22)
means the key's daily quota is spent: the key is exhausted until the day turns.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date

from taogate._beijing import beijing_date, seconds_to_beijing_midnight

__all__ = ["DayBudget", "lasts_until_midnight"]

#: how far a ban's end may be from midnight in Beijing and still mean "until midnight": the
#: platform rounds its seconds, and the answer takes a while to arrive
MIDNIGHT_SLACK_S = 120.0
#: a ban shorter than this is a rate exceeded, even one that happens to end at midnight
MIN_DAY_BAN_S = 300.0


def lasts_until_midnight(retry_after: float, wall: float) -> bool:
    """Whether a ban of ``retry_after`` seconds seen at ``wall`` ends at the next midnight in
    Beijing (within :data:`MIDNIGHT_SLACK_S`, at least 90 % of the way there, and no shorter
    than :data:`MIN_DAY_BAN_S`): the day's quota is spent, not a rate exceeded."""
    if retry_after < MIN_DAY_BAN_S:
        return False
    left = seconds_to_beijing_midnight(wall)
    return abs(retry_after - left) <= MIDNIGHT_SLACK_S and retry_after >= 0.9 * left


@dataclass(slots=True, eq=False)
class DayBudget:
    """Calls on the current Beijing day against ``limit`` calls a day (``None``: no limit)."""

    limit: int | None
    wall_clock: Callable[[], float]
    day: date | None = None
    calls: int = 0
    #: the Beijing day the platform said this key's quota is spent
    spent_day: date | None = None
    #: the wall-clock time ``day`` ends (the next midnight in Beijing)
    ends_at: float = -math.inf

    def _today(self) -> date | None:
        """The current Beijing day, the count starting again when it turns. Asked for every
        credential at every grant: the calendar is consulted only once the day has ended (or
        the wall clock stepped back)."""
        wall = self.wall_clock()
        if not self.ends_at - 86_400.0 <= wall < self.ends_at:
            today = beijing_date(wall)
            if self.day != today:
                self.day, self.calls = today, 0
            self.ends_at = wall + seconds_to_beijing_midnight(wall)
        return self.day

    def left(self, share: float) -> bool:
        """Whether one more call fits in ``share`` of today's budget (and the platform has not
        said today's quota is spent)."""
        today = self._today()
        if self.spent_day == today:
            return False
        if self.limit is None:
            return True
        return self.calls + 1 <= self.limit * share + 1e-9

    def exhaust(self) -> None:
        """The platform said today's quota is spent: no call until midnight in Beijing."""
        self.spent_day = self._today()

    def spend(self) -> None:
        self._today()
        self.calls += 1

    def give_back(self) -> None:
        """Uncount a call never sent (the day may have turned meanwhile)."""
        self.calls = max(0, self.calls - 1)

    def calls_today(self) -> int:
        """Calls granted on the current Beijing day."""
        self._today()
        return self.calls

    def seconds_left(self) -> float:
        """Seconds until the day turns in Beijing."""
        return seconds_to_beijing_midnight(self.wall_clock())
