"""Deciding with the other replicas: the shared limiter's seam, its verdicts, claims and yields.

While the replicas share limits (``taogate.replicas``), every slot is asked of the shared limiter,
one atomic decision for all of them over every scope of the call. Its verdict grants the call,
or tells how long to wait and why: the key's schedule or state (the key's scope is held), or the
kind of another scope (``egress``, ``account``, ``method``, ``pair``: that scope is held), or
``yield`` (another replica's interactive lookups claimed the slot, so only calls that are not
urgent wait). An urgent caller about to wait out what a non-urgent ask was told asks again, and
so claims its slot. Outcomes are told to the shared limiter in the background; when it fails,
the replicas are told and this process decides alone for its share of each quota.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from taogate._credentials import Credential
from taogate._errors import TaogateError
from taogate._tasks import cancel_within
from taogate.quota.scopes import Scope

__all__ = [
    "Claim",
    "FixedShare",
    "ReplicaView",
    "SharedLimiter",
    "SharedUnavailable",
    "SharedVerdict",
    "Sharing",
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
    """The seam to limits shared by every replica (``taogate.replicas``): one call per decision.

    ``scopes`` are every scope of the call but the key's (whose state the limiter keeps with
    the credential's): the decision covers them all at once.
    """

    async def acquire(
        self, credential: Credential, *, urgent: bool = True, scopes: Sequence[Scope] = ()
    ) -> SharedVerdict: ...

    async def record_scope(
        self, scope: Scope, op: str, *, granted_us: int, retry_after: float
    ) -> object: ...

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


@dataclass(slots=True, eq=False)
class Claim:
    """What the shared limiter last told this replica about one credential."""

    #: not before this for calls that are not urgent: another replica's interactive lookups
    #: claimed the next slot (the shared limiter said ``yield``)
    yield_until: float = 0.0
    #: whether the hold being waited out was asked for urgently (so it is claimed in Redis)
    claimed: bool = False
    #: why the credential's scope is held (``banned``, ``quarantined``, ``rate`` …)
    reason: str = ""

    def granted(self) -> None:
        """A slot was granted: the hold it waited out is over."""
        self.reason = ""
        self.claimed = False


class Sharing:
    """This replica's side of the limits shared with the others.

    ``limiter``: the limiter every replica decides in, used while ``replicas`` says they share;
    without a view of the replicas (a library user's limiter, a test's), it is used until it
    fails. Without either, this process decides alone for ``replicas.local_share``.
    """

    def __init__(
        self,
        limiter: SharedLimiter | None,
        replicas: ReplicaView | None,
        *,
        clock: Callable[[], float],
        timeout_s: float,
    ) -> None:
        self._limiter = limiter
        self._clock = clock
        self.replicas: ReplicaView = replicas or FixedShare()
        #: the longest one question to the shared limiter may take
        self.timeout_s = timeout_s
        self._background: set[asyncio.Task[None]] = set()

    @property
    def limiter(self) -> SharedLimiter | None:
        """The shared limiter when the replicas decide in it now; ``None``: this process
        decides alone."""
        if self._limiter is None or (not self.replicas.sharing and not self._standalone):
            return None
        return self._limiter

    @property
    def _standalone(self) -> bool:
        return isinstance(self.replicas, FixedShare)

    @property
    def share(self) -> float:
        """This replica's share of each quota: all of it while the replicas share limits, else
        its part (``1 / live replicas``)."""
        return 1.0 if self.limiter is not None else self.replicas.local_share

    def should_claim(
        self, claim: Claim, scopes: Sequence[Scope], at: float, now: float, *, urgent: bool
    ) -> bool:
        """Whether an urgent caller that would wait until ``at`` asks now instead: it would
        wait out what a non-urgent ask was told, and another replica's bulk call could take
        the slot when the wait ends."""
        return (
            urgent
            and self.limiter is not None
            and at > now
            and not claim.claimed
            and any(scope.held_until > now for scope in scopes)
        )

    async def negotiate(
        self, credential: Credential, claim: Claim, scopes: Sequence[Scope], *, urgent: bool
    ) -> SharedVerdict | None:
        """Ask the shared limiter for a slot now for a call consuming from ``scopes`` (the
        key's first): its grant, or ``None`` when it refused (what it blames is held: the key,
        the scope of the kind it names, or with a yield the credential's calls that are not
        urgent) or failed (this process then decides alone)."""
        key, others = scopes[0], scopes[1:]
        verdict = await self._ask(credential, others, urgent=urgent)
        if verdict is None or verdict.granted:
            return verdict
        until = self._clock() + verdict.wait_s
        if verdict.reason == "yield":
            claim.yield_until = max(claim.yield_until, until)
            return None
        claim.claimed = urgent
        held = next((scope for scope in others if scope.kind == verdict.reason), None)
        if held is not None:  # every credential consuming from it waits
            held.hold(until)
            return None
        key.hold(until)
        claim.reason = verdict.reason
        return None

    async def _ask(
        self, credential: Credential, scopes: Sequence[Scope], *, urgent: bool
    ) -> SharedVerdict | None:
        limiter = self.limiter
        assert limiter is not None
        try:
            async with asyncio.timeout(self.timeout_s):  # pool wait, connect and read
                return await limiter.acquire(credential, urgent=urgent, scopes=scopes)
        except TimeoutError:
            self.failed(SharedUnavailable("shared limits timed out", timeout=True))
            return None
        except SharedUnavailable as exc:
            self.failed(exc)
            return None

    def failed(self, exc: BaseException) -> None:
        """The shared limiter failed: tell the replicas (they switch to local limits)."""
        log.warning("shared limits unavailable: %s; deciding locally", exc)
        if self._standalone:
            self._limiter = None
        self.replicas.lost(exc)

    def tell(
        self,
        credential: Credential,
        op: str,
        *,
        granted_us: int | None,
        probe: bool,
        retry_after: float = 0.0,
    ) -> None:
        """Record an outcome in the shared state, in the background (it never blocks a call).

        Only calls the shared limiter granted (``granted_us``: its server time) are told.
        """
        self._record(
            granted_us,
            lambda limiter, granted: limiter.record(
                credential, op, granted_us=granted, probe=probe, retry_after=retry_after
            ),
        )

    def tell_scope(
        self, scope: Scope, op: str, retry_after: float, *, granted_us: int | None
    ) -> None:
        """Record a ban of a scope other than the key (``ban``: pause and cut its rate,
        ``pause``: pause only), for every replica, in the background."""
        self._record(
            granted_us,
            lambda limiter, granted: limiter.record_scope(
                scope, op, granted_us=granted, retry_after=retry_after
            ),
        )

    def _record(
        self,
        granted_us: int | None,
        call: Callable[[SharedLimiter, int], Awaitable[object]],
    ) -> None:
        """Run ``call`` with the shared limiter in the background, for a call it granted at
        ``granted_us``; a failure switches this replica to local limits."""
        limiter = self.limiter
        if limiter is None or granted_us is None:
            return
        granted = granted_us

        async def record() -> None:
            try:
                await call(limiter, granted)
            except SharedUnavailable as exc:
                self.failed(exc)

        task = asyncio.get_running_loop().create_task(record())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def aclose(self) -> None:
        """Cancel outcome recordings still under way (within a bound: a recording stuck in
        the Redis client must not hang the shutdown)."""
        await cancel_within(list(self._background), log=log, what="outcome recordings")
