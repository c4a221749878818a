"""Limits shared by every replica: one atomic Lua script per decision, over every scope of a call.

A call consumes from its key and the call's other scopes (its egress, its promoter account, the
API method over every key, the key on that method: :mod:`~taogate.quota.scopes`). One
``acquire.lua`` decides all of them at once: nothing is taken unless every scope admits the
call. Each scope keeps a state hash and a list of recent send times under its stable id::

    {<prefix>:limits}:key:<app_key>:state        {<prefix>:limits}:key:<app_key>:sent
    {<prefix>:limits}:account:<name>:state       {<prefix>:limits}:method:<method>:sent  ...

Every limit key carries the same hash tag, ``{<prefix>:limits}``, so all of them are in one hash
slot. On Redis Cluster a script may only touch keys of one slot, and the scopes of one call
cannot be sharded apart: a method's state is shared by every key, an account's by all its keys,
an egress's by the keys routed through it, so no tag narrower than all of them would put every
combination of a call's scopes in one slot, and a decision split over slots would not be
atomic (two replicas could each take the last slot of a method). The cost: all limiter traffic
is on one shard — one script call per call decision and per outcome, a few hundred Lua calls a
second at the platform's rates, each a few tens of µs of Redis CPU — far below what one shard
serves. A key's state stays put when it changes egress (its id does not name the egress).

The scripts read the server's clock (``TIME``), are loaded once and called by ``EVALSHA``
(redis-py's ``Script`` reloads them on ``NOSCRIPT``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib.resources import files
from typing import Any

from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from taogate._credentials import Credential
from taogate.quota.policy import PoolPolicy
from taogate.quota.scopes import Scope
from taogate.quota.sharing import SharedUnavailable, SharedVerdict

__all__ = ["SCOPE_OPS", "ScopeState", "SharedLimits", "SharedState"]

_LUA = files("taogate.quota").joinpath("lua")
KEY_TTL_S = 3 * 86_400  # a day's budget counter must outlive the day
#: The reasons ``acquire.lua`` gives; any other is malformed.
REASONS = frozenset(
    (
        "ok",
        "fresh",
        "quarantined",
        "probing",
        "banned",
        "budget",
        "yield",
        "rate",
        "window",
        "egress",
        "account",
        "method",
        "pair",
    )
)
#: What :meth:`SharedLimits.record_scope` records: a ban (pause, and cut the rate of a scope
#: whose bans cut it, once per ban) or a pause only.
SCOPE_OPS = frozenset(("ban", "pause"))
_MAX_US = KEY_TTL_S * 1_000_000


@dataclass(frozen=True, slots=True)
class SharedState:
    """A credential's shared state after an outcome was recorded (server time, seconds)."""

    banned_until: float
    quarantined: bool
    probe_at: float
    factor: float
    server_now: float


@dataclass(frozen=True, slots=True)
class ScopeState:
    """A scope's shared state after a ban or pause was recorded (server time, seconds)."""

    paused_until: float
    factor: float
    server_now: float


def _unavailable(exc: BaseException) -> SharedUnavailable:
    timeout = isinstance(exc, TimeoutError | RedisTimeoutError)
    return SharedUnavailable(f"shared limits unavailable ({type(exc).__name__})", timeout=timeout)


def _script(name: str) -> str:
    """A limits script with ``values.lua`` (how every script reads untrusted values, and the
    AIMD factor they share) in front of it."""
    return _LUA.joinpath("values.lua").read_text() + _LUA.joinpath(name).read_text()


def _text(value: Any) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


class _Malformed(ValueError):
    """A script's answer that is not what the script returns."""


def _int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int | bytes | str):
        raise _Malformed(f"{type(value).__name__} is not an integer")
    try:
        return int(value)
    except ValueError:
        raise _Malformed("not an integer") from None


def _clamp(value: int, low: int, high: int) -> int:
    return min(max(value, low), high)


