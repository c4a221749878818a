"""The simulator's decisions and bookkeeping: checks, windows and bans, stats and faults.

Pure state driven by clock readings passed in, so unit tests move a fake clock and never sleep.
The HTTP layer (``_sim.py``) asks :class:`SimState` what to answer and renders the answer.
"""

from __future__ import annotations

import hmac
import math
import random
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from decimal import Decimal
from typing import Any, Final, Literal

from taogate._beijing import BEIJING
from taogate._masking import mask_secret
from taogate.providers.top import METHODS, sign

__all__ = [
    "FAULT_KINDS",
    "Fault",
    "Faults",
    "KeyState",
    "ResellerCall",
    "ResellerError",
    "SimKey",
    "SimState",
    "Stats",
    "TopCall",
    "TopError",
    "parse_timestamp",
]

FAULT_KINDS: Final = ("outage", "slow", "code15", "malformed", "revoke")
_FAULT_FIELDS: Final = frozenset({"kind", "duration_s", "app_key", "extra_latency_ms", "ratio"})
DEFAULT_EXTRA_LATENCY_MS: Final = 1000.0
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


@dataclass(frozen=True, slots=True, kw_only=True)
class Fault:
    """One injected fault, active from ``started`` until ``until`` (clock times)."""

    kind: str
    started: float
    until: float
    app_key: str | None = None
    extra_latency_ms: float = 0.0
    ratio: float = 1.0

    def render(self, now: float) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind, "remaining_s": max(0.0, self.until - now)}
        if self.kind == "revoke":
            out["app_key"] = self.app_key
        elif self.kind == "slow":
            out["extra_latency_ms"] = self.extra_latency_ms
        elif self.kind == "code15":
            out["ratio"] = self.ratio
        return out


def _number(doc: Mapping[str, Any], name: str, default: float | None) -> float:
    value = doc.get(name, default)
    if value is None:
        raise ValueError(f"{name} is required")
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number")
    return float(value)


def parse_fault(doc: object, now: float, known_keys: Iterable[str]) -> Fault:
    """The fault a ``POST /_sim/faults`` body asks for; ``ValueError`` names what is wrong."""
    if not isinstance(doc, dict):
        raise ValueError("the body must be a JSON object")
    unknown = sorted(set(doc) - _FAULT_FIELDS)
    if unknown:
        raise ValueError(f"unknown field(s): {', '.join(map(str, unknown))}")
    kind = doc.get("kind")
    if kind not in FAULT_KINDS:
        raise ValueError(f"kind must be one of {', '.join(FAULT_KINDS)}")
    duration = _number(doc, "duration_s", None)
    if duration < 0:
        raise ValueError("duration_s must be >= 0 (0 ends the faults of that kind)")
    app_key = doc.get("app_key")
    if kind == "revoke":
        if not isinstance(app_key, str) or app_key not in set(known_keys):
            raise ValueError("revoke needs app_key, one of the simulator's keys")
    elif app_key is not None:
        raise ValueError("app_key applies to revoke only")
    extra = _number(doc, "extra_latency_ms", DEFAULT_EXTRA_LATENCY_MS)
    ratio = _number(doc, "ratio", 1.0)
    if extra < 0:
        raise ValueError("extra_latency_ms must be >= 0")
    if not 0 <= ratio <= 1:
        raise ValueError("ratio must be in [0, 1]")
    return Fault(
        kind=kind,
        started=now,
        until=now + duration,
        app_key=app_key,
        extra_latency_ms=extra if kind == "slow" else 0.0,
        ratio=ratio if kind == "code15" else 1.0,
    )


class Faults:
    """The active faults; each ends by itself when the clock passes its ``until``."""

    def __init__(self) -> None:
        self._faults: list[Fault] = []

    def add(self, fault: Fault) -> None:
        """Start ``fault``; one of duration 0 ends the running faults of its kind (and key)."""
        if fault.until > fault.started:
            self._faults.append(fault)
        else:
            self._faults = [
                f for f in self._faults if (f.kind, f.app_key) != (fault.kind, fault.app_key)
            ]

    def clear(self) -> None:
        self._faults.clear()

    def active(self, now: float) -> list[Fault]:
        """The faults still running at ``now``; ended ones are dropped."""
        if self._faults:
            self._faults = [f for f in self._faults if f.until > now]
        return list(self._faults)

    def __bool__(self) -> bool:
        return bool(self._faults)

    def has(self, kind: str, now: float) -> bool:
        return bool(self._faults) and any(f.kind == kind for f in self.active(now))

    def revoked(self, app_key: str, now: float) -> bool:
        return bool(self._faults) and any(
            f.kind == "revoke" and f.app_key == app_key for f in self.active(now)
        )

    def code15_ratio(self, now: float) -> float:
        """The share of calls refused with code 15 (the largest of overlapping faults)."""
        if not self._faults:
            return 0.0
        return max((f.ratio for f in self.active(now) if f.kind == "code15"), default=0.0)

    def extra_latency_s(self, now: float) -> float:
        """The added latency of every ``slow`` fault running (they add up)."""
        if not self._faults:
            return 0.0
        return sum(f.extra_latency_ms for f in self.active(now) if f.kind == "slow") / 1000.0


