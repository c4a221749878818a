"""The simulator's decisions: what the upstream answers a call, in the platform's order of checks
(listed in ``_sim.py``'s docstring).

Pure state driven by clock readings passed in, so unit tests move a fake clock and never sleep.
The HTTP layer (``_sim.py``) asks :class:`SimState` what to answer and renders the answer; the
keys', accounts' and methods' state and counters are in ``_sim_keys.py`` (their windows in
``_sim_limits.py``), the faults in ``_sim_faults.py``.
"""

from __future__ import annotations

import hmac
import ipaddress
import random
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Final, Literal

from taogate._beijing import BEIJING
from taogate.providers.top import METHODS, sign
from taogate.testing._sim_faults import Fault, Faults, parse_fault
from taogate.testing._sim_keys import KeyState, SimAccount, SimKey, Stats
from taogate.testing._sim_limits import ban_seconds

__all__ = [
    "FaultAnswer",
    "ResellerCall",
    "ResellerError",
    "SimState",
    "TopCall",
    "TopError",
    "parse_timestamp",
]

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
_IP_LIMIT: Final = "isv.permission-ip-whitelist-limit"
_ACCOUNT = TopError(15, "Remote service error", "9100", "account call frequency exceeded")
_APP_LIMITED: Final = "App Call Limited"


def _limited(sub_code: str, wait: float) -> TopError:
    """A code 7 whose ban lasts ``wait`` more seconds."""
    sub_msg = f"This ban will last for {ban_seconds(wait)} more seconds"
    return TopError(7, _APP_LIMITED, f"accesscontrol.{sub_code}", sub_msg)


def parse_timestamp(text: str) -> float | None:
    """Epoch seconds of a TOP ``timestamp``: ``yyyy-MM-dd HH:mm:ss`` in GMT+8, or epoch ms."""
    if text.isascii() and text.isdigit():
        return int(text) / 1000.0
    try:
        moment = datetime.strptime(text, "%Y-%m-%d %H:%M:%S")  # GMT+8, set below
    except ValueError:
        return None
    return moment.replace(tzinfo=BEIJING).timestamp()


def _address(remote: str | None) -> str:
    """A peer address as a whitelist lists it: normalised, an IPv4-mapped IPv6 one as IPv4."""
    if not remote:
        return "unknown"
    try:
        ip = ipaddress.ip_address(remote.partition("%")[0])
    except ValueError:
        return remote
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ip)


class SimState:
    """What the upstream answers a call, in the platform's order of checks, and the counts."""

    def __init__(
        self,
        keys: Iterable[SimKey],
        *,
        accounts: Iterable[SimAccount] = (),
        method_qps: Mapping[str, float] | None = None,
        ban_s: float,
        method_ban_s: float = 3.0,
        pair_ban_s: float = 2.0,
        max_skew_s: float,
        cost_per_call: Decimal,
        is_legacy: Callable[[str], bool],
        rng: random.Random,
        now: float,
    ) -> None:
        self.stats = Stats(keys, cost_per_call, accounts=accounts, method_qps=method_qps)
        self.stats.started = now
        self.faults = Faults()
        self.ban_s = ban_s
        self.method_ban_s = method_ban_s
        self.pair_ban_s = pair_ban_s
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
        """Count a served call (a reseller's, or a TOP call's part of :meth:`record_top_ok`)."""
        key.ok += 1
        key.items_requested += requested
        key.items_returned += returned

    def record_top_ok(self, call: TopCall, returned: int) -> None:
        """Count a served TOP call for its key, its account and its method."""
        self.record_ok(call.key, len(call.ids), returned)
        if call.key.account is not None:
            call.key.account.ok += 1
        self.stats.method(call.method).ok += 1

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

    def _not_whitelisted(self, key: KeyState, remote: str | None) -> str | None:
        """The source address, as the refusal names it, if ``key`` may not call from it."""
        whitelist = key.key.whitelist
        if not whitelist:
            return None
        address = _address(remote)
        if address in whitelist:
            return None
        key.code11 += 1
        key.errors += 1
        self.stats.source(address).code11 += 1
        return address

    def _limit_top(self, key: KeyState, method: str, now: float, wall: float) -> TopError | None:
        """The rate limits, in order (``_sim.py``'s docstring): the refusal of the first one
        over, or ``None`` — and then the call enters every window."""
        self.stats.reach(key, now)
        api = self.stats.method(method)
        wait = api.check(now, self.method_ban_s)
        if wait is None and self.faults:  # a method_ban fault: the method's cap, injected
            banned = self.faults.banned_for("method_ban", now)
            if banned > 0:
                api.code7 += 1
                wait = banned
        if wait is not None:
            key.code7 += 1
            key.code7_api += 1
            return _limited("limited-by-api-access-count", wait)
        account = key.account
        if account is not None and not account.check(now):
            key.code15_9100 += 1
            return self._refuse(key, _ACCOUNT)
        wait = key.check_window(now, wall, self.ban_s)
        if wait is not None:
            return _limited("limited-by-app-access-count", wait)
        wait = key.check_pair(method, now, self.pair_ban_s)
        if wait is not None:
            return _limited("limited-by-app-api-access-count", wait)
        wait = key.check_day(wall)
        if wait is not None:
            return _limited("limited-by-app-access-count", wait)
        # every limit let the call through: only now does it count in their windows
        if api.qps is not None:
            api.window.enter(now)
        if account is not None:
            account.window.enter(now)
        key.enter(now, wall, method)
        return None

    def decide_top(
        self, params: Mapping[str, str], now: float, wall_now: float, remote: str | None = None
    ) -> TopError | TopCall | FaultAnswer:
        """The answer to a ``/router/rest`` call with ``params`` (query and body merged) from
        the source address ``remote`` (``None``: unknown, refused by any whitelist).

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
        address = self._not_whitelisted(key, remote)
        if address is not None:
            sub = f"ip {address} is not in the app's whitelist"
            return TopError(11, "Insufficient ISV Permissions", _IP_LIMIT, sub)
        limited = self._limit_top(key, method, now, wall_now)
        if limited is not None:
            return limited
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
        self, query: Mapping[str, str], now: float, wall_now: float, remote: str | None = None
    ) -> ResellerError | ResellerCall | FaultAnswer:
        """The answer to a ``/taobao/item_get/`` call from ``remote`` (codes: see ``_sim.py``'s
        docstring). The key's whitelist, window and daily quota apply; accounts and method caps
        are the platform's, not a reseller's."""
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
        address = self._not_whitelisted(key, remote)
        if address is not None:
            return ResellerError("4003", f"ip {address} is not allowed for this key", "ip_denied")
        self.stats.reach(key, now)
        wait = key.check_window(now, wall_now, self.ban_s)
        if wait is None:
            wait = key.check_day(wall_now)
        if wait is not None:
            why = "今日调用已超量" if key.day.spent else "请求频率超限"
            reason = f"{why} This ban will last for {ban_seconds(wait)} more seconds"
            return ResellerError("4013", reason, "rate_limited")
        key.enter(now, wall_now, None)
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
