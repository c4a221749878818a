"""The simulator's app keys and accounts and what it counts: each key's window, bans, daily
quota and counters, the accounts' and API methods' windows, the calls seen per calling address,
and the ``GET /_sim/stats`` document.

Pure state driven by clock readings passed in, so unit tests move a fake clock and never sleep.
The order in which these limits are checked is :class:`~taogate.testing._sim_state.SimState`'s.
"""

from __future__ import annotations

import ipaddress
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from decimal import Decimal
from types import MappingProxyType
from typing import Any, Final

from taogate._masking import mask_secret
from taogate.providers.top import METHODS
from taogate.testing._sim_limits import DailyQuota, PeakWindow, RateWindow

__all__ = [
    "AccountState",
    "KeyState",
    "MethodState",
    "SimAccount",
    "SimKey",
    "Stats",
    "check_method_caps",
]

_SUMMED: Final = (
    "calls", "ok", "code7", "calls_during_ban", "code7_api", "code7_app_api", "code11",
    "code15_9100", "errors", "faulted", "items_requested", "items_returned", "calls_today",
)  # fmt: skip


def check_method_caps(caps: Mapping[str, float]) -> dict[str, float]:
    """``caps`` (method → calls per second) as a dict; ``ValueError`` for an unknown method or a
    limit that is not a positive number."""
    out: dict[str, float] = {}
    for method, qps in caps.items():
        if method not in METHODS:
            raise ValueError(f"method_qps: unknown method {method!r} ({', '.join(METHODS)})")
        if isinstance(qps, bool) or not isinstance(qps, int | float) or not qps > 0:
            raise ValueError(f"method_qps: {method}: the limit must be a number > 0")
        if not math.isfinite(qps):
            raise ValueError(f"method_qps: {method}: the limit must be finite")
        out[method] = float(qps)
    return out


def _no_caps() -> Mapping[str, float]:
    return MappingProxyType({})


@dataclass(frozen=True, slots=True, kw_only=True)
class SimKey:
    """An app key the simulator accepts: its secret, its limits and where it may call from.

    ``qps`` is the key's calls per second over every method; ``method_qps`` caps single methods
    for this key (``limited-by-app-api-access-count``); ``daily_quota`` is its accepted calls per
    Beijing day; ``whitelist`` the source addresses it may call from (empty: any); ``account``
    the :class:`SimAccount` whose calls per second it shares.
    """

    app_key: str
    secret: str = field(repr=False)
    qps: float = 10.0
    account: str | None = None
    whitelist: tuple[str, ...] = ()
    daily_quota: int | None = None
    #: read-only (a copy of what was given); left out of the hash
    method_qps: Mapping[str, float] = field(default_factory=_no_caps, hash=False)

    def __post_init__(self) -> None:
        if not self.app_key or not self.secret:
            raise ValueError("a SimKey needs a non-empty app_key and secret")
        if not self.qps > 0:
            raise ValueError("qps must be > 0")
        if self.account is not None and not self.account:
            raise ValueError("account must be a non-empty name or None")
        if isinstance(self.whitelist, str):
            raise ValueError("whitelist must be a tuple of addresses, not one string")
        addresses = []
        for address in self.whitelist:
            try:
                addresses.append(str(ipaddress.ip_address(address)))
            except ValueError:
                raise ValueError(f"whitelist: {address!r} is not an IP address") from None
        object.__setattr__(self, "whitelist", tuple(addresses))
        quota = self.daily_quota
        if quota is not None and (isinstance(quota, bool) or not isinstance(quota, int)):
            raise ValueError("daily_quota must be a whole number of calls or None")
        if quota is not None and quota < 0:
            raise ValueError("daily_quota must be >= 0")
        object.__setattr__(self, "method_qps", MappingProxyType(check_method_caps(self.method_qps)))

    def __repr__(self) -> str:
        secret = mask_secret(self.secret)
        extra = ""
        if self.account is not None:
            extra += f", account={self.account!r}"
        if self.whitelist:
            extra += f", whitelist={self.whitelist!r}"
        if self.daily_quota is not None:
            extra += f", daily_quota={self.daily_quota}"
        if self.method_qps:
            extra += f", method_qps={dict(self.method_qps)!r}"
        return f"SimKey(app_key={self.app_key!r}, secret={secret!r}, qps={self.qps:g}{extra})"


@dataclass(frozen=True, slots=True)
class SimAccount:
    """An account (a 淘宝联盟 promoter) over several app keys: its calls per second over all of
    them; going over is answered with code 15 / sub_code ``9100`` and bans nothing."""

    name: str
    qps: float

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("a SimAccount needs a non-empty name")
        if isinstance(self.qps, bool) or not self.qps > 0 or not math.isfinite(self.qps):
            raise ValueError(f"account {self.name!r}: qps must be a finite number > 0")