# --- decisions ------------------------------------------------------------------------------

SIGN_METHODS: Final = frozenset({"md5", "hmac", "hmac-sha256"})
FaultAnswer = Literal["outage", "malformed"]


@dataclass(frozen=True, slots=True)
class TopError:
    """An ``error_response`` to send."""

    code: int
    msg: str
    sub_code: str | None = None
    sub_msg: str | None = None


@dataclass(frozen=True, slots=True)
class TopCall:
    """An accepted TOP call: distinct ids in request order."""

    key: KeyState
    method: str
    ids: list[str]
    simplify: bool


@dataclass(frozen=True, slots=True)
class ResellerError:
    """A reseller error answer (``error_code`` is never "0000")."""

    error_code: str
    reason: str
    error: str


@dataclass(frozen=True, slots=True)
class ResellerCall:
    """An accepted reseller call for one id."""

    key: KeyState
    num_iid: str
    promotion: bool


_OLD_ID = TopError(15, "Remote Service Error", "-4003", "请使用升级后的新商品ID")
_REMOTE = TopError(15, "Remote Service Error", "isp.remote-service-error", "service busy, retry")
_BAD_KEY = TopError(29, "Invalid app Key", "isv.appkey-not-exists", "app key does not exist")


def parse_timestamp(text: str) -> float | None:
    """Epoch seconds of a TOP ``timestamp``: ``yyyy-MM-dd HH:mm:ss`` in GMT+8, or epoch ms."""
    if text.isascii() and text.isdigit():
        return int(text) / 1000.0
    try:
        moment = datetime.strptime(text, "%Y-%m-%d %H:%M:%S")  # GMT+8, set below
    except ValueError:
        return None
    return moment.replace(tzinfo=BEIJING).timestamp()


