"""Degraded mode: older cached answers, no refresh-ahead, bulk paused, quota kept for misses.

For a peak the quota cannot carry (a sale such as 双11), a gateway can degrade on purpose:

- lookups without their own ``max_age`` take cached answers up to ``[degrade] max_age_s`` old
  as fresh (with their true ``age_s``; ``stale`` stays for answers served because the upstream
  failed), past the freshness they were stored with, as long as the cache keeps them;
- refresh-ahead stops, and the bulk-job worker takes no new chunks (those in progress finish);
- lookups that are not interactive (refresh, bulk: a chunk in progress, or a library caller's
  own ``priority=BULK``) may send at most ``1 - reserve_share`` of the quota's ids, so the rest
  is kept for interactive misses.

What decides it: an operator's **override** (``on`` or ``off``, optionally ``until`` a time)
if one holds, else the **schedule** (``[[degrade.windows]]``). With Redis the override is one
key that every replica reads at start, polls with its heartbeat and re-reads on a pub/sub
message (``taogate.replicas.SharedOverride``, the control's ``store``); without Redis it
belongs to this process. Every time is wall-clock (the schedule names dates); the reserve's
pacing reads the gateway's clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

import orjson

from taogate._beijing import BEIJING
from taogate._errors import Overloaded
from taogate._settings import DegradeWindow, Settings

__all__ = [
    "DegradeControl",
    "DegradeStats",
    "DegradeStatus",
    "Override",
    "OverrideStore",
    "Window",
    "evaluate",
    "format_time",
    "parse_time",
]

log = logging.getLogger("taogate.degrade")

Source = Literal["manual", "schedule"]
#: The watcher looks again at least this often (the wall clock may be stepped meanwhile).
_RECHECK_S = 5.0
#: Longest reason kept (it is logged and shown in ``/readyz``).
MAX_REASON = 200
_LATEST = datetime.max.replace(tzinfo=UTC).timestamp()
_EARLIEST = datetime.min.replace(tzinfo=UTC).timestamp()
_RFC3339 = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(\.\d+)?([Zz]|[+-]\d{2}:\d{2})"
)


def parse_time(text: str) -> float:
    """Wall seconds of an RFC 3339 date-time, which must carry its UTC offset (``Z``, ``+08:00``).

    Raises ``ValueError`` with a message fit for the caller.
    """
    m = _RFC3339.fullmatch(text.strip())
    if m is None:
        raise ValueError(
            f"{text!r} is not an RFC 3339 date-time with a UTC offset "
            "(e.g. 2026-11-11T00:00:00+08:00 or 2026-11-10T16:00:00Z)"
        )
    year, month, day, hour, minute, second = (int(g) for g in m.groups()[:6])
    fraction = float(m.group(7) or 0.0)
    offset = m.group(8)
    sign = 1 if offset[0] == "+" else -1
    shift = 0 if offset in ("Z", "z") else sign * (int(offset[1:3]) * 3600 + int(offset[4:6]) * 60)
    try:  # a leap second (:60) counts as the second before it
        local = datetime(year, month, day, hour, minute, min(second, 59), tzinfo=UTC)
    except ValueError as exc:
        raise ValueError(f"{text!r}: {exc}") from None
    # from the naive parts, so that 0001-01-01T00:00:00+01:00 or 9999-12-31T23:59:59-05:00 do
    # not overflow datetime on the way to UTC
    return local.timestamp() + fraction - shift


def format_time(wall: float | None) -> str | None:
    """``wall`` seconds as RFC 3339 in Beijing time (``None`` stays ``None``)."""
    if wall is None:
        return None
    if not math.isfinite(wall):  # pragma: no cover - every stored time is checked as finite
        wall = _LATEST - 86_400 if wall > 0 else _EARLIEST + 86_400
    moment = datetime.fromtimestamp(min(max(wall, _EARLIEST + 86_400), _LATEST - 86_400), tz=UTC)
    return moment.astimezone(BEIJING).isoformat()


def _is_time(value: object) -> bool:
    """A finite number (not a bool: JSON ``true`` is no time)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:  # an int too large for a float
        return False