class AccountState:
    """One account's window and counters: ``calls`` reached its check, ``code15_9100`` of them
    were refused, ``ok`` were answered with items."""

    def __init__(self, account: SimAccount) -> None:
        self.account = account
        self.reset()

    def reset(self) -> None:
        self.window = RateWindow()
        self.seen = PeakWindow()
        self.calls = self.ok = self.code15_9100 = 0

    def check(self, now: float) -> bool:
        """Whether a call at ``now`` fits in the account's second (it enters nothing yet)."""
        self.calls += 1
        self.seen.add(now)
        if self.window.check(now, self.account.qps, 0.0) is None:
            return True
        self.code15_9100 += 1
        return False

    def render(self) -> dict[str, Any]:
        return {
            "calls": self.calls,
            "ok": self.ok,
            "code15_9100": self.code15_9100,
            "max_calls_in_1s": self.seen.peak,
        }


class MethodState:
    """One API method over every key: its cap (``None``: none), ban and counters."""

    def __init__(self, qps: float | None) -> None:
        self.qps = qps
        self.reset()

    def reset(self) -> None:
        self.window = RateWindow()
        self.seen = PeakWindow()
        self.calls = self.ok = self.code7 = 0

    def check(self, now: float, ban_s: float) -> float | None:
        """``None`` if a call at ``now`` fits, else the method's ban remaining (a new ban of
        ``ban_s`` when its second is full)."""
        self.calls += 1
        self.seen.add(now)
        if self.qps is None:
            return None
        wait = self.window.check(now, self.qps, ban_s)
        if wait is not None:
            self.code7 += 1
        return wait

    def render(self, now: float) -> dict[str, Any]:
        return {
            "calls": self.calls,
            "ok": self.ok,
            "code7": self.code7,
            "max_calls_in_1s": self.seen.peak,
            "banned_for_s": self.window.banned_for(now),
        }


class KeyState:
    """One app key's windows, bans, daily quota and counters.

    ``window`` holds the key's accepted calls of the last second; a call that would make it hold
    more than ``qps`` is refused and bans the key for ``ban_s``. ``pairs`` are its windows per
    capped method. Refused calls never enter a window.
    """

    def __init__(self, key: SimKey, account: AccountState | None = None) -> None:
        self.key = key
        self.account = account
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
        """Forget the windows, the bans, the day's count and every counter."""
        self.window = RateWindow()
        self.pairs: dict[str, RateWindow] = {}
        self.day = DailyQuota()
        self.seen = PeakWindow()  # every call that reached the rate limits
        self.calls = self.ok = self.code7 = self.calls_during_ban = 0
        self.code7_api = self.code7_app_api = self.code11 = self.code15_9100 = 0
        self.errors = self.faulted = self.items_requested = self.items_returned = 0

    def check_window(self, now: float, wall: float, ban_s: float) -> float | None:
        """The key's own limit: ``None`` if a call fits, else the remaining seconds of the key's
        ban — a new one of ``ban_s`` when its second is full, or a spent day's until midnight."""
        day_left = self.day.banned_for(wall) if self.key.daily_quota is not None else None
        in_ban = day_left is not None or self.window.banned(now)
        wait = self.window.check(now, self.key.qps, ban_s) if day_left is None else day_left
        if wait is not None:
            self.code7 += 1
            self.calls_during_ban += in_ban
        return wait

    def check_pair(self, method: str, now: float, ban_s: float) -> float | None:
        """This key's cap on ``method`` (``limited-by-app-api-access-count``), as above."""
        qps = self.key.method_qps.get(method)
        if qps is None:
            return None
        window = self.pairs.get(method)
        if window is None:
            window = self.pairs[method] = RateWindow()
        wait = window.check(now, qps, ban_s)
        if wait is not None:
            self.code7 += 1
            self.code7_app_api += 1
        return wait

    def check_day(self, wall: float) -> float | None:
        """The daily quota: ``None`` if a call fits, else the seconds to midnight in Beijing."""
        quota = self.key.daily_quota
        if quota is None:
            return None
        wait = self.day.check(wall, quota)
        if wait is not None:
            self.code7 += 1
        return wait

    def enter(self, now: float, wall: float, method: str | None) -> None:
        """Count a call every limit accepted in the key's windows and its day."""
        self.window.enter(now)
        if method is not None and (pair := self.pairs.get(method)) is not None:
            pair.enter(now)
        self.day.enter(wall)

    def banned_for(self, now: float, wall: float | None = None) -> float:
        """Seconds the key's own ban has left (a spent day's too, given ``wall``)."""
        left = self.window.banned_for(now)
        if wall is not None and self.key.daily_quota is not None:
            left = max(left, self.day.banned_for(wall) or 0.0)
        return left


