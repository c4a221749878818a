"""The credential pool: which app key sends the next call, and when.

A call consumes from each of its credential's scopes (:mod:`~taogate.quota.scopes`,
docs/limits.md): its app key (``qps × safety_factor``, burst 1 by default), its promoter account
(every key of it together), the API method (over every key), the key on that method, and its
egress (``max_qps`` for every key on it together). The pool hands out the credential that can
send soonest and reacts to what the upstream says (:mod:`~taogate.quota.health`), on the scope
the answer names: a key's ban pauses the key and cuts its rate (AIMD), and one lasting until
midnight in Beijing marks its day spent; an account's (code 15 / ``9100``) pauses and cuts the
account; a method's pauses the method on every key, blaming none; a key × method's pauses the
pair, backing off. An invalid credential is quarantined and probed, an unreachable egress
pauses, and an egress the key's IP whitelist refuses (code 11) is left for another one. A daily
budget (:mod:`~taogate.quota.budget`) stops a credential until the next Beijing day. With
replicas sharing limits, each slot is negotiated with the shared limiter
(:mod:`~taogate.quota.sharing`).

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
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

from taogate._credentials import DEFAULT_EGRESS, IP_QPS, Account, Credential, Egress
from taogate._errors import LimitScope, NoCredentialAvailable
from taogate.quota.budget import DayBudget, lasts_until_midnight
from taogate.quota.members import EgressState, Member
from taogate.quota.policy import PoolPolicy
from taogate.quota.scopes import Mark, Scope
from taogate.quota.sharing import ReplicaView, SharedLimiter, SharedVerdict, Sharing
from taogate.quota.stats import CredentialStatus, EgressStats, PoolStats, ScopeStats

__all__ = ["CredentialPool", "Lease"]

log = logging.getLogger("taogate.pool")


@dataclass(frozen=True, slots=True)
class Lease:
    """The right to send one call with ``credential``, granted at ``granted_at``."""

    credential: Credential
    granted_at: float
    state: Member = field(repr=False)
    #: the scopes the call was granted in (the credential's may change: a move of egress)
    scopes: tuple[Scope, ...] = field(repr=False)
    #: what the grant did to each scope (a give-back rolls one back only if nothing came after)
    marks: tuple[Mark, ...] = field(repr=False)
    #: the local time the pool asked for this slot (before any round trip to Redis): how late
    #: a call leaves is counted from here, so a stall while waiting for the answer counts too
    asked_at: float = field(repr=False)
    #: the one call a quarantined credential is let out for; only its outcome decides
    probe: bool = False
    #: server time (µs) of the shared grant; ``None`` when the lease was granted locally
    server_us: int | None = None


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
        accounts: Sequence[Account] = (),
        method: str = "call",
        method_qps: float | None = None,
        shared: SharedLimiter | None = None,
        replicas: ReplicaView | None = None,
        shared_timeout_s: float = 0.25,
        recheck_secret: Callable[[str], object] | None = None,
    ) -> None:
        """``shared``: the limiter every replica decides in, while ``replicas`` (a
        :class:`~taogate.quota.sharing.ReplicaView`) says they share; without a view, the
        limiter is used until it fails. Without either, this process decides alone for
        ``replicas.local_share``. ``shared_timeout_s``: the longest one question to the shared
        limiter may take.

        ``accounts``: the promoter accounts credentials name; ``method``: the API method the
        calls use, paced at ``method_qps`` over every key if the platform's cap is known.

        ``recheck_secret`` is called with the app key of a refused credential before it is
        quarantined, so a newer secret (a rotation not yet picked up) can be swapped in with
        :meth:`replace_secret`."""
        if not credentials:
            raise ValueError("the pool needs at least one credential")
        self.policy = p = policy or PoolPolicy()
        self._clock = clock
        self._egresses = {e.name: self._new_egress(e) for e in egresses}
        self._accounts = {a.name: p.account_scope(a) for a in accounts}
        self._method = p.method_scope(method, method_qps)
        self._states: list[Member] = []
        for c in credentials:
            account = None
            if c.account is not None:
                account = self._accounts.get(c.account)
                if account is None:
                    raise ValueError(f"credential {c.masked} names unknown account {c.account!r}")
            name = c.egress or DEFAULT_EGRESS
            if name not in self._egresses:
                if egresses and c.egress is not None:
                    raise ValueError(f"credential {c.masked} names unknown egress {name!r}")
                # credentials naming none share one implicit egress at the platform's IP limit
                implicit = Egress(name=name, max_qps=IP_QPS * p.safety_factor)
                self._egresses[name] = self._new_egress(implicit)
            key = p.key_scope(c)
            budget = DayBudget(c.daily_budget, wall_clock)
            quarantine = p.quarantine()
            member = Member(
                c,
                key,
                self._egresses[name],
                budget,
                quarantine,
                method=self._method,
                pair=p.pair_scope(c, method),
                account=account,
            )
            self._states.append(member)
        for member in self._states:  # a move needs somewhere to go
            member.prove = p.prove_egress and len(self._egresses) > 1
        self._changed = asyncio.Event()
        self._sharing = Sharing(shared, replicas, clock=clock, timeout_s=shared_timeout_s)
        self._sharing.replicas.subscribe(self._on_mode_change)
        self._recheck_secret = recheck_secret

    def _new_egress(self, egress: Egress) -> EgressState:
        return EgressState(egress, self.policy.egress_scope(egress))

    # --- replicas ----------------------------------------------------------------------

    @property
    def shared(self) -> SharedLimiter | None:
        """The shared limiter when the replicas decide in it now; ``None``: this process
        decides alone."""
        return self._sharing.limiter

    @property
    def share(self) -> float:
        """This replica's share of each quota: all of it while the replicas share limits, else
        its part (``1 / live replicas``)."""
        return self._sharing.share

    def _on_mode_change(self, pause_s: float) -> None:
        """The replicas changed mode: hold every credential across the change."""
        self.pause_all(pause_s + self.policy.window_guard_s)

    def pause_all(self, seconds: float, reason: str = "switch") -> None:
        """Hold every credential for ``seconds`` (when the limiter changes hands, so calls from
        before and after the change never share a one-second window).

        Each credential resumes at a random point of its next interval, so replicas that
        paused together do not all send at the same instant.
        """
        now, share = self._clock(), self.share
        for s in self._states:
            jitter = random.uniform(0.0, 1.0 / max(s.key.rate(now, share), 1e-9))
            s.key.hold(now + seconds + jitter)
            s.claim.reason = reason
        self._changed.set()

    async def aclose(self) -> None:
        """Cancel outcome recordings still under way."""
        await self._sharing.aclose()

    # --- rates -------------------------------------------------------------------------

    def rate(self, credential: Credential) -> float:
        """The calls per second the pool allows ``credential`` now."""
        return self._state(credential).key.rate(self._clock(), self.share)

    def send_slack(self, lease: Lease) -> float:
        """How late after its grant ``lease``'s call may still leave safely, in seconds: the
        least slack of its scopes (:meth:`~taogate.quota.scopes.Scope.slack_s`).

        A scope of several keys (an egress) has no slack only when they together can fill it
        (other replicas' calls count in its window too, so this replica's own sends cannot
        tell); while they cannot, it holds no call back.
        """
        at, share = lease.granted_at, self.share
        slack = math.inf
        for scope in lease.scopes:
            if not scope.paced:
                continue
            keys = sum(o.key.rate(at, share) for o in self._states if scope in o.scopes)
            if keys >= 0.8 * scope.rate(at, share):
                slack = min(slack, scope.slack_s(at, share))
        return slack

    def total_rate(self) -> float:
        """Calls per second all usable credentials allow together now: each key's rate, within
        its account's and then its egress's (every key on one together), within the method's.

        An account's or the method's pause (a second after a ``9100``, a method's ban of a few
        seconds) is a wait, not a lost rate: :meth:`next_ready` counts it, and so is left out
        here (a rate of 0 would make every queue estimate infinite for the pause's length).
        """
        now, share = self._clock(), self.share
        usable = [s for s in self._states if s.usable(now, share) and s.refused_until() <= now]
        rates = {id(s): s.key.rate(now, share) for s in usable}
        for account in self._accounts.values():
            self._cap(account, [s for s in usable if s.account is account], rates, now, share)
        total = 0.0
        for e in self._egresses.values():
            on = [s for s in usable if s.egress is e]
            if e.scope.paused_until > now:
                continue
            self._cap(e.scope, on, rates, now, share)
            total += sum(rates[id(s)] for s in on)
        return min(total, self._method.rate(now, share))

    @staticmethod
    def _cap(
        scope: Scope, members: list[Member], rates: dict[int, float], now: float, share: float
    ) -> None:
        """Scale ``members``' rates down to what ``scope`` allows them together."""
        allowed = scope.rate(now, share)
        together = sum(rates[id(s)] for s in members)
        if together > allowed:
            for s in members:
                rates[id(s)] *= allowed / together

    # --- readiness ---------------------------------------------------------------------

    def next_ready(self, *, urgent: bool = True) -> tuple[Credential | None, float]:
        """The credential that can send soonest and when; ``(None, t)`` if none is usable now.

        With none usable, ``t`` is when a quarantined credential may next be probed
        (``inf`` when only budgets are exhausted). Calls that are not ``urgent`` also wait out
        slots that other replicas' interactive lookups claimed.
        """
        now, share = self._clock(), self.share
        best: Member | None = None
        best_at = math.inf
        for s in self._states:
            if not s.usable(now, share):
                continue
            at = s.ready_at(now, share, urgent=urgent)
            # ties (an egress holding every key back): fewest calls in flight, then the key
            # used least recently, so calls spread over the keys instead of wearing one out
            if at < best_at or (
                at == best_at
                and best is not None
                and (s.key.in_flight, s.key.tat) < (best.key.in_flight, best.key.tat)
            ):
                best, best_at = s, at
        if best is None:
            probes = [
                s.quarantine.probe_at
                for s in self._states
                if s.quarantine.active and not s.quarantine.probing
            ]
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
        sharing = self._sharing
        while True:
            is_urgent = True if urgent is None else urgent()
            credential, at = self.next_ready(urgent=is_urgent)
            now = self._clock()
            if credential is None:
                retry = None if math.isinf(at) else max(0.0, at - now)
                raise NoCredentialAvailable("no usable credential", retry_after=retry)
            s = self._state(credential)
            claim = not s.waits_on_its_own(now) and sharing.should_claim(
                s.claim, s.scopes, at, now, urgent=is_urgent
            )
            if at <= now or claim:
                if sharing.limiter is None:
                    return self._grant(s, now, asked_at=now)
                scopes = s.scopes
                verdict = await sharing.negotiate(s.credential, s.claim, scopes, urgent=is_urgent)
                if verdict is None:  # refused (what it blames is held), or failed: look again
                    continue
                if s.scopes is not scopes:  # moved to another egress while Redis answered
                    sharing.tell(
                        s.credential, "release", granted_us=verdict.server_us, probe=verdict.probe
                    )
                    continue
                return self._grant(s, self._clock(), verdict, asked_at=now)
            if deadline is not None and at > deadline:
                raise NoCredentialAvailable(
                    "no credential can send before the deadline", retry_after=at - now
                )
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), timeout=at - now)

    def _grant(
        self,
        s: Member,
        now: float,
        verdict: SharedVerdict | None = None,
        *,
        asked_at: float | None = None,
    ) -> Lease:
        # usable() lets a quarantined credential out for one probe only; with shared limits the
        # shared state says whether this call is the probe
        probe = s.quarantine.active or (verdict is not None and verdict.probe)
        scopes = s.scopes
        marks = s.take(now, self.share, probe=probe)
        return Lease(
            s.credential,
            now,
            s,
            scopes,
            marks,
            now if asked_at is None else asked_at,
            probe,
            None if verdict is None else verdict.server_us,
        )

    def wake(self) -> None:
        """Make a waiting :meth:`acquire` look again (interactive work arrived)."""
        self._changed.set()

    # --- outcomes ----------------------------------------------------------------------

    def _tell(self, lease: Lease, op: str, retry_after: float = 0.0) -> None:
        self._sharing.tell(
            lease.credential,
            op,
            granted_us=lease.server_us,
            probe=lease.probe,
            retry_after=retry_after,
        )

    def release_unused(self, lease: Lease) -> None:
        """Give back a lease that sent nothing: its slots, its call and its cost."""
        s = lease.state
        s.give_back(lease.granted_at, lease.scopes, lease.marks)
        if lease.probe:
            s.quarantine.probing = False
        self._tell(lease, "release")
        self._changed.set()

    def on_success(self, lease: Lease) -> None:
        """The call went through; a successful probe ends the quarantine.

        A call sent before the quarantine began proves nothing about the credential now.
        """
        s = lease.state
        self._answered(lease)
        self._egress_of(lease).reach.reached()
        if lease.probe:
            s.quarantine.end()
            self._tell(lease, "probe_ok")
        self._changed.set()

    def on_done(self, lease: Lease) -> None:
        """The call ended in a way that says nothing about the credential."""
        s = lease.state
        self._answered(lease)
        if lease.probe:
            s.quarantine.probing = False
            self._tell(lease, "probe_end")
        self._changed.set()

    def on_egress_unreachable(self, lease: Lease) -> bool:
        """No connection through the lease's egress. ``True``: the egress is to blame (another
        one works), so the call should move on without counting against the upstream; after
        ``egress_failures`` in a row the egress pauses, doubling its pause each time.
        ``False``: every egress fails alike, so it is the upstream's fault.

        Call :meth:`on_done` for the lease as well.
        """
        e, p = self._egress_of(lease), self.policy
        now = self._clock()
        e.reach.failed()
        s = lease.state
        if s.egress is e and s.trial_at is not None and s.trial_at >= lease.granted_at:
            s.proven, s.trial_at = False, None  # no answer came: the egress is still untried
        # another egress whose last call went through: this one is to blame, not the upstream
        if not any(
            o is not e and o.scope.paused_until <= now and o.reach.failures == 0
            for o in self._egresses.values()
        ):
            return False
        if e.reach.failures >= p.egress_failures and e.scope.paused_until <= now:
            pause_s = e.reach.next_pause(p.egress_pause_s, p.max_egress_pause_s)
            e.scope.pause(now + pause_s)
            log.warning(
                "egress %s unreachable %d times in a row; its credentials pause %.0f s",
                e.egress.name,
                e.reach.failures,
                pause_s,
            )
            self._changed.set()
        return True

    def egress_name(self, lease: Lease) -> str:
        """The name of the egress the lease's call goes through."""
        return self._egress_of(lease).egress.name

    def _egress_of(self, lease: Lease) -> EgressState:
        """The egress the lease's call went through (the key may have moved since)."""
        return next(e for e in self._egresses.values() if e.scope in lease.scopes)

    def _answered(self, lease: Lease) -> None:
        """The lease's call came back with an answer through its egress: the key's whitelist
        accepts that egress."""
        s = lease.state
        Member.ended(lease.scopes)
        if s.egress.scope in lease.scopes:
            s.proven = True
            s.refused_pause_s = 0.0  # a later refusal starts from the first pause again

    def on_rate_limited(
        self, lease: Lease, retry_after: float, scope: LimitScope = "unknown"
    ) -> None:
        """A rate limit (code 7 and kin, code 15 / ``9100``), on the scope the answer names.

        - ``app`` or ``unknown``: pause the key for the ban and cut its rate, once per ban; a
          ban lasting until midnight in Beijing marks the key's day spent (exhausted until it
          turns, for every replica).
        - ``account``: pause the key's account for the ban (a second) and cut its rate.
        - ``api``: pause the method on every key for the ban; no key is blamed or cut.
        - ``app_api``: pause the key on the method, longer with each ban in a row.

        Calls already on the wire when a ban began come back limited too; they extend the
        pause but do not cut a rate (or grow a back-off) again.
        """
        s = lease.state
        self._answered(lease)
        now = self._clock()
        if lease.probe:
            s.quarantine.probing = False
        target = {"account": s.account, "api": s.method, "app_api": s.pair}.get(scope)
        if scope == "account" and target is None:
            log.warning(
                "credential %s: its promoter account is over its limit (code 15 / 9100), but "
                "no [[accounts]] entry names it; the key alone is paused and slowed. Declare "
                "the account so that its keys are paced together (docs/limits.md)",
                s.credential.masked,
            )
        if target is None:  # the key's own limit (or one the answer did not name)
            s.rate_limited += 1
            if lasts_until_midnight(retry_after, s.budget.wall_clock()):
                s.budget.exhaust()
                s.key.limited += 1
                log.warning(
                    "credential %s: the platform says today's quota is spent; it rests until "
                    "midnight in Beijing (%.0f s)",
                    s.credential.masked,
                    retry_after,
                )
                self._tell(lease, "exhausted", retry_after)
            else:
                s.key.ban(now, lease.granted_at, retry_after)
                self._tell(lease, "ban", retry_after)
        else:
            if lease.probe:  # the probe was answered, but says nothing about the key
                self._tell(lease, "probe_end")
            pause_s = target.ban(now, lease.granted_at, retry_after)
            op = "ban" if target.aimd is not None else "pause"
            self._sharing.tell_scope(target, op, pause_s, granted_us=lease.server_us)
        self._changed.set()

    def on_ip_refused(self, lease: Lease) -> str | None:
        """Code 11 ``isv.permission-ip-whitelist-limit``: the key's IP whitelist refuses the
        lease's egress. The key is not to blame (never quarantined): its calls move to another
        egress its whitelist has not refused, the least loaded; with none left, the key pauses
        on this egress (60 s, doubling up to an hour) and an error names the key and egress.

        Returns the egress the key moved to, or ``None`` when it paused.
        """
        s = lease.state
        Member.ended(lease.scopes)
        if lease.probe:
            s.quarantine.probing = False
            self._tell(lease, "probe_end")
        s.ip_refused += 1
        now, p = self._clock(), self.policy
        refused = self._egress_of(lease)
        if s.egress is not refused:  # moved already (an earlier refusal of a call in flight)
            self._changed.set()
            return s.egress.egress.name
        s.refused[refused.egress.name] = math.inf  # until another egress fails it too
        # an egress paused as unreachable is still one to try: its pause ends by itself
        others = [e for e in self._egresses.values() if s.refused.get(e.egress.name, 0.0) <= now]
        if others:
            to = min(others, key=lambda e: sum(1 for o in self._states if o.egress is e))
            s.move(to)
            log.warning(
                "credential %s: egress %s is not in its IP whitelist (code 11); its calls go "
                "through egress %s",
                s.credential.masked,
                refused.egress.name,
                to.egress.name,
            )
            self._changed.set()
            return to.egress.name
        s.refused_pause_s = min(
            p.max_whitelist_pause_s, max(p.whitelist_pause_s, 2 * s.refused_pause_s)
        )
        until = now + s.refused_pause_s
        for name in list(s.refused):  # every egress was refused: try them again after the pause
            s.refused[name] = until
        log.error(
            "credential %s: no egress is in its IP whitelist (refused by %s, code 11); it "
            "pauses %.0f s. Add the egresses' addresses to the app's whitelist on the platform",
            s.credential.masked,
            refused.egress.name,
            s.refused_pause_s,
        )
        self._changed.set()
        return None

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
        self._answered(lease)
        s.invalid += 1
        self._tell(lease, "invalid")
        if s.quarantine.active and not lease.probe:
            return True
        s.quarantine.begin(self._clock())
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
        s.quarantine.retry_now(self._clock())
        # a quarantine held in Redis (every replica's) is lifted for its probe there too
        if s.claim.reason == "quarantined":
            s.key.held_until = 0.0
        self._sharing.tell(s.credential, "rotated", granted_us=0, probe=False)
        self._changed.set()

    # --- state for tools and metrics ---------------------------------------------------

    def status(self, credential: Credential) -> CredentialStatus:
        return self._state(credential).status(self._clock(), self.share)

    def stats(self) -> PoolStats:
        """Every credential and egress now, as frozen values."""
        now, share = self._clock(), self.share
        return PoolStats(
            credentials=tuple(s.stats(now, share) for s in self._states),
            egresses=tuple(self._egress_stats(e, now, share) for e in self._egresses.values()),
            scopes=tuple(
                self._scope_stats(scope, now, share)
                for scope in (*self._accounts.values(), self._method)
            ),
        )

    def _scope_stats(self, scope: Scope, now: float, share: float) -> ScopeStats:
        return ScopeStats(
            kind=scope.kind,
            name=scope.name.partition(":")[2],
            qps=scope.qps,
            rate=scope.rate(now, share) if scope.paced else None,
            credentials=sum(1 for s in self._states if scope in s.scopes),
            calls=scope.calls,
            limited=scope.limited,
            paused_for_s=max(0.0, scope.paused_until - now),
        )

    def snapshot(self) -> list[dict[str, object]]:
        """One row per credential (masked key, status, rate, ban, calls, cost) for tools."""
        now, share = self._clock(), self.share
        return [s.stats(now, share).as_row() for s in self._states]

    def egress_snapshot(self) -> list[dict[str, object]]:
        """One row per egress (name, cap, calls, pause, masked proxy) for tools and metrics."""
        now, share = self._clock(), self.share
        return [self._egress_stats(e, now, share).as_row() for e in self._egresses.values()]

    def _egress_stats(self, e: EgressState, now: float, share: float) -> EgressStats:
        return e.stats(now, share, credentials=sum(1 for s in self._states if s.egress is e))

    @property
    def egresses(self) -> list[Egress]:
        return [e.egress for e in self._egresses.values()]

    @property
    def credentials(self) -> list[Credential]:
        return [s.credential for s in self._states]

    def _state(self, credential: Credential) -> Member:
        for s in self._states:
            if s.credential is credential or s.credential.app_key == credential.app_key:
                return s
        raise KeyError(credential.masked)
