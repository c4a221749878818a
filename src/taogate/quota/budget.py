"""A credential's daily budget: its calls per Beijing calendar day (the platform's day).

The count starts again when the day in Beijing turns, read from an injected wall clock. While a
replica decides alone for a share of the quota, it spends only that share of the budget.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date

from taogate._beijing import beijing_date

__all__ = ["DayBudget"]


@dataclass(slots=True, eq=False)
class DayBudget:
    """Calls on the current Beijing day against ``limit`` calls a day (``None``: no limit)."""

    limit: int | None
    wall_clock: Callable[[], float]
    day: date | None = None
    calls: int = 0

    def left(self, share: float) -> bool:
        """Whether one more call fits in ``share`` of today's budget."""
        if self.limit is None:
            return True
        today = beijing_date(self.wall_clock())
        if self.day != today:
            self.day, self.calls = today, 0
        return self.calls + 1 <= self.limit * share + 1e-9

    def spend(self) -> None:
        self.calls += 1

    def give_back(self) -> None:
        """Uncount a call never sent (the day may have turned meanwhile)."""
        self.calls = max(0, self.calls - 1)
