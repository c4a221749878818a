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

A credential's secret can be replaced while it is in use (:meth:`CredentialPool.replace_secret`,
a rotation): the next leases carry the new secret, calls in flight finish with the one they were
signed with, and the credential keeps its limits, bans and counts.

Time comes from an injected monotonic clock (and a wall clock for the budget's day).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import date
from decimal import Decimal
from enum import StrEnum
from typing import Protocol

from taogate._beijing import beijing_date
from taogate._credentials import DEFAULT_EGRESS, IP_QPS, Credential, Egress
from taogate._errors import NoCredentialAvailable, TaogateError
from taogate._masking import mask_url
from taogate.quota.gcra import Gcra

__all__ = [
    "CredentialPool",
    "CredentialStatus",
    "FixedShare",
    "Lease",
    "PoolPolicy",
    "ReplicaView",
    "SharedLimiter",
    "SharedUnavailable",
    "SharedVerdict",
]

log = logging.getLogger("taogate.pool")


class SharedUnavailable(TaogateError):
    """The shared limiter (Redis) failed; ``timeout`` tells a slow answer from a refusal."""

    def __init__(self, message: str, *, timeout: bool = False) -> None:
        super().__init__(message)
        self.timeout = timeout


@dataclass(frozen=True, slots=True)
class SharedVerdict:
    """The shared limiter's answer: granted now, or how long to wait and why."""

    granted: bool
    wait_s: float
    reason: str
    server_us: int
    probe: bool


class SharedLimiter(Protocol):
    """The seam to limits shared by every replica (``taogate.replicas``): one call per decision."""

    async def acquire(
        self, credential: Credential, *, urgent: bool = True, egress: Egress | None = None
    ) -> SharedVerdict: ...

    async def record(
        self,
        credential: Credential,
        op: str,
        *,
        granted_us: int,
        probe: bool,
        retry_after: float = 0.0,
    ) -> object: ...


class ReplicaView(Protocol):
    """The seam to the replicas (``taogate.replicas``): whether they decide in the shared limiter
    now, this replica's share of each quota while it decides alone, and where a failure of the
    shared limiter is reported. The replicas announce a change of mode to the callbacks given
    to :meth:`subscribe` (the seconds every credential should pause across it)."""

    @property
    def sharing(self) -> bool: ...

    @property
    def local_share(self) -> float: ...

    def lost(self, exc: BaseException) -> None: ...

    def subscribe(self, on_change: Callable[[float], object]) -> None: ...


@dataclass(frozen=True, slots=True)
class FixedShare:
    """A :class:`ReplicaView` of a process that always decides alone, for ``share`` of each
    quota (``taogate serve --workers N`` without Redis: ``1 / N``)."""

    share: float = 1.0

    @property
    def sharing(self) -> bool:
        return False

    @property
    def local_share(self) -> float:
        return self.share

    def lost(self, exc: BaseException) -> None:
        """Nothing is shared, so nothing is lost."""

    def subscribe(self, on_change: Callable[[float], object]) -> None:
        """The mode never changes."""


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
    window_guard_s: float = 0.05  # jitter between a grant and the upstream seeing the call
    #: extra margin of a replica's own window while it decides alone for a share of the quota
    local_guard_s: float = 0.1
    #: how long past its slot an urgent (interactive) waiter's claim holds other replicas'
    #: refresh and bulk calls off it: the waiter's wake-up and round trip to Redis
    claim_s: float = 0.03
    #: the window guard of an egress's cap (of all its keys' calls together): as a key's. Measured
    #: on loopback, 40 and 45 ms let a 21st call into one second now and then (send jitter)
    egress_window_guard_s: float = 0.05
    #: transport failures in a row after which an egress pauses (while another one works)
    egress_failures: int = 3
    #: the first pause of a failing egress; each further pause doubles, up to the max
    egress_pause_s: float = 5.0
    max_egress_pause_s: float = 120.0
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
class _EgressState:
    egress: Egress
    tat: float = 0.0
    sent: deque[float] = field(default_factory=deque)
    #: not before this (local clock): what the shared limiter last said about this egress
    hold_until: float = 0.0
    #: paused after transport failures in a row (``failures``), for ``pause_s``
    paused_until: float = 0.0
    failures: int = 0
    pause_s: float = 0.0
    calls: int = 0
    unreachable: int = 0


@dataclass(slots=True, eq=False)
class _State:
    credential: Credential
    egress: _EgressState
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
    #: not before this (local clock): what the shared limiter last said about this credential
    hold_until: float = 0.0
    #: not before this for calls that are not urgent: another replica's interactive lookups
    #: claimed the next slot (the shared limiter said ``yield``)
    yield_until: float = 0.0
    #: whether the wait in ``hold_until`` was asked for urgently (so it is claimed in Redis)
    hold_claimed: bool = False
    shared_reason: str = ""


@dataclass(frozen=True, slots=True)
class Lease:
    """The right to send one call with ``credential``, granted at ``granted_at``."""

    credential: Credential
    granted_at: float
    state: _State = field(repr=False)
    previous_tat: float = field(repr=False)
    previous_egress_tat: float = field(repr=False)
    #: the schedules this grant left (a give-back rolls them back only if nothing came after)
    tat_after: float = field(repr=False)
    egress_tat_after: float = field(repr=False)
    #: the local time the pool asked for this slot (before any round trip to Redis): how late
    #: a call leaves is counted from here, so a stall while waiting for the answer counts too
    asked_at: float = field(repr=False)
    #: the one call a quarantined credential is let out for; only its outcome decides
    probe: bool = False
    #: server time (µs) of the shared grant; ``None`` when the lease was granted locally
    server_us: int | None = None


#: An egress paces its keys' calls with room for one call of catch-up, so that a grant made
#: late (timers, a round trip to Redis) does not lose its slot for good; its window (no more
#: than ``max_qps`` calls in any second plus the guard) is what holds the cap.
EGRESS_BURST = 2

_SHARED_STATUS = {
    "banned": CredentialStatus.BANNED,
    "quarantined": CredentialStatus.QUARANTINED,
    "probing": CredentialStatus.PROBING,
    "budget": CredentialStatus.EXHAUSTED,
}


class CredentialPool:
    """Credentials with their limits; :meth:`acquire` waits for the one that can send soonest."""

    def __init__(
        self,
        credentials: Sequence[Credential],
        policy: PoolPolicy | None = None,
        *,
        clock: Callable[[], float],
        wall_clock: Callable[[], float] = time.time,
        egresses: Sequence[Egress] = (),
        shared: SharedLimiter | None = None,
        replicas: ReplicaView | None = None,
        shared_timeout_s: float = 0.25,
        recheck_secret: Callable[[str], object] | None = None,
    ) -> None:
        """``shared``: the limiter every replica decides in, while ``replicas`` (a
        :class:`ReplicaView`) says they share; without a view, the limiter is used until it
        fails. Without either, this process decides alone for ``replicas.local_share``.

        ``recheck_secret`` is called with the app key of a refused credential before it is
        quarantined, so a newer secret (a rotation not yet picked up) can be swapped in with
        :meth:`replace_secret`."""
        if not credentials:
            raise ValueError("the pool needs at least one credential")
        self.policy = policy or PoolPolicy()
        self._clock = clock
        self._wall_clock = wall_clock
        self._egresses = {e.name: _EgressState(e) for e in egresses}
        self._states = []
        for c in credentials:
            name = c.egress or DEFAULT_EGRESS
            if name not in self._egresses:
                if egresses and c.egress is not None:
                    raise ValueError(f"credential {c.masked} names unknown egress {name!r}")
                # credentials naming none share one implicit egress at the platform's IP limit
                implicit = Egress(name=name, max_qps=IP_QPS * self.policy.safety_factor)
                self._egresses[name] = _EgressState(implicit)
            self._states.append(_State(c, self._egresses[name]))
        self._changed = asyncio.Event()
        #: limits shared with other replicas, used while ``replicas`` says they share
        self._limiter = shared
        self._replicas: ReplicaView = replicas or FixedShare()
        self._replicas.subscribe(self._on_mode_change)
        #: the longest one question to the shared limiter may take
        self.shared_timeout_s = shared_timeout_s
        self._recheck_secret = recheck_secret
        self._background: set[asyncio.Task[None]] = set()

    # --- replicas ----------------------------------------------------------------------

    @property
    def shared(self) -> SharedLimiter | None:
        """The shared limiter when the replicas decide in it now; ``None``: this process
        decides alone."""
        if self._limiter is None or (not self._replicas.sharing and not self._standalone_limiter):
            return None
        return self._limiter

    @property
    def _standalone_limiter(self) -> bool:
        # a limiter without a view of the replicas (a library user's, a test's) is used until
        # it fails
        return isinstance(self._replicas, FixedShare)

    @property
    def share(self) -> float:
        """This replica's share of each quota: all of it while the replicas share limits, else
        its part (``1 / live replicas``)."""
        return 1.0 if self.shared is not None else self._replicas.local_share

    def _on_mode_change(self, pause_s: float) -> None:
        """The replicas changed mode: hold every credential across the change."""
        self.pause_all(pause_s + self.policy.window_guard_s)

    # --- rates -------------------------------------------------------------------------

    def _factor(self, s: _State, now: float) -> float:
        if s.factor >= 1.0:
            return 1.0
        climbed = s.factor_at_decrease + self.policy.recovery_per_s * (now - s.decreased_at)
        s.factor = min(1.0, climbed)
        return s.factor

    def _rate(self, s: _State, now: float) -> float:
        return s.credential.qps * self.policy.safety_factor * self._factor(s, now) * self.share

    def rate(self, credential: Credential) -> float:
        """The calls per second the pool allows ``credential`` now."""
        return self._rate(self._state(credential), self._clock())

    def send_slack(self, lease: Lease) -> float:
        """How late after its grant ``lease``'s call may still leave safely, in seconds.

        Paced at ``rate``, ``limit`` calls span ``limit / rate`` seconds; what that exceeds the
        platform's one-second window by, plus the window guard, is how much a call can slip
        before it would crowd the calls granted after it into one window.
        """
        s, p = lease.state, self.policy
        rate = max(self._rate(s, lease.granted_at), 1e-9)
        slack = max(0.0, self._window_limit(s) / rate - 1.0)
        e = s.egress
        limit = self._egress_limit(e)
        # the egress has no slack when its keys together can fill it (other replicas' calls
        # count in its window too, so this replica's own sends cannot tell)
        keys = sum(self._rate(o, lease.granted_at) for o in self._states if o.egress is e)
        if keys >= 0.8 * self._egress_rate(e):
            egress_slack = max(0.0, limit / self._egress_rate(e) - 1.0)
            return min(slack + self.policy.window_guard_s, egress_slack + p.egress_window_guard_s)
        return slack + self.policy.window_guard_s

    def total_rate(self) -> float:
        """Calls per second all usable credentials allow together now."""
        now = self._clock()
        total = 0.0
        for e in self._egresses.values():
            if e.paused_until > now:
                continue
            keys = sum(
                self._rate(s, now) for s in self._states if s.egress is e and self._usable(s, now)
            )
            total += min(keys, self._egress_rate(e))  # an egress caps its keys together
        return total

    # --- readiness ---------------------------------------------------------------------

    def _budget_left(self, s: _State) -> bool:
        budget = s.credential.daily_budget
        if budget is None:
            return True
        today = beijing_date(self._wall_clock())
        if s.day != today:
            s.day, s.calls_today = today, 0
        # deciding alone, a replica spends only its share of the day's budget
        return s.calls_today + 1 <= budget * self.share + 1e-9

    def _usable(self, s: _State, now: float) -> bool:
        if s.quarantined and (s.probing or now < s.probe_at):
            return False
        return self._budget_left(s)

    def _window_limit(self, s: _State) -> int:
        """Calls this process may make in one platform window: its share of the key's qps.

        Deciding alone for a share of the quota, each replica keeps its own window with the
        guard's margin, so the replicas' windows add up to the platform's, jitter included.
        """
        return max(1, math.floor(s.credential.qps * self.share + 1e-9))

    def _ready_at(self, s: _State, now: float, urgent: bool = True) -> float:
        gcra = Gcra(rate=self._rate(s, now), burst=self.policy.burst)
        at = max(now, gcra.ready_at(s.tat, now), s.banned_until, s.hold_until)
        if not urgent:
            at = max(at, s.yield_until)
        limit = self._window_limit(s)
        if len(s.sent) >= limit:
            guard = self.policy.window_guard_s
            if self.share < 1.0:  # deciding alone: no shared window absorbs the others' jitter
                guard += self.policy.local_guard_s
            at = max(at, s.sent[-limit] + 1.0 + guard)
        if s.quarantined:
            at = max(at, s.probe_at)
        return max(at, self._egress_ready_at(s.egress, now))

    def _egress_rate(self, e: _EgressState) -> float:
        return e.egress.max_qps * self.share

    def _egress_limit(self, e: _EgressState) -> int:
        return max(1, math.floor(e.egress.max_qps * self.share + 1e-9))

    def _egress_ready_at(self, e: _EgressState, now: float) -> float:
        """When the egress lets one more call out: its pacing, its window, a pause."""
        gcra = Gcra(rate=self._egress_rate(e), burst=EGRESS_BURST)
        at = max(gcra.ready_at(e.tat, now), e.hold_until, e.paused_until)
        limit = self._egress_limit(e)
        if len(e.sent) >= limit:
            guard = self.policy.egress_window_guard_s
            if self.share < 1.0:
                guard += self.policy.local_guard_s
            at = max(at, e.sent[-limit] + 1.0 + guard)
        return at

    def next_ready(self, *, urgent: bool = True) -> tuple[Credential | None, float]:
        """The credential that can send soonest and when; ``(None, t)`` if none is usable now.

        With none usable, ``t`` is when a quarantined credential may next be probed
        (``inf`` when only budgets are exhausted). Calls that are not ``urgent`` also wait out
        slots that other replicas' interactive lookups claimed.
        """
        now = self._clock()
        best: _State | None = None
        best_at = math.inf
        for s in self._states:
            if not self._usable(s, now):
                continue
            at = self._ready_at(s, now, urgent)
            # ties (an egress holding every key back): fewest calls in flight, then the key
            # used least recently, so calls spread over the keys instead of wearing one out
            if at < best_at or (
                at == best_at
                and best is not None
                and (s.in_flight, s.tat) < (best.in_flight, best.tat)
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

    async def acquire(
        self, *, deadline: float | None = None, urgent: Callable[[], bool] | None = None
    ) -> Lease:
        """Wait for the credential that can send soonest and take its slot.

        Raises :class:`NoCredentialAvailable` when none is usable, or none will be before
        ``deadline``. Waits sleep until the computed time (or a change in the pool, or
        :meth:`wake`), never poll. ``urgent`` tells, each time the pool asks the shared
        limiter, whether interactive lookups are waiting (default: always): with replicas
        sharing a key, urgent waiters claim their slot and the others' bulk calls yield it.
        """
        while True:
            is_urgent = True if urgent is None else urgent()
            credential, at = self.next_ready(urgent=is_urgent)
            now = self._clock()
            if credential is None:
                retry = None if math.isinf(at) else max(0.0, at - now)
                raise NoCredentialAvailable("no usable credential", retry_after=retry)
            s = self._state(credential)
            # an urgent caller about to wait out what Redis said to a non-urgent ask claims
            # the slot now, or another replica's bulk could take it when the wait ends
            claim = (
                is_urgent
                and self.shared is not None
                and at > now
                and not s.hold_claimed
                and (s.hold_until > now or s.egress.hold_until > now)
            )
            if at <= now or claim:
                if self.shared is None:
                    return self._grant(s, now, asked_at=now)
                verdict = await self._ask_shared(s, urgent=is_urgent)
                if verdict is None:  # Redis failed: the owner switched to local limits
                    continue
                if verdict.granted:
                    return self._grant(s, self._clock(), verdict, asked_at=now)
                until = self._clock() + verdict.wait_s
                if verdict.reason == "yield":
                    s.yield_until = max(s.yield_until, until)
                    continue
                s.hold_claimed = is_urgent
                if verdict.reason == "egress":  # every credential on it waits
                    s.egress.hold_until = max(s.egress.hold_until, until)
                    continue
                s.hold_until = max(s.hold_until, until)
                s.shared_reason = verdict.reason
                continue
            if deadline is not None and at > deadline:
                raise NoCredentialAvailable(
                    "no credential can send before the deadline", retry_after=at - now
                )
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), timeout=at - now)

    def _grant(
        self,
        s: _State,
        now: float,
        verdict: SharedVerdict | None = None,
        *,
        asked_at: float | None = None,
    ) -> Lease:
        gcra = Gcra(rate=self._rate(s, now), burst=self.policy.burst)
        previous = s.tat
        decision = gcra.check(s.tat, now)
        s.tat = decision.tat if decision.allowed else max(s.tat, now) + gcra.interval
        s.sent.append(now)
        limit = max(1, math.floor(s.credential.qps))  # keep enough for any share
        while len(s.sent) > limit:
            s.sent.popleft()
        e = s.egress
        previous_egress = e.tat
        egress_gcra = Gcra(rate=self._egress_rate(e), burst=EGRESS_BURST)
        e.tat = max(e.tat, now) + egress_gcra.interval
        e.sent.append(now)
        while len(e.sent) > max(1, math.floor(e.egress.max_qps)):
            e.sent.popleft()
        e.calls += 1
        # _usable() lets a quarantined credential out for one probe only; with shared limits the
        # shared state says whether this call is the probe
        probe = s.quarantined or (verdict is not None and verdict.probe)
        if probe:
            s.probing = True
        s.shared_reason = ""
        s.hold_claimed = False
        s.in_flight += 1
        s.calls += 1
        s.calls_today += 1
        s.cost += s.credential.cost_per_call
        return Lease(
            s.credential,
            now,
            s,
            previous,
            previous_egress,
            s.tat,
            e.tat,
            now if asked_at is None else asked_at,
            probe,
            None if verdict is None else verdict.server_us,
        )

    def wake(self) -> None:
        """Make a waiting :meth:`acquire` look again (interactive work arrived)."""
        self._changed.set()

    async def _ask_shared(self, s: _State, *, urgent: bool = True) -> SharedVerdict | None:
        assert self.shared is not None
        try:
            async with asyncio.timeout(self.shared_timeout_s):  # pool wait, connect and read
                return await self.shared.acquire(
                    s.credential, urgent=urgent, egress=s.egress.egress
                )
        except TimeoutError:
            self._shared_failed(SharedUnavailable("shared limits timed out", timeout=True))
            return None
        except SharedUnavailable as exc:
            self._shared_failed(exc)
            return None

    def _shared_failed(self, exc: BaseException) -> None:
        log.warning("shared limits unavailable: %s; deciding locally", exc)
        if self._standalone_limiter:
            self._limiter = None
        self._replicas.lost(exc)

    def _tell_shared(self, lease: Lease, op: str, retry_after: float = 0.0) -> None:
        """Record an outcome in the shared state, in the background (it never blocks a call)."""
        shared = self.shared
        if shared is None or lease.server_us is None:
            return

        async def record() -> None:
            try:
                await shared.record(
                    lease.credential,
                    op,
                    granted_us=lease.server_us or 0,
                    probe=lease.probe,
                    retry_after=retry_after,
                )
            except SharedUnavailable as exc:
                self._shared_failed(exc)

        task = asyncio.get_running_loop().create_task(record())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def pause_all(self, seconds: float, reason: str = "switch") -> None:
        """Hold every credential for ``seconds`` (when the limiter changes hands, so calls from
        before and after the change never share a one-second window).

        Each credential resumes at a random point of its next interval, so replicas that
        paused together do not all send at the same instant.
        """
        now = self._clock()
        for s in self._states:
            jitter = random.uniform(0.0, 1.0 / max(self._rate(s, now), 1e-9))
            s.hold_until = max(s.hold_until, now + seconds + jitter)
            s.shared_reason = reason
        self._changed.set()

    async def aclose(self) -> None:
        """Cancel outcome recordings still under way."""
        for task in list(self._background):
            task.cancel()
        for task in list(self._background):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

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
        if s.tat == lease.tat_after:  # no grant since: its slot goes back
            s.tat = lease.previous_tat
        e = s.egress
        e.calls -= 1
        if e.sent and e.sent[-1] == lease.granted_at:
            e.sent.pop()
        if e.tat == lease.egress_tat_after:
            e.tat = lease.previous_egress_tat
        if lease.probe:
            s.probing = False
        self._tell_shared(lease, "release")
        self._changed.set()

    def on_success(self, lease: Lease) -> None:
        """The call went through; a successful probe ends the quarantine.

        A call sent before the quarantine began proves nothing about the credential now.
        """
        s = lease.state
        s.in_flight -= 1
        s.egress.failures = 0
        s.egress.pause_s = 0.0
        if lease.probe:
            s.quarantined = s.probing = False
            s.probe_after_s = 0.0
            self._tell_shared(lease, "probe_ok")
        self._changed.set()

    def on_done(self, lease: Lease) -> None:
        """The call ended in a way that says nothing about the credential."""
        s = lease.state
        s.in_flight -= 1
        if lease.probe:
            s.probing = False
            self._tell_shared(lease, "probe_end")
        self._changed.set()

    def on_egress_unreachable(self, lease: Lease) -> bool:
        """No connection through the lease's egress. ``True``: the egress is to blame (another
        one works), so the call should move on without counting against the upstream; after
        ``egress_failures`` in a row the egress pauses, doubling its pause each time.
        ``False``: every egress fails alike, so it is the upstream's fault.

        Call :meth:`on_done` for the lease as well.
        """
        e = lease.state.egress
        now = self._clock()
        e.unreachable += 1
        e.failures += 1
        # another egress whose last call went through: this one is to blame, not the upstream
        if not any(
            o is not e and o.paused_until <= now and o.failures == 0
            for o in self._egresses.values()
        ):
            return False
        if e.failures >= self.policy.egress_failures and e.paused_until <= now:
            p = self.policy
            e.pause_s = min(p.max_egress_pause_s, max(p.egress_pause_s, e.pause_s * 2))
            e.paused_until = now + e.pause_s
            log.warning(
                "egress %s unreachable %d times in a row; its credentials pause %.0f s",
                e.egress.name,
                e.failures,
                e.pause_s,
            )
            self._changed.set()
        return True

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
        self._tell_shared(lease, "ban", retry_after)
        self._changed.set()

    def on_invalid(self, lease: Lease) -> bool:
        """Codes 25/27/29 and kin: quarantine; probe again later, backing off per failed probe.

        Calls already on the wire when the quarantine began do not move the probe time. A call
        signed with a secret that has since been replaced (a rotation) says nothing about the
        credential now: it ends like :meth:`on_done`. Returns whether the credential is
        quarantined.
        """
        s = lease.state
        if self._recheck_secret is not None:
            self._recheck_secret(s.credential.app_key)
        if lease.credential.secret != s.credential.secret:
            self.on_done(lease)
            return False
        s.in_flight -= 1
        s.invalid += 1
        self._tell_shared(lease, "invalid")
        if s.quarantined and not lease.probe:
            return True
        now = self._clock()
        s.probe_after_s = min(
            self.policy.max_probe_after_s,
            max(self.policy.probe_after_s, s.probe_after_s * 2),
        )
        s.quarantined = True
        s.probing = False
        s.probe_at = now + s.probe_after_s
        self._changed.set()
        return True

    def replace_secret(self, app_key: str, secret: str) -> None:
        """Sign ``app_key``'s next calls with ``secret``; its limits, bans and counts stay.

        Leases already granted keep the credential they carry. A quarantined credential is let
        out for its probe at once: a new secret deserves a new try.
        """
        s = next((s for s in self._states if s.credential.app_key == app_key), None)
        if s is None:
            raise KeyError(app_key)
        s.credential = replace(s.credential, secret=secret)
        if s.quarantined and not s.probing:
            s.probe_at = min(s.probe_at, self._clock())
        # a quarantine held in Redis (every replica's) is lifted for its probe there too
        s.hold_until = 0.0 if s.shared_reason == "quarantined" else s.hold_until
        shared = self.shared
        if shared is not None:

            async def tell() -> None:
                try:
                    await shared.record(s.credential, "rotated", granted_us=0, probe=False)
                except SharedUnavailable as exc:
                    self._shared_failed(exc)

            task = asyncio.get_running_loop().create_task(tell())
            self._background.add(task)
            task.add_done_callback(self._background.discard)
        self._changed.set()

    # --- state for tools and metrics ---------------------------------------------------

    def status(self, credential: Credential) -> CredentialStatus:
        s = self._state(credential)
        now = self._clock()
        if s.hold_until > now and s.shared_reason in _SHARED_STATUS:
            return _SHARED_STATUS[s.shared_reason]  # what another replica learned
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
                    "egress": s.egress.egress.name,
                    "status": str(self.status(c)),
                    "rate": round(c.qps * self.policy.safety_factor * self._factor(s, now), 3),
                    "configured_qps": c.qps,
                    "banned_for_s": round(
                        max(
                            0.0,
                            s.banned_until - now,
                            s.hold_until - now if s.shared_reason == "banned" else 0.0,
                        ),
                        3,
                    ),
                    "probe_in_s": round(max(0.0, s.probe_at - now), 3) if s.quarantined else None,
                    "calls": s.calls,
                    "calls_today": s.calls_today,
                    "daily_budget": c.daily_budget,
                    "rate_limited": s.rate_limited,
                    "invalid": s.invalid,
                    "in_flight": s.in_flight,
                    "cost": str(s.cost),
                    # the Beijing day's calls at the configured price (what the bill will say)
                    "cost_today": str(s.calls_today * c.cost_per_call),
                }
            )
        return rows

    def egress_snapshot(self) -> list[dict[str, object]]:
        """One row per egress (name, cap, calls, pause, masked proxy) for tools and metrics."""
        now = self._clock()
        return [
            {
                "egress": e.egress.name,
                "max_qps": e.egress.max_qps,
                "rate": round(self._egress_rate(e), 3),
                "credentials": sum(1 for s in self._states if s.egress is e),
                "calls": e.calls,
                "unreachable": e.unreachable,
                "paused_for_s": round(max(0.0, e.paused_until - now), 3),
                "via": e.egress.local_address
                or (None if e.egress.proxy is None else mask_url(e.egress.proxy)),
            }
            for e in self._egresses.values()
        ]

    @property
    def egresses(self) -> list[Egress]:
        return [e.egress for e in self._egresses.values()]

    @property
    def credentials(self) -> list[Credential]:
        return [s.credential for s in self._states]

    def _state(self, credential: Credential) -> _State:
        for s in self._states:
            if s.credential is credential or s.credential.app_key == credential.app_key:
                return s
        raise KeyError(credential.masked)
