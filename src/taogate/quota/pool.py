"""The credential pool: which app key sends the next call, and when.

Each credential runs at ``qps × safety_factor`` (GCRA, burst 1 by default) and, as a guard
against the platform's own sliding window, never sends its ``floor(qps)``-th next call less than
one second plus ``window_guard_s`` after the one that many calls before. The pool hands out the
credential that can send soonest and reacts to what the upstream says:

- a rate limit (code 7 …) pauses the credential for the ban and halves its rate (AIMD); the rate
  then climbs back by ``recovery_per_s`` of the full rate each second;
- an invalid credential (codes 25/27/29 …) is quarantined; after ``probe_after_s`` (doubling up
  to ``max_probe_after_s``) it is let out for one probe call at a time, half-open style;
- a daily budget, counted per Beijing calendar day, stops a credential until the next day.

Time comes from an injected monotonic clock (and a wall clock for the budget's day).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from enum import StrEnum

from taogate._errors import NoCredentialAvailable
from taogate.providers.base import Credential
from taogate.providers.top import BEIJING
from taogate.quota.gcra import Gcra

__all__ = ["CredentialPool", "CredentialStatus", "Lease", "PoolPolicy"]


class CredentialStatus(StrEnum):
    ACTIVE = "active"
    BANNED = "banned"
    QUARANTINED = "quarantined"
    PROBING = "probing"
    EXHAUSTED = "exhausted"


@dataclass(frozen=True, slots=True, kw_only=True)
class PoolPolicy:
    """How the pool paces and protects credentials."""

    safety_factor: float = 0.8
    burst: int = 1
    window_guard_s: float = 0.02
    aimd_decrease: float = 0.5
    aimd_min_factor: float = 0.25
    recovery_per_s: float = 0.01
    probe_after_s: float = 30.0
    max_probe_after_s: float = 1800.0

    def __post_init__(self) -> None:
        if not 0 < self.safety_factor <= 1:
            raise ValueError("safety_factor must be in (0, 1]")
        if not 0 < self.aimd_min_factor <= 1 or not 0 < self.aimd_decrease < 1:
            raise ValueError("AIMD factors must be in (0, 1)")


@dataclass(slots=True, eq=False)
class _State:
    credential: Credential
    tat: float = 0.0
    sent: deque[float] = field(default_factory=deque)
    banned_until: float = 0.0
    banned_at: float = -math.inf
    factor: float = 1.0
    decreased_at: float = 0.0
    factor_at_decrease: float = 1.0
    quarantined: bool = False
    probe_at: float = 0.0
    probe_after_s: float = 0.0
    probing: bool = False
    day: date | None = None
    calls_today: int = 0
    calls: int = 0
    rate_limited: int = 0
    invalid: int = 0
    cost: Decimal = Decimal(0)
    in_flight: int = 0


@dataclass(frozen=True, slots=True)
class Lease:
    """The right to send one call with ``credential``, granted at ``granted_at``."""

    credential: Credential
    granted_at: float
    state: _State = field(repr=False)
    previous_tat: float = field(repr=False)
    #: the one call a quarantined credential is let out for; only its outcome decides
    probe: bool = False


class CredentialPool:
    """Credentials with their limits; :meth:`acquire` waits for the one that can send soonest."""

    def __init__(
        self,
        credentials: Sequence[Credential],
        policy: PoolPolicy | None = None,
        *,
        clock: Callable[[], float],
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        if not credentials:
            raise ValueError("the pool needs at least one credential")
        self.policy = policy or PoolPolicy()
        self._clock = clock
        self._wall_clock = wall_clock
        self._states = [_State(c) for c in credentials]
        self._changed = asyncio.Event()

    # --- rates -------------------------------------------------------------------------

    def _factor(self, s: _State, now: float) -> float:
        if s.factor >= 1.0:
            return 1.0
        climbed = s.factor_at_decrease + self.policy.recovery_per_s * (now - s.decreased_at)
        s.factor = min(1.0, climbed)
        return s.factor

    def rate(self, credential: Credential) -> float:
        """The calls per second the pool allows ``credential`` now."""
        s = self._state(credential)
        return s.credential.qps * self.policy.safety_factor * self._factor(s, self._clock())

    def total_rate(self) -> float:
        """Calls per second all usable credentials allow together now."""
        now = self._clock()
        return sum(
            s.credential.qps * self.policy.safety_factor * self._factor(s, now)
            for s in self._states
            if self._usable(s, now)
        )

    # --- readiness ---------------------------------------------------------------------

    def _budget_left(self, s: _State) -> bool:
        budget = s.credential.daily_budget
        if budget is None:
            return True
        today = datetime.fromtimestamp(self._wall_clock(), tz=UTC).astimezone(BEIJING).date()
        if s.day != today:
            s.day, s.calls_today = today, 0
        return s.calls_today < budget

    def _usable(self, s: _State, now: float) -> bool:
        if s.quarantined and (s.probing or now < s.probe_at):
            return False
        return self._budget_left(s)

    def _ready_at(self, s: _State, now: float) -> float:
        gcra = Gcra(
            rate=s.credential.qps * self.policy.safety_factor * self._factor(s, now),
            burst=self.policy.burst,
        )
        at = max(now, gcra.ready_at(s.tat, now), s.banned_until)
        limit = max(1, math.floor(s.credential.qps))
        if len(s.sent) >= limit:
            at = max(at, s.sent[-limit] + 1.0 + self.policy.window_guard_s)
        if s.quarantined:
            at = max(at, s.probe_at)
        return at

    def next_ready(self) -> tuple[Credential | None, float]:
        """The credential that can send soonest and when; ``(None, t)`` if none is usable now.

        With none usable, ``t`` is when a quarantined credential may next be probed
        (``inf`` when only budgets are exhausted).
        """
        now = self._clock()
        best: _State | None = None
        best_at = math.inf
        for s in self._states:
            if not self._usable(s, now):
                continue
            at = self._ready_at(s, now)
            if at < best_at or (
                at == best_at and best is not None and s.in_flight < best.in_flight
            ):
                best, best_at = s, at
        if best is None:
            probes = [s.probe_at for s in self._states if s.quarantined and not s.probing]
            return None, min(probes, default=math.inf)
        return best.credential, best_at

    def try_acquire(self) -> Lease | None:
        """A lease if some credential can send right now."""
        credential, at = self.next_ready()
        now = self._clock()
        if credential is None or at > now:
            return None
        return self._grant(self._state(credential), now)

    async def acquire(self, *, deadline: float | None = None) -> Lease:
        """Wait for the credential that can send soonest and take its slot.

        Raises :class:`NoCredentialAvailable` when none is usable, or none will be before
        ``deadline``. Waits sleep until the computed time (or a change in the pool), never poll.
        """
        while True:
            credential, at = self.next_ready()
            now = self._clock()
            if credential is None:
                retry = None if math.isinf(at) else max(0.0, at - now)
                raise NoCredentialAvailable("no usable credential", retry_after=retry)
            if at <= now:
                return self._grant(self._state(credential), now)
            if deadline is not None and at > deadline:
                raise NoCredentialAvailable(
                    "no credential can send before the deadline", retry_after=at - now
                )
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), timeout=at - now)

    def _grant(self, s: _State, now: float) -> Lease:
        gcra = Gcra(
            rate=s.credential.qps * self.policy.safety_factor * self._factor(s, now),
            burst=self.policy.burst,
        )
        previous = s.tat
        decision = gcra.check(s.tat, now)
        s.tat = decision.tat if decision.allowed else max(s.tat, now) + gcra.interval
        s.sent.append(now)
        limit = max(1, math.floor(s.credential.qps))
        while len(s.sent) > limit:
            s.sent.popleft()
        probe = s.quarantined  # _usable() lets a quarantined credential out for one probe only
        if probe:
            s.probing = True
        s.in_flight += 1
        s.calls += 1
        s.calls_today += 1
        s.cost += s.credential.cost_per_call
        return Lease(s.credential, now, s, previous, probe)

    # --- outcomes ----------------------------------------------------------------------

    def release_unused(self, lease: Lease) -> None:
        """Give back a lease that sent nothing: its slot, its call and its cost."""
        s = lease.state
        s.in_flight -= 1
        s.calls -= 1
        s.calls_today = max(0, s.calls_today - 1)  # the Beijing day may have turned meanwhile
        s.cost -= s.credential.cost_per_call
        if s.sent and s.sent[-1] == lease.granted_at:
            s.sent.pop()
        if s.tat > lease.previous_tat:
            s.tat = lease.previous_tat
        if lease.probe:
            s.probing = False
        self._changed.set()

    def on_success(self, lease: Lease) -> None:
        """The call went through; a successful probe ends the quarantine.

        A call sent before the quarantine began proves nothing about the credential now.
        """
        s = lease.state
        s.in_flight -= 1
        if lease.probe:
            s.quarantined = s.probing = False
            s.probe_after_s = 0.0
        self._changed.set()

    def on_done(self, lease: Lease) -> None:
        """The call ended in a way that says nothing about the credential."""
        s = lease.state
        s.in_flight -= 1
        if lease.probe:
            s.probing = False
        self._changed.set()

    def on_rate_limited(self, lease: Lease, retry_after: float) -> None:
        """Code 7 and kin: pause the credential for the ban and halve its rate, once per ban.

        Calls already on the wire when the ban began come back limited too; they extend the
        ban but do not halve the rate again.
        """
        s = lease.state
        now = self._clock()
        s.in_flight -= 1
        s.rate_limited += 1
        if lease.granted_at >= s.banned_at:
            factor = self._factor(s, now)
            s.factor = s.factor_at_decrease = max(
                self.policy.aimd_min_factor, factor * self.policy.aimd_decrease
            )
            s.decreased_at = now
            s.banned_at = now
        s.banned_until = max(s.banned_until, now + retry_after)
        if lease.probe:
            s.probing = False
        self._changed.set()

    def on_invalid(self, lease: Lease) -> None:
        """Codes 25/27/29 and kin: quarantine; probe again later, backing off per failed probe.

        Calls already on the wire when the quarantine began do not move the probe time.
        """
        s = lease.state
        s.in_flight -= 1
        s.invalid += 1
        if s.quarantined and not lease.probe:
            return
        now = self._clock()
        s.probe_after_s = min(
            self.policy.max_probe_after_s,
            max(self.policy.probe_after_s, s.probe_after_s * 2),
        )
        s.quarantined = True
        s.probing = False
        s.probe_at = now + s.probe_after_s
        self._changed.set()

    # --- state for tools and metrics ---------------------------------------------------

    def status(self, credential: Credential) -> CredentialStatus:
        s = self._state(credential)
        now = self._clock()
        if s.quarantined:
            return CredentialStatus.PROBING if s.probing else CredentialStatus.QUARANTINED
        if not self._budget_left(s):
            return CredentialStatus.EXHAUSTED
        if s.banned_until > now:
            return CredentialStatus.BANNED
        return CredentialStatus.ACTIVE

    def snapshot(self) -> list[dict[str, object]]:
        """One row per credential (masked key, status, rate, ban, calls, cost) for tools."""
        now = self._clock()
        rows: list[dict[str, object]] = []
        for s in self._states:
            c = s.credential
            rows.append(
                {
                    "credential": c.masked,
                    "status": str(self.status(c)),
                    "rate": round(c.qps * self.policy.safety_factor * self._factor(s, now), 3),
                    "configured_qps": c.qps,
                    "banned_for_s": round(max(0.0, s.banned_until - now), 3),
                    "probe_in_s": round(max(0.0, s.probe_at - now), 3) if s.quarantined else None,
                    "calls": s.calls,
                    "calls_today": s.calls_today,
                    "daily_budget": c.daily_budget,
                    "rate_limited": s.rate_limited,
                    "invalid": s.invalid,
                    "in_flight": s.in_flight,
                    "cost": str(s.cost),
                }
            )
        return rows

    @property
    def credentials(self) -> list[Credential]:
        return [s.credential for s in self._states]

    def _state(self, credential: Credential) -> _State:
        for s in self._states:
            if s.credential is credential or s.credential.app_key == credential.app_key:
                return s
        raise KeyError(credential.masked)