class SharedLimits:
    """The GCRA, window guard, bans, quarantine, AIMD and budgets of every key, and the pacing,
    windows, pauses and rate cuts of every other scope its calls consume from."""

    def __init__(
        self,
        client: Any,
        *,
        prefix: str,
        policy: PoolPolicy,
        probe_hold_s: float,
        on_malformed: Callable[[str, str], object] | None = None,
        share: Callable[[], float] = lambda: 1.0,
    ) -> None:
        """``share``: the share of each quota the replicas in shared mode may use now (the
        replicas' ``shared_share``)."""
        self._client = client
        self._on_malformed = on_malformed
        self._prefix = prefix
        self._policy = policy
        self._probe_hold_s = probe_hold_s
        self._share = share
        self._acquire = client.register_script(_script("acquire.lua"))
        self._outcome = client.register_script(_script("outcome.lua"))
        self._scope_outcome = client.register_script(_script("scope_outcome.lua"))

    def scope_keys(self, scope_id: str) -> list[str]:
        """A scope's state hash and send list, under the one hash tag of every limit."""
        base = f"{{{self._prefix}:limits}}:{scope_id}"
        return [f"{base}:state", f"{base}:sent"]

    def keys(self, credential: Credential, scopes: Sequence[Scope] = ()) -> list[str]:
        """The key's state and send list, then each of ``scopes``'s (all in one hash slot)."""
        keys = self.scope_keys(f"key:{credential.app_key}")  # the key scope's id (policy.py)
        for scope in scopes:
            keys += self.scope_keys(scope.id)
        return keys

    async def acquire(
        self, credential: Credential, *, urgent: bool = True, scopes: Sequence[Scope] = ()
    ) -> SharedVerdict:
        """Take a slot for ``credential`` if every replica's shared schedule allows it now, in
        the key and in every one of ``scopes`` (the call's others: egress, account, method,
        key × method), all or none.

        ``urgent`` callers (interactive lookups waiting) that must wait claim the slot they
        wait for; callers that are not urgent are told to ``yield`` it (reason ``"yield"``).
        A wait for one of ``scopes`` (its pause or its pacing) names its kind as the reason.
        """
        p = self._policy
        args: list[str | int | float] = [
            credential.qps,
            p.safety_factor,
            p.burst,
            p.window_guard_s,
            p.recovery_per_s,
            credential.daily_budget or 0,
            KEY_TTL_S,
            self._probe_hold_s,
            self._share(),
            1 if urgent else 0,
            p.claim_s,
        ]
        for scope in scopes:
            args += [
                scope.kind,
                scope.qps or 0,  # not paced: only paused
                scope.pace,
                scope.burst,
                scope.guard_s,
                0 if scope.aimd is None else 1,
            ]
        try:
            answer = await self._acquire(keys=self.keys(credential, scopes), args=args)
        except (RedisError, OSError, TimeoutError) as exc:
            raise _unavailable(exc) from None
        try:
            granted, wait_us, reason, now_us, probe = answer
            verdict = SharedVerdict(
                granted=_int(granted) == 1,
                # clamped: a wait past the keys' lifetime (or below zero) is not one the
                # script computes from sane state; it must neither stall the key nor spin
                wait_s=_clamp(_int(wait_us), 0, _MAX_US) / 1e6,
                reason=_text(reason),
                server_us=_clamp(_int(now_us), 0, 2**62),
                probe=_int(probe) == 1,
            )
        except (_Malformed, TypeError, ValueError) as exc:
            raise self._malformed("acquire", exc) from None
        if verdict.reason not in REASONS:
            raise self._malformed("acquire", _Malformed(f"reason {verdict.reason[:40]!r}"))
        return verdict

    async def record_scope(
        self, scope: Scope, op: str, *, granted_us: int, retry_after: float
    ) -> ScopeState:
        """Record what the upstream said about a scope other than a key, for every replica:
        ``ban`` (pause it ``retry_after`` seconds and, if its bans cut its rate, cut it once
        per ban: a call granted before the ban began does not cut it again) or ``pause``
        (pause only). A pause never shortens one already recorded."""
        if op not in SCOPE_OPS:
            raise ValueError(f"unknown scope outcome {op[:40]!r}")
        aimd = scope.aimd
        p = self._policy
        args = [
            op,
            granted_us,
            retry_after,
            p.aimd_decrease if aimd is None else aimd.decrease,
            p.aimd_min_factor if aimd is None else aimd.min_factor,
            p.recovery_per_s if aimd is None else aimd.recovery_per_s,
            0 if aimd is None else 1,
            KEY_TTL_S,
        ]
        try:
            answer = await self._scope_outcome(keys=self.scope_keys(scope.id)[:1], args=args)
        except (RedisError, OSError, TimeoutError) as exc:
            raise _unavailable(exc) from None
        try:
            paused_us, factor_m, now_us = answer
            now = _clamp(_int(now_us), 0, 2**62)
            return ScopeState(
                paused_until=_clamp(_int(paused_us), 0, now + _MAX_US) / 1e6,
                factor=_clamp(_int(factor_m), 0, 1_000_000) / 1e6,
                server_now=now / 1e6,
            )
        except (_Malformed, TypeError, ValueError) as exc:
            raise self._malformed("scope_outcome", exc) from None

    async def record(
        self,
        credential: Credential,
        op: str,
        *,
        granted_us: int,
        probe: bool,
        retry_after: float = 0.0,
    ) -> SharedState:
        """Record an outcome: ``ban``, ``exhausted`` (the platform says the key's quota of the
        day is spent: every replica answers ``budget`` until midnight in Beijing), ``invalid``,
        ``probe_ok``, ``probe_end``, ``release``, or ``rotated`` (a new secret: a quarantined
        key may be probed now)."""
        p = self._policy
        args = [
            op,
            granted_us,
            retry_after,
            p.aimd_decrease,
            p.aimd_min_factor,
            p.recovery_per_s,
            p.probe_after_s,
            p.max_probe_after_s,
            int(probe),
            KEY_TTL_S,
        ]
        try:
            answer = await self._outcome(keys=self.keys(credential)[:1], args=args)
        except (RedisError, OSError, TimeoutError) as exc:
            raise _unavailable(exc) from None
        try:
            banned_us, quarantined, probe_us, factor_m, now_us = answer
            now = _clamp(_int(now_us), 0, 2**62)
            return SharedState(
                banned_until=_clamp(_int(banned_us), 0, now + _MAX_US) / 1e6,
                quarantined=_int(quarantined) == 1,
                probe_at=_clamp(_int(probe_us), 0, now + _MAX_US) / 1e6,
                factor=_clamp(_int(factor_m), 0, 1_000_000) / 1e6,
                server_now=now / 1e6,
            )
        except (_Malformed, TypeError, ValueError) as exc:
            raise self._malformed("outcome", exc) from None

    def _malformed(self, script: str, exc: Exception) -> SharedUnavailable:
        """A script answered something it never returns: this Redis cannot be trusted with the
        limits; the replica decides locally (and keeps trying it again)."""
        if self._on_malformed is not None:
            self._on_malformed("limits", f"{script}.lua answered {exc}")
        return SharedUnavailable(f"shared limits answered a malformed value ({script})")