class SimState:
    """What the upstream answers a call, in the platform's order of checks, and the counts."""

    def __init__(
        self,
        keys: Iterable[SimKey],
        *,
        ban_s: float,
        max_skew_s: float,
        cost_per_call: Decimal,
        is_legacy: Callable[[str], bool],
        rng: random.Random,
        now: float,
    ) -> None:
        self.stats = Stats(keys, cost_per_call)
        self.stats.started = now
        self.faults = Faults()
        self.ban_s = ban_s
        self.max_skew_s = max_skew_s
        self._is_legacy = is_legacy
        self._rng = rng
        self._last_ts: tuple[str, float | None] = ("", None)  # calls of one second share it

    @property
    def keys(self) -> dict[str, KeyState]:
        return self.stats.keys

    def reset(self, now: float) -> None:
        """Clear counters, windows, bans and faults."""
        self.stats.reset(now)
        self.faults.clear()

    def set_secret(self, app_key: str, secret: str, now: float, keep_old_s: float = 0.0) -> None:
        """Rotate ``app_key``'s secret (``ValueError`` for an unknown key or an empty secret)."""
        key = self.keys.get(app_key)
        if key is None:
            raise ValueError("unknown app_key")
        key.set_secret(secret, now, keep_old_s)

    def add_fault(self, doc: object, now: float) -> Fault:
        """Start the fault ``doc`` describes (``ValueError`` if it is not valid)."""
        fault = parse_fault(doc, now, self.keys)
        self.faults.add(fault)
        return fault

    def record_ok(self, key: KeyState, requested: int, returned: int) -> None:
        key.ok += 1
        key.items_requested += requested
        key.items_returned += returned

    def _refuse(
        self, key: KeyState | None, code: int | TopError, msg: str = "", *sub: str | None
    ) -> TopError:
        """Count an error answer (for its key, if known) and return it."""
        error = code if isinstance(code, TopError) else TopError(code, msg, *sub)
        if key is None:
            self.stats.unattributed += 1
        else:
            key.errors += 1
        return error

    def _timestamp(self, text: str) -> float | None:
        if text != self._last_ts[0]:
            self._last_ts = (text, parse_timestamp(text))
        return self._last_ts[1]

    def _fault(self, key: KeyState, now: float) -> Literal["outage", "malformed", "code15"] | None:
        """The fault, if any, that answers this call (checked after the call's own checks)."""
        if not self.faults:
            return None
        if self.faults.has("outage", now):
            key.faulted += 1
            return "outage"
        ratio = self.faults.code15_ratio(now)
        if ratio > 0 and self._rng.random() < ratio:
            key.errors += 1
            return "code15"
        if self.faults.has("malformed", now):
            key.faulted += 1
            return "malformed"
        return None

    def decide_top(
        self, params: Mapping[str, str], now: float, wall_now: float
    ) -> TopError | TopCall | FaultAnswer:
        """The answer to a ``/router/rest`` call with ``params`` (query and body merged).

        Where the platform's rule is unknown the simulator chooses: a missing ``sign_method``
        means md5 (the legacy default), ``format`` other than json is 23, a missing ``v`` is 32.
        """
        key = self.keys.get(params.get("app_key", ""))
        if key is not None:
            key.calls += 1
        method = params.get("method")
        if not method:
            return self._refuse(key, 21, "Missing Method")
        if method not in METHODS:
            return self._refuse(key, 22, "Invalid Method", "isv.invalid-method", method)
        if not params.get("app_key"):
            return self._refuse(key, 28, "Missing App Key")
        if key is None or self.faults.revoked(key.key.app_key, now):
            return self._refuse(key, _BAD_KEY)
        version = params.get("v")
        if not version:
            return self._refuse(key, 32, "Missing Version")
        if version != "2.0":
            return self._refuse(key, 34, "Unsupported Version", None, "v must be 2.0")
        if params.get("format", "json") != "json":
            return self._refuse(key, 23, "Invalid Format", None, "only json is served")
        stamp = params.get("timestamp")
        if not stamp:
            return self._refuse(key, 30, "Missing Timestamp")
        moment = self._timestamp(stamp)
        if moment is None or abs(moment - wall_now) > self.max_skew_s:
            sub = f"timestamp {stamp!r} is not within {self.max_skew_s:g} s of GMT+8 time"
            return self._refuse(key, 31, "Invalid Timestamp", None, sub)
        given = params.get("sign")
        if not given:
            return self._refuse(key, 24, "Missing Signature")
        sign_method = params.get("sign_method", "md5")  # the legacy default
        if sign_method not in SIGN_METHODS:
            sub = f"sign_method must be one of {', '.join(sorted(SIGN_METHODS))}"
            return self._refuse(key, 25, "Invalid signature", "isv.invalid-signature", sub)
        signed = given.upper().encode()
        if not any(
            hmac.compare_digest(sign(params, secret, sign_method).encode(), signed)
            for secret in key.accepted_secrets(now)
        ):
            sub = "the signature does not match the parameters"
            return self._refuse(key, 25, "Invalid signature", "isv.invalid-signature", sub)
        wait = self.stats.admit(key, now, self.ban_s)
        if wait is not None:
            sub = f"This ban will last for {ban_seconds(wait)} more seconds"
            return TopError(7, "App Call Limited", "accesscontrol.limited-by-app-access-count", sub)
        name, most = METHODS[method]
        ids = [part.strip() for part in params.get(name, "").split(",") if part.strip()]
        if not ids:
            sub = f"{name} is required"
            return self._refuse(key, 40, "Missing Required Arguments", "isv.missing-parameter", sub)
        if len(ids) > most:
            sub = f"{name}: at most {most} ids, got {len(ids)}"
            return self._refuse(key, 41, "Invalid Arguments", "isv.invalid-parameter", sub)
        if any(self._is_legacy(i) for i in ids):
            return self._refuse(key, _OLD_ID)
        fault = self._fault(key, now)
        if fault == "code15":
            return _REMOTE
        if fault is not None:
            return fault
        return TopCall(key, method, list(dict.fromkeys(ids)), params.get("simplify") == "true")

    def decide_reseller(
        self, query: Mapping[str, str], now: float
    ) -> ResellerError | ResellerCall | FaultAnswer:
        """The answer to a ``/taobao/item_get/`` call (codes: see ``_sim.py``'s docstring)."""
        key = self.keys.get(query.get("key", ""))
        if key is None:
            self.stats.unattributed += 1
            return ResellerError("4005", "key or secret invalid", "key_invalid")
        key.calls += 1
        secret = query.get("secret", "").encode()
        accepted = any(hmac.compare_digest(secret, s.encode()) for s in key.accepted_secrets(now))
        if not accepted or self.faults.revoked(key.key.app_key, now):
            key.errors += 1
            return ResellerError("4005", "key or secret invalid", "key_invalid")
        wait = self.stats.admit(key, now, self.ban_s)
        if wait is not None:
            reason = f"请求频率超限 This ban will last for {ban_seconds(wait)} more seconds"
            return ResellerError("4013", reason, "rate_limited")
        num_iid = query.get("num_iid", "").strip()
        if not num_iid:
            key.errors += 1
            return ResellerError("4000", "missing num_iid", "missing_parameter")
        if self._is_legacy(num_iid):
            key.errors += 1
            return ResellerError("2000", "item not found (old-format id)", "item_not_found")
        fault = self._fault(key, now)
        if fault == "code15":
            return ResellerError("5000", "remote service error", "remote_error")
        if fault is not None:
            return fault
        return ResellerCall(key, num_iid, query.get("is_promotion") == "1")
