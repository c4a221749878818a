"""Limit scopes: what a call counts against, and when one more call fits.

Every limit the platform enforces is a scope (docs/limits.md): an app key, the promoter account
its keys share, the API method over every key, the key on that method, and the egress IP the
call leaves from. A call consumes from each scope of its list and leaves when the slowest of
them lets it::

    ready_at = max(scope.ready_at(now, share) for scope in scopes)

A scope with a rate (``qps``) paces and windows its calls; one without (a method whose cap is
not known, a key × method pair) only counts them and keeps the pauses its bans ask for.

A scope paces its calls at ``qps × pace`` (GCRA, bursts of ``burst``) and, as a guard against
the platform's own sliding window, never sends its ``floor(qps × share)``-th next call less than
one second plus ``guard_s`` after the one that many calls before. A pause (a ban, an unreachable
egress) and a hold (what the shared limiter said) keep every call off the scope until they end;
a ban also cuts its rate when the scope has an :class:`~taogate.quota.health.Aimd`.

``share`` is the part of each quota this process may use: ``1.0`` while the replicas decide in
the shared limiter, ``1 / live replicas`` while each decides alone (its window then keeps an
extra ``local_guard_s``, as no shared window absorbs the other replicas' jitter).
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from typing import Literal

from taogate.quota.gcra import Gcra
from taogate.quota.health import Aimd, Backoff

__all__ = ["Mark", "Scope", "ScopeKind"]

#: The kinds of limit (docs/limits.md); the shared limiter names the kind that holds a call.
ScopeKind = Literal["key", "egress", "account", "method", "pair"]


@dataclass(frozen=True, slots=True)
class Mark:
    """A grant's move of a scope's schedule, so that a call never sent can give it back."""

    before: float
    after: float


@dataclass(slots=True, eq=False, kw_only=True)
class Scope:
    """One limit that calls count against together, with its schedule and its pauses."""

    kind: ScopeKind
    #: what tools show (a key by its masked id)
    name: str
    #: the stable identity the shared limiter keeps its state under (a key by its app key)
    id: str
    #: the platform's limit, calls per second: its one-second window holds ``floor(qps)``;
    #: ``None``: not paced, only paused
    qps: float | None
    #: the part of ``qps`` that is paced (the safety factor)
    pace: float = 1.0
    burst: int = 1
    #: the window guard: jitter between a grant and the upstream seeing the call
    guard_s: float = 0.05
    local_guard_s: float = 0.1
    #: the rate's cut after bans, if bans cut this scope's rate
    aimd: Aimd | None = None
    #: the growth of a ban's pause when bans follow each other, if they grow
    backoff: Backoff | None = None
    #: the GCRA's theoretical arrival time
    tat: float = 0.0
    #: the last grants, enough for the window at any share
    sent: deque[float] = field(default_factory=deque)
    #: no call before this: a ban, an unreachable egress
    paused_until: float = 0.0
    #: no call before this: what the shared limiter last said about this scope
    held_until: float = 0.0
    calls: int = 0
    in_flight: int = 0
    #: rate limits the upstream answered for this scope
    limited: int = 0

    @property
    def paced(self) -> bool:
        return self.qps is not None

    def rate(self, now: float, share: float = 1.0) -> float:
        """The calls per second this scope paces at ``now``, for ``share`` of its quota
        (``inf`` when it is not paced)."""
        if self.qps is None:
            return math.inf
        factor = 1.0 if self.aimd is None else self.aimd.factor(now)
        return self.qps * self.pace * factor * share

    def window_limit(self, share: float) -> int:
        """Calls this process may make in one platform window: its share of ``qps``."""
        if self.qps is None:
            raise ValueError(f"{self.name} is not paced")
        return max(1, math.floor(self.qps * share + 1e-9))

    def ready_at(self, now: float, share: float) -> float:
        """When the scope lets one more call out: its pacing, its window, a pause, a hold."""
        if self.qps is None:
            return max(self.paused_until, self.held_until)
        gcra = Gcra(rate=self.rate(now, share), burst=self.burst)
        at = max(gcra.ready_at(self.tat, now), self.paused_until, self.held_until)
        limit = self.window_limit(share)
        if len(self.sent) >= limit:
            guard = self.guard_s
            if share < 1.0:  # deciding alone: no shared window absorbs the others' jitter
                guard += self.local_guard_s
            at = max(at, self.sent[-limit] + 1.0 + guard)
        return at

    def take(self, now: float, share: float) -> Mark:
        """Count a call granted at ``now`` (its slot, its place in the window)."""
        before = self.tat
        self.calls += 1
        self.in_flight += 1
        if self.qps is None:
            return Mark(before, before)
        self.tat = max(self.tat, now) + Gcra(rate=self.rate(now, share), burst=self.burst).interval
        self.sent.append(now)
        limit = max(1, math.floor(self.qps))  # enough for any share
        while len(self.sent) > limit:
            self.sent.popleft()
        return Mark(before, self.tat)

    def give_back(self, granted_at: float, mark: Mark) -> None:
        """Undo :meth:`take` for a call never sent; its slot comes back if nothing came after."""
        self.calls -= 1
        self.in_flight -= 1
        if self.sent and self.sent[-1] == granted_at:
            self.sent.pop()
        if self.tat == mark.after:
            self.tat = mark.before

    def slack_s(self, now: float, share: float) -> float:
        """How late after ``now`` a call granted then may still leave safely, in seconds.

        Paced at ``rate``, ``limit`` calls span ``limit / rate`` seconds; what that exceeds the
        platform's one-second window by, plus the window guard, is how much a call can slip
        before it would crowd the calls granted after it into one window. A scope that is not
        paced has no window to crowd.
        """
        if self.qps is None:
            return math.inf
        rate = max(self.rate(now, share), 1e-9)
        return max(0.0, self.window_limit(share) / rate - 1.0) + self.guard_s

    def pause(self, until: float) -> None:
        self.paused_until = max(self.paused_until, until)

    def hold(self, until: float) -> None:
        self.held_until = max(self.held_until, until)

    def ban(self, now: float, granted_at: float, retry_after: float) -> float:
        """A rate limit seen at ``now`` by a call granted at ``granted_at``: pause for the ban
        (grown by the back-off, if any) and cut the rate, once per ban. Returns the pause."""
        self.limited += 1
        if self.aimd is not None:
            self.aimd.on_ban(now, granted_at)
        if self.backoff is not None:
            retry_after = self.backoff.on_ban(now, granted_at, retry_after)
        self.pause(now + retry_after)
        return retry_after