class _Source:
    """The calls from one address."""

    __slots__ = ("calls", "code11", "seen")

    def __init__(self) -> None:
        self.calls = self.code11 = 0
        self.seen = PeakWindow()


class Stats:
    """The keys', accounts' and methods' state and counters, rendered as ``GET /_sim/stats``.

    ``calls`` counts every call naming a known key; each ends as one of ``ok``, ``code7`` (any
    sub_code: ``calls_during_ban``, ``code7_api`` and ``code7_app_api`` are parts of it),
    ``errors`` (every other error answer, ``code11``, ``code15_9100`` and injected code 15
    included) or ``faulted`` (an outage or malformed answer). Errors naming no known key count in
    the totals only. ``cost`` is ``ok`` × the cost per call.
    """

    def __init__(
        self,
        keys: Iterable[SimKey],
        cost_per_call: Decimal,
        *,
        accounts: Iterable[SimAccount] = (),
        method_qps: Mapping[str, float] | None = None,
    ) -> None:
        self.accounts: dict[str, AccountState] = {}
        for account in accounts:
            if account.name in self.accounts:
                raise ValueError(f"account {account.name!r} is listed twice")
            self.accounts[account.name] = AccountState(account)
        self.keys: dict[str, KeyState] = {}
        for key in keys:
            state = None
            if key.account is not None:
                state = self.accounts.get(key.account)
                if state is None:
                    raise ValueError(f"key {key.app_key!r} names unknown account {key.account!r}")
            self.keys[key.app_key] = KeyState(key, state)
        self.method_qps = check_method_caps(method_qps or {})
        self.cost_per_call = cost_per_call
        self.reset(0.0)

    def reset(self, now: float) -> None:
        for key in self.keys.values():
            key.reset()
        for account in self.accounts.values():
            account.reset()
        self.methods = {m: MethodState(qps) for m, qps in self.method_qps.items()}
        self.all_seen = PeakWindow()  # every call that reached the rate limits, all keys
        self.unattributed = 0  # error answers naming no known app key
        self.started = now
        #: every call by the address it came from (the platform's risk control watches the IP)
        self.ips: dict[str, _Source] = {}

    def method(self, name: str) -> MethodState:
        """``name``'s state over every key (created at its first call if it has no cap)."""
        state = self.methods.get(name)
        if state is None:
            state = self.methods[name] = MethodState(None)
        return state

    def source(self, ip: str) -> _Source:
        source = self.ips.get(ip)
        if source is None:
            source = self.ips[ip] = _Source()
        return source

    def seen_from(self, ip: str, now: float) -> None:
        """Count a call from ``ip`` (any call, whatever its answer)."""
        source = self.source(ip)
        source.calls += 1
        source.seen.add(now)

    def reach(self, key: KeyState, now: float) -> None:
        """Count a call that reached the rate limits in its key's and the all-keys peaks."""
        self.all_seen.add(now)
        key.seen.add(now)

    def render(self, now: float, wall: float | None = None) -> dict[str, Any]:
        """The stats document; ``items_per_ok_call`` is ids requested per successful call.

        With ``wall``, ``calls_today`` and ``banned_for_s`` know the Beijing day's turn.
        """
        keys = {name: self._row(k, now, wall) for name, k in self.keys.items()}
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
            ip: {"calls": s.calls, "max_calls_in_1s": s.seen.peak, "code11": s.code11}
            for ip, s in sorted(self.ips.items())
        }
        return {
            "keys": keys,
            "totals": totals,
            "ips": ips,
            "accounts": {name: a.render() for name, a in sorted(self.accounts.items())},
            "methods": {name: m.render(now) for name, m in sorted(self.methods.items())},
            "uptime_s": now - self.started,
        }

    def _row(self, k: KeyState, now: float, wall: float | None) -> dict[str, Any]:
        return {
            "calls": k.calls,
            "ok": k.ok,
            "code7": k.code7,
            "calls_during_ban": k.calls_during_ban,
            "code7_api": k.code7_api,
            "code7_app_api": k.code7_app_api,
            "code11": k.code11,
            "code15_9100": k.code15_9100,
            "errors": k.errors,
            "faulted": k.faulted,
            "max_calls_in_1s": k.seen.peak,
            "items_requested": k.items_requested,
            "items_returned": k.items_returned,
            "items_per_ok_call": k.items_requested / k.ok if k.ok else 0.0,
            "cost": str(k.ok * self.cost_per_call),
            "banned_for_s": k.banned_for(now, wall),
            "calls_today": k.day.calls if wall is None else k.day.today(wall),
        }