@dataclass(frozen=True, slots=True, kw_only=True)
class Override:
    """An operator's switch: ``on`` or ``off`` whatever the schedule says, until ``until``."""

    mode: Literal["on", "off"]
    #: wall seconds when it ends by itself; ``None``: until switched back to ``auto``
    until: float | None = None
    reason: str | None = None
    #: the client (or tool) that set it
    by: str | None = None
    #: wall seconds when it was set
    at: float = 0.0

    def holds(self, now: float) -> bool:
        return self.until is None or now < self.until

    def to_json(self) -> bytes:
        return orjson.dumps(
            {
                "mode": self.mode,
                "until": self.until,
                "reason": self.reason,
                "by": self.by,
                "at": self.at,
            }
        )

    @classmethod
    def from_json(cls, raw: bytes | str, *, now: float | None = None) -> Override:
        """An override as :meth:`to_json` wrote it; ``ValueError`` if it is not one.

        It is read from Redis, where anyone may have written it: ``until`` and ``at`` must be
        finite numbers, and are clamped to what :meth:`DegradeControl.set` could have made —
        ``at`` to ``[0, now]`` (``now``: the wall clock), ``until`` to the year 9999 at most
        (one in the past is an override that has ended).
        """
        try:
            doc = orjson.loads(raw)
        except (orjson.JSONDecodeError, TypeError):
            raise ValueError("not JSON") from None
        if not isinstance(doc, dict) or doc.get("mode") not in ("on", "off"):
            raise ValueError("not an override")
        until, at = doc.get("until"), doc.get("at", 0.0)
        if until is not None and not _is_time(until):
            raise ValueError("until is not a finite number")
        if not _is_time(at):
            raise ValueError("at is not a finite number")
        reason, by = doc.get("reason"), doc.get("by")
        latest = _LATEST - 86_400
        wall = time.time() if now is None else now
        return cls(
            mode=doc["mode"],
            until=None if until is None else min(max(float(until), 0.0), latest),
            reason=str(reason)[:MAX_REASON] if reason is not None else None,
            by=str(by)[:MAX_REASON] if by is not None else None,
            at=min(max(float(at), 0.0), wall, latest),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "until": format_time(self.until),
            "reason": self.reason,
            "by": self.by,
            "at": format_time(self.at),
        }


