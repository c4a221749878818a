"""The simulator's app keys and what it counts: each key's one-second window, ban and counters,
the calls seen per calling address, and the ``GET /_sim/stats`` document.

Pure state driven by clock readings passed in, so unit tests move a fake clock and never sleep.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import Any, Final

from taogate._masking import mask_secret

__all__ = ["KeyState", "SimKey", "Stats", "ban_seconds"]

_SUMMED: Final = (
    "calls", "ok", "code7", "calls_during_ban", "errors", "faulted", "items_requested",
    "items_returned",
)  # fmt: skip


@dataclass(frozen=True, slots=True, kw_only=True)
class SimKey:
    """An app key the simulator accepts, its secret and its calls-per-second limit."""

    app_key: str
    secret: str = field(repr=False)
    qps: float = 10.0

    def __post_init__(self) -> None:
        if not self.app_key or not self.secret:
            raise ValueError("a SimKey needs a non-empty app_key and secret")
        if not self.qps > 0:
            raise ValueError("qps must be > 0")

    def __repr__(self) -> str:
        secret = mask_secret(self.secret)
        return f"SimKey(app_key={self.app_key!r}, secret={secret!r}, qps={self.qps:g})"


class _PeakWindow:
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


class KeyState:
    """One app key's limit window, ban and counters.

    ``window`` holds the accepted calls of the last second; a call that would make it hold more
    than ``qps`` is refused and bans the key for ``ban_s``. Refused calls never enter the window.
    """

    def __init__(self, key: SimKey) -> None:
        self.key = key
        #: the secret replaced by :meth:`set_secret`, still accepted until ``previous_until``
        self.previous_secret: str | None = None
        self.previous_until = -math.inf
        self.reset()

    def set_secret(self, secret: str, now: float, keep_old_s: float = 0.0) -> None:
        """Rotate the secret; the old one stays valid ``keep_old_s`` longer (0: not at all)."""
        if not secret:
            raise ValueError("the new secret is empty")
        if not keep_old_s >= 0:
            raise ValueError("keep_old_s must be >= 0")
        self.previous_secret, self.previous_until = self.key.secret, now + keep_old_s
        self.key = replace(self.key, secret=secret)

    def accepted_secrets(self, now: float) -> tuple[str, ...]:
        """The secrets calls may be signed with now: the current one, then the previous one."""
        if self.previous_secret is not None and now < self.previous_until:
            return (self.key.secret, self.previous_secret)
        return (self.key.secret,)

    def reset(self) -> None:
        """Forget the window, the ban and every counter."""
        self.window: deque[float] = deque()
        self.seen = _PeakWindow()  # every call that reached rate limiting
        self.banned_until = -math.inf
        self.calls = self.ok = self.code7 = self.calls_during_ban = 0
        self.errors = self.faulted = self.items_requested = self.items_returned = 0

    def admit(self, now: float, ban_s: float) -> float | None:
        """``None`` if a call at ``now`` is accepted, else the ban's remaining seconds."""
        self.seen.add(now)
        if now < self.banned_until:
            self.code7 += 1
            self.calls_during_ban += 1
            return self.banned_until - now
        window = self.window
        while window and window[0] <= now - 1.0:
            window.popleft()
        if len(window) + 1 > self.key.qps:
            self.code7 += 1
            self.banned_until = now + ban_s
            return ban_s
        window.append(now)
        return None

    def banned_for(self, now: float) -> float:
        return max(0.0, self.banned_until - now)


def ban_seconds(remaining: float) -> int:
    """The whole seconds a ban message announces (rounded up, as the platform does)."""
    return math.ceil(remaining)


class Stats:
    """The per-key counters and the all-keys peak, rendered as ``GET /_sim/stats``.

    ``calls`` counts every call naming a known key; each ends as one of ``ok``, ``code7``
    (``calls_during_ban`` included), ``errors`` (every other error answer, injected code 15
    too) or ``faulted`` (an outage or malformed answer). Errors naming no known key count in
    the totals only. ``cost`` is ``ok`` × the cost per call.
    """

    def __init__(self, keys: Iterable[SimKey], cost_per_call: Decimal) -> None:
        self.keys: dict[str, KeyState] = {k.app_key: KeyState(k) for k in keys}
        self.cost_per_call = cost_per_call
        self.all_seen = _PeakWindow()
        self.unattributed = 0  # error answers naming no known app key
        self.started = 0.0
        #: every call by the address it came from (the platform's risk control watches the IP)
        self.ips: dict[str, tuple[list[int], _PeakWindow]] = {}

    def reset(self, now: float) -> None:
        for key in self.keys.values():
            key.reset()
        self.all_seen = _PeakWindow()
        self.unattributed = 0
        self.started = now
        self.ips = {}

    def seen_from(self, ip: str, now: float) -> None:
        """Count a call from ``ip`` (any call, whatever its answer)."""
        count, window = self.ips.setdefault(ip, ([0], _PeakWindow()))
        count[0] += 1
        window.add(now)

    def admit(self, key: KeyState, now: float, ban_s: float) -> float | None:
        """Rate-limit one call for ``key`` and count it in the all-keys peak."""
        self.all_seen.add(now)
        return key.admit(now, ban_s)

    def render(self, now: float) -> dict[str, Any]:
        """The stats document; ``items_per_ok_call`` is ids requested per successful call."""
        keys = {name: self._row(k, now) for name, k in self.keys.items()}
        ok = sum(k.ok for k in self.keys.values())
        requested = sum(k.items_requested for k in self.keys.values())
        totals: dict[str, Any] = {name: sum(row[name] for row in keys.values()) for name in _SUMMED}
        totals["calls"] += self.unattributed
        totals["errors"] += self.unattributed
        totals["max_calls_in_1s"] = self.all_seen.peak  # over all keys together
        totals["items_per_ok_call"] = requested / ok if ok else 0.0
        totals["cost"] = str(ok * self.cost_per_call)
        totals["banned_for_s"] = max((row["banned_for_s"] for row in keys.values()), default=0.0)
        ips = {
            ip: {"calls": count[0], "max_calls_in_1s": window.peak}
            for ip, (count, window) in sorted(self.ips.items())
        }
        return {"keys": keys, "totals": totals, "ips": ips, "uptime_s": now - self.started}

    def _row(self, k: KeyState, now: float) -> dict[str, Any]:
        return {
            "calls": k.calls,
            "ok": k.ok,
            "code7": k.code7,
            "calls_during_ban": k.calls_during_ban,
            "errors": k.errors,
            "faulted": k.faulted,
            "max_calls_in_1s": k.seen.peak,
            "items_requested": k.items_requested,
            "items_returned": k.items_returned,
            "items_per_ok_call": k.items_requested / k.ok if k.ok else 0.0,
            "cost": str(k.ok * self.cost_per_call),
            "banned_for_s": k.banned_for(now),
        }
