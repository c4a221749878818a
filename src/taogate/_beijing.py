"""Beijing time: the platform's clock, by which its timestamps, days and quotas are counted.

Everything here is computed from UTC (never from the host's local zone, which is UTC in most
containers), so a day turns at midnight in Beijing wherever taogate runs.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone
from typing import Final

__all__ = ["BEIJING", "beijing_date", "beijing_day", "seconds_to_beijing_midnight"]

BEIJING: Final = timezone(timedelta(hours=8), "GMT+8")


def beijing_date(wall: float) -> date:
    """The Beijing calendar day of a wall-clock (POSIX) time."""
    return datetime.fromtimestamp(wall, tz=UTC).astimezone(BEIJING).date()


def beijing_day(wall: float) -> str:
    """The Beijing calendar day of a wall-clock time, ``YYYY-MM-DD`` (day caps count by it)."""
    return beijing_date(wall).isoformat()


def seconds_to_beijing_midnight(wall: float) -> float:
    """Seconds from ``wall`` to the next midnight in Beijing (when day caps start again)."""
    now = datetime.fromtimestamp(wall, tz=BEIJING)
    midnight = datetime.combine(now.date() + timedelta(days=1), datetime.min.time(), BEIJING)
    return (midnight - now).total_seconds()