@dataclass(frozen=True, slots=True)
class Window:
    """A scheduled degraded period, in wall seconds."""

    start: float
    end: float
    reason: str | None = None

    @classmethod
    def from_settings(cls, window: DegradeWindow) -> Window:
        return cls(window.start.timestamp(), window.end.timestamp(), window.reason)

    def to_dict(self) -> dict[str, Any]:
        return {
            "start": format_time(self.start),
            "end": format_time(self.end),
            "reason": self.reason,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class DegradeStatus:
    """Whether degraded mode is on, what decided it, why, and until when it holds by itself."""

    on: bool
    source: Source | None = None
    reason: str | None = None
    until: float | None = None
    by: str | None = None

    def to_dict(self, *, who: bool = False) -> dict[str, Any]:
        """``on``, ``source``, ``reason``, ``until`` (and ``by`` for operators)."""
        doc: dict[str, Any] = {
            "on": self.on,
            "source": self.source,
            "reason": self.reason,
            "until": format_time(self.until),
        }
        if who:
            doc["by"] = self.by
        return doc


@dataclass(frozen=True, slots=True, kw_only=True)
class DegradeStats:
    """Degraded mode at one moment: its status, the changes seen, and the reserve's work."""

    status: DegradeStatus
    #: changes of the effective state this gateway saw
    changes: int
    #: non-interactive ids the reserve held back (they waited), and refused
    held_ids: int
    refused_ids: int


def evaluate(
    override: Override | None, windows: Sequence[Window], now: float
) -> tuple[DegradeStatus, float]:
    """The state at wall time ``now`` and the wall time it may next change (``inf``: never).

    An override that holds decides; else the schedule does. Overlapping or touching windows
    count as one stretch (``until`` is the end of the stretch).
    """
    if override is not None and override.holds(now):
        status = DegradeStatus(
            on=override.mode == "on",
            source="manual",
            reason=override.reason,
            until=override.until,
            by=override.by,
        )
        return status, math.inf if override.until is None else override.until
    inside = [w for w in windows if w.start <= now < w.end]
    if not inside:
        upcoming = [w.start for w in windows if w.start > now]
        return DegradeStatus(on=False), min(upcoming, default=math.inf)
    lead = max(inside, key=lambda w: w.end)
    end = lead.end
    extended = True
    while extended:  # a window that starts before the stretch ends carries it on
        extended = False
        for w in windows:
            if w.start <= end < w.end:
                end, extended = w.end, True
    return DegradeStatus(on=True, source="schedule", reason=lead.reason, until=end), end


class OverrideStore(Protocol):
    """Where an override is kept for every replica (``taogate.replicas.SharedOverride``)."""

    async def write(self, override: Override | None) -> None:
        """Store ``override`` (``None``: back to the schedule) and tell the other replicas;
        raise :class:`~taogate._errors.DegradeNotShared` when that cannot be done."""

    def subscribe(self, on_read: Callable[[Override | None, str], object]) -> None:
        """Call ``on_read(override, cause)`` with every override read from the store."""


class DegradeControl:
    """One gateway's degraded mode: the last known override, the schedule, and the knobs.

    :attr:`active` is read on every lookup: it re-evaluates only when a boundary (a window's
    start or end, an override's ``until``) has passed. A watcher task (:meth:`run`) logs every
    change and wakes :meth:`wait_normal` at those boundaries.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        clock: Callable[[], float],
        wall_clock: Callable[[], float] = time.time,
        store: OverrideStore | None = None,
    ) -> None:
        """``store``: where the override is shared with the other replicas (this control
        follows what is read from it); ``None``: overrides belong to this process."""
        self.max_age_s = settings.degraded_max_age_s
        self.reserve_share = settings.degrade.reserve_share
        self.windows = [Window.from_settings(w) for w in settings.degrade.windows]
        #: the override as last known here (set here, or read from the store)
        self.override: Override | None = None
        self.store = store
        self._clock = clock
        self._wall = wall_clock
        self._status, self._next = evaluate(None, self.windows, wall_clock())
        self._noted = self._status
        self._first_note = True
        self._normal = asyncio.Event()
        self._changed = asyncio.Event()
        self._reserve_tat = 0.0
        #: changes of the effective state seen by this gateway
        self.changes = 0
        #: non-interactive ids held back by the reserve, and refused by it
        self.held_ids = 0
        self.refused_ids = 0
        if store is not None:
            store.subscribe(lambda override, cause: self.apply(override, cause=cause))

    # --- state -----------------------------------------------------------------------------

    @property
    def active(self) -> bool:
        """Whether degraded mode is on now."""
        now = self._wall()
        if now >= self._next:
            self._status, self._next = evaluate(self.override, self.windows, now)
        return self._status.on

    def status(self) -> DegradeStatus:
        """The state now (what ``/readyz`` and the metrics show)."""
        now = self._wall()
        if now >= self._next:
            self._status, self._next = evaluate(self.override, self.windows, now)
        return self._status

    def stats(self) -> DegradeStats:
        """The status now and the counters (what the metrics show)."""
        return DegradeStats(
            status=self.status(),
            changes=self.changes,
            held_ids=self.held_ids,
            refused_ids=self.refused_ids,
        )

    def apply(self, override: Override | None, *, cause: str) -> None:
        """Take ``override`` as the current one (set here, or read from the store)."""
        if override is not None and not override.holds(self._wall()):
            override = None  # ended already
        if override == self.override:
            return
        self.override = override
        self._status, self._next = evaluate(override, self.windows, self._wall())
        self._note(cause)

    async def set(
        self,
        mode: Literal["on", "off", "auto"],
        *,
        until: float | None = None,
        reason: str | None = None,
        by: str | None = None,
    ) -> DegradeStatus:
        """Switch degraded mode ``on`` or ``off`` regardless of the schedule (until ``until``),
        or back to ``auto`` (the schedule decides). With a store, every replica follows; if the
        store cannot be written, :class:`~taogate._errors.DegradeNotShared` and nothing changed.
        ``ValueError`` if ``until`` has passed or goes with ``auto``.
        """
        now = self._wall()
        if until is not None and mode == "auto":
            raise ValueError('"until" goes with "on" or "off", not "auto"')
        if until is not None and until <= now:
            raise ValueError(f'"until" ({format_time(until)}) has passed; it is {format_time(now)}')
        if mode == "auto":
            override = None
        else:
            override = Override(mode=mode, until=until, reason=reason, by=by, at=now)
        if self.store is not None:
            await self.store.write(override)
        log.info(
            "degrade override %s by %s",
            mode if until is None else f"{mode} until {format_time(until)}",
            by or "the library",
            extra={"degrade_mode": mode, "degrade_reason": reason, "degrade_by": by},
        )
        self.apply(override, cause=f"set by {by or 'the library'}")
        return self.status()

    def _note(self, cause: str) -> None:
        """Log a change of the effective state and wake whoever waits for it."""
        status = self.status()
        previous, self._noted = self._noted, status
        first, self._first_note = self._first_note, False
        if status.on:
            self._normal.clear()
        else:
            self._normal.set()
        self._changed.set()
        if status == previous and not (first and status.on):
            return  # unchanged (off at start is no news either)
        if status != previous:
            self.changes += 1
        detail: str = status.source or "auto, no window now"
        if status.by:
            detail += f" by {status.by}"
        if status.reason:
            detail += f": {status.reason}"
        if status.until is not None:
            detail += f"; until {format_time(status.until)}"
        log.info(
            "degraded mode %s (%s)",
            "on" if status.on else "off",
            detail,
            extra={
                "degraded": status.on,
                "degrade_source": status.source,
                "degrade_reason": status.reason,
                "degrade_until": format_time(status.until),
                "degrade_by": status.by,
                "cause": cause,
            },
        )

    async def run(self) -> None:
        """Note every change at the schedule's and the override's boundaries, until cancelled."""
        while True:
            self._note("schedule" if self.override is None else "override ended")
            wait = min(max(0.0, self._next - self._wall()), _RECHECK_S)
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), timeout=wait)

    async def wait_normal(self) -> None:
        """Return once degraded mode is off (at once if it is)."""
        while self.active:
            self._normal.clear()
            await self._normal.wait()

    # --- the reserve -----------------------------------------------------------------------

    def hold(
        self, ids: int, *, calls_per_s: float, max_batch: int, now: float, deadline: float
    ) -> float:
        """Seconds ``ids`` non-interactive ids wait before they may be sent while degraded.

        They are paced at ``(1 - reserve_share) × calls_per_s × max_batch`` ids per second
        (``calls_per_s``: this replica's part of the quota), counted as if each id used its
        share of a call even when it rides in an interactive one: never more than their share.
        Raises :class:`Overloaded` when they could not go before ``deadline`` (nothing is
        reserved then).
        """
        rate = (1.0 - self.reserve_share) * calls_per_s * max_batch
        start = max(self._reserve_tat, now)
        if rate <= 0 or start > deadline:
            self.refused_ids += ids
            retry = None if rate <= 0 else start - now
            raise Overloaded(
                "degraded mode keeps the quota for interactive lookups "
                f"(reserve_share {self.reserve_share:g})",
                retry_after=retry,
            )
        self._reserve_tat = start + ids / rate
        if start > now:
            self.held_ids += ids
        return start - now
