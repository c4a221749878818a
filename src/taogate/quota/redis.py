"""Credential limits shared by every replica: one atomic Lua script per decision.

Each credential's state lives in one hash and one list under the hash tag
``{<prefix>:c:<app_key>}``, so every script touches one slot and runs on Redis Cluster. The
scripts read the server's clock (``TIME``), are loaded once and called by ``EVALSHA``
(redis-py's ``Script`` reloads them on ``NOSCRIPT``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from importlib.resources import files
from typing import Any

from redis.asyncio.cluster import RedisCluster
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from taogate._credentials import DEFAULT_EGRESS, Credential, Egress
from taogate.quota.policy import PoolPolicy
from taogate.quota.sharing import SharedUnavailable, SharedVerdict

__all__ = ["SharedLimits", "SharedState"]

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
    )
)
_MAX_US = KEY_TTL_S * 1_000_000


@dataclass(frozen=True, slots=True)
class SharedState:
    """A credential's shared state after an outcome was recorded (server time, seconds)."""

    banned_until: float
    quarantined: bool
    probe_at: float
    factor: float
    server_now: float


def _unavailable(exc: BaseException) -> SharedUnavailable:
    timeout = isinstance(exc, TimeoutError | RedisTimeoutError)
    return SharedUnavailable(f"shared limits unavailable ({type(exc).__name__})", timeout=timeout)


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
    """The GCRA, window guard, bans, quarantine, AIMD and budgets of every credential."""

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
        """``share``: the share of each key the replicas in shared mode may use now (the
        replicas' ``shared_share``)."""
        self._client = client
        self._on_malformed = on_malformed
        self._prefix = prefix
        self._policy = policy
        self._probe_hold_s = probe_hold_s
        # On a Cluster one script touches one hash slot, so a key's state shares its egress's
        # slot; elsewhere it keeps its own tag, so it stays put when the key changes egress
        # (a credential removed from the config moves the others' turn-by-turn assignment)
        self._cluster = isinstance(client, RedisCluster)
        self._share = share
        self._acquire = client.register_script(_LUA.joinpath("acquire.lua").read_text())
        self._outcome = client.register_script(_LUA.joinpath("outcome.lua").read_text())

    def keys(self, credential: Credential) -> list[str]:
        """The credential's state and send list, then its egress's. On a Cluster all four are
        in the egress's hash slot (a Lua script may only touch keys of one slot there)."""
        egress = f"{{{self._prefix}:e:{credential.egress or DEFAULT_EGRESS}}}"
        key = egress if self._cluster else f"{{{self._prefix}:c:{credential.app_key}}}"
        return [
            f"{key}:c:{credential.app_key}:state",
            f"{key}:c:{credential.app_key}:sent",
            f"{egress}:state",
            f"{egress}:sent",
        ]

    async def acquire(
        self, credential: Credential, *, urgent: bool = True, egress: Egress | None = None
    ) -> SharedVerdict:
        """Take a slot for ``credential`` if every replica's shared schedule allows it now.

        ``urgent`` callers (interactive lookups waiting) that must wait claim the slot they
        wait for; callers that are not urgent are told to ``yield`` it (reason ``"yield"``).
        With ``egress``, the calls of every credential on it together stay under its
        ``max_qps`` too (reason ``"egress"`` when that is what holds the call back).
        """
        p = self._policy
        args = [
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
            0 if egress is None else egress.max_qps,
            p.egress_window_guard_s,
        ]
        try:
            answer = await self._acquire(keys=self.keys(credential), args=args)
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

    async def record(
        self,
        credential: Credential,
        op: str,
        *,
        granted_us: int,
        probe: bool,
        retry_after: float = 0.0,
    ) -> SharedState:
        """Record an outcome: ``ban``, ``invalid``, ``probe_ok``, ``probe_end``, ``release``, or
        ``rotated`` (a new secret: a quarantined key may be probed now)."""
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
