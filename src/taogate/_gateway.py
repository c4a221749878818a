"""The gateway: the lookup pipeline over its parts, and the dispatcher it runs.

Its parts (cache, credential pool, breaker, degraded mode, provider, and with Redis the
replicas) are built from the settings by ``taogate._assembly`` when it starts, and stopped
after it; the gateway itself knows nothing of Redis, bulk jobs or HTTP (``taogate.Service``
adds the job worker, ``taogate.http`` the edge).

``async with Gateway(settings) as gw:`` then ``await gw.get(id)`` / ``await gw.get_many(ids)``.
A lookup is answered from L1 when fresh; misses go to the dispatcher at the lookup's priority
and deadline; when the upstream cannot answer in time, a stale entry within ``max_stale`` is
served flagged ``stale`` with its age, else the lookup fails fast with a clear error. Hits close
to expiry are refreshed ahead at refresh priority, from spare quota only. In degraded mode
(``gw.degrade``, ``taogate._degrade``) older answers count as fresh, refresh-ahead stops, and
lookups that are not interactive are held to their part of the quota.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Self, Unpack

from taogate._assembly import Parts, build_parts
from taogate._breaker import BreakerPolicy, BreakerState, RetryBudget
from taogate._dispatch import PROVENANCE_IDS, Dispatcher, Priority
from taogate._errors import DeadlineExceeded, InvalidRequest, Overloaded, UpstreamUnavailable
from taogate._gateway_stats import GatewayStats
from taogate._lookup import DEFAULT_POLICY, LookupOptions, LookupPolicy
from taogate._masking import mask_id
from taogate._model import Item, Lookup, Source
from taogate._settings import Settings
from taogate._tasks import cancel_within
from taogate.providers.base import Provider

__all__ = ["Gateway"]

log = logging.getLogger("taogate.gateway")

#: A hit in the last share of its freshness is refreshed ahead.
REFRESH_AHEAD_SHARE = 0.2
#: Refresh work waiting at once, in batches (beyond it, refresh-ahead skips).
REFRESH_QUEUE_BATCHES = 4


class Gateway:
    """The library's front door. Use it as an async context manager."""

    def __init__(
        self,
        settings: Settings,
        *,
        provider: Provider | None = None,
        breaker_policy: BreakerPolicy | None = None,
        clock: Callable[[], float] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        if not settings.credentials:
            raise InvalidRequest("the gateway needs at least one [[credentials]] entry")
        self.settings = settings
        self._provider_arg = provider
        self._breaker_policy = breaker_policy
        self._clock_arg = clock
        self._rng = rng or random.Random()
        self._id_policy = settings.upstream.id_policy
        #: makes upstream text safe to show (job rows, HTTP answers): secrets out, cut short
        self.redact = settings.redactor()
        self._dispatcher: Dispatcher | None = None
        self._degrade_task: asyncio.Task[None] | None = None
        self._started = False

    # --- lifecycle -----------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def start(self) -> None:
        """Build the parts on the running loop (``taogate._assembly``), start them, then the
        degraded-mode watcher and the dispatcher."""
        if self._started:
            return
        loop = asyncio.get_running_loop()
        clock = self._clock_arg or loop.time
        self._clock = clock
        s = self.settings
        self.parts: Parts = build_parts(
            s,
            clock=clock,
            rng=self._rng,
            redact=self.redact,
            provider=self._provider_arg,
            breaker_policy=self._breaker_policy,
        )
        parts = self.parts
        self._provider = parts.provider
        self.breaker = parts.breaker
        #: degraded mode (process-local without Redis, shared by every replica with it)
        self.degrade = parts.degrade
        self.pool = parts.pool
        self.cache = parts.cache
        self.secret_files = parts.secret_files
        #: the replicas on Redis (``None`` without Redis)
        self.replicas = parts.replicas
        await parts.start()
        self._degrade_task = loop.create_task(self.degrade.run(), name="taogate-degrade")
        self._dispatcher = Dispatcher(
            self._provider,
            self.pool,
            breaker=self.breaker,
            retry_budget=RetryBudget(clock=clock),
            clock=clock,
            batch_window_s=s.limits.batch_window_ms / 1000.0,
            on_result=self.cache.store,
            rng=self._rng,
            provenance_ids=min(PROVENANCE_IDS, s.cache.l1_max_entries),
        )
        self._dispatcher.start()
        self.lookups = 0
        self.hits = 0
        self.stale_served = 0
        self.refreshes = 0
        self.last_invalidation_everywhere = True
        self._started = True

    async def aclose(self) -> None:
        """Stop the dispatcher (waiting lookups fail), then the parts in reverse order."""
        if not self._started:
            return
        self._started = False
        if self._dispatcher is not None:
            await self._dispatcher.aclose()
        if self._degrade_task is not None:
            await cancel_within([self._degrade_task], log=log, what="degraded-mode watcher")
        await self.parts.aclose()

    def reload_secrets(self) -> list[str]:
        """Re-read every ``secret_file`` now (what SIGHUP does); the masked keys rotated."""
        if not self._started or self.secret_files is None:
            return []
        return [mask_id(k) for k in self.secret_files.check("reload")]

    @property
    def started(self) -> bool:
        """Whether the gateway is started and not yet closed."""
        return self._started

    @property
    def dispatcher(self) -> Dispatcher:
        if self._dispatcher is None:
            raise RuntimeError("the gateway is not started; use 'async with Gateway(...)'")
        return self._dispatcher

    # --- lookups -------------------------------------------------------------------------

    async def get(
        self, num_iid: str, policy: LookupPolicy | None = None, **options: Unpack[LookupOptions]
    ) -> Lookup:
        """One lookup; raises the lookup's error when there is no answer to give.

        A lookup of an item that does not exist is an answer: ``Lookup.item`` is ``None``.
        ``policy`` (or its fields as keyword arguments): see :class:`LookupPolicy`.
        """
        lookup = await self.get_one(num_iid, policy, **options)
        if lookup.error is not None:
            raise lookup.error
        return lookup

    async def get_one(
        self, num_iid: str, policy: LookupPolicy | None = None, **options: Unpack[LookupOptions]
    ) -> Lookup:
        """Like :meth:`get_many` for one id, with an L1 hit answered on a short path."""
        if not self._started:  # the hit path: checks written out, no calls it can do without
            self._check_started()
        checked = self._id_policy.check(num_iid)
        asked = LookupPolicy.of(policy, options) if options or policy else DEFAULT_POLICY
        now = self._clock()
        degraded = self.degrade.active
        entry = self.cache.fresh(
            checked, max_age_s=self._max_age(asked.max_age_s, degraded), now=now, widened=degraded
        )
        if entry is None:
            return (await self._lookup([checked], asked))[checked]
        self.lookups += 1
        self.hits += 1
        if entry.fresh_until - now < REFRESH_AHEAD_SHARE * (entry.fresh_until - entry.fetched_at):
            self._refresh_ahead([checked])
        return Lookup(
            num_iid=checked, item=entry.item, source=Source.L1, age_s=now - entry.fetched_at
        )

    async def get_many(
        self,
        ids: Iterable[str],
        policy: LookupPolicy | None = None,
        **options: Unpack[LookupOptions],
    ) -> dict[str, Lookup]:
        """A :class:`Lookup` per distinct id; failures are in ``Lookup.error``, never raised.

        Ids are validated first (:class:`InvalidItemId` is raised for a bad one).
        """
        self._check_started()
        wanted = list(dict.fromkeys(self._id_policy.check(i) for i in ids))
        return await self._lookup(wanted, LookupPolicy.of(policy, options))

    def _check_started(self) -> None:
        if not self._started:
            raise RuntimeError("the gateway is not started; use 'async with Gateway(...)'")

    async def _lookup(self, wanted: list[str], policy: LookupPolicy) -> dict[str, Lookup]:
        """The pipeline of checked ids: the cache tiers, then the dispatcher for the misses."""
        cache = self.cache
        degraded = self.degrade.active
        max_age = self._max_age(policy.max_age_s, degraded)
        max_stale = (
            (cache.max_stale_s if policy.max_stale_s is None else policy.max_stale_s)
            if policy.allow_stale
            else None
        )
        deadline = self._clock() + (
            self.settings.limits.deadline_s if policy.deadline_s is None else policy.deadline_s
        )
        view = await cache.lookup(
            wanted, max_age_s=max_age, max_stale_s=max_stale, widened=degraded
        )
        now = self._clock()
        out: dict[str, Lookup] = {}
        refresh: list[str] = []
        for num_iid, entry in view.fresh.items():
            out[num_iid] = Lookup(
                num_iid=num_iid, item=entry.item, source=Source.L1, age_s=entry.age(now)
            )
            lifetime = entry.fresh_until - entry.fetched_at
            if entry.fresh_until - now < REFRESH_AHEAD_SHARE * lifetime:
                refresh.append(num_iid)
        self.lookups += len(wanted)
        self.hits += len(view.fresh)
        if refresh:
            self._refresh_ahead(refresh)
        for num_iid, entry in view.from_l2.items():
            out[num_iid] = Lookup(
                num_iid=num_iid, item=entry.item, source=Source.L2, age_s=entry.age(now)
            )
        if view.missing:
            await self._fetch(view.missing, view.stale, policy.priority, deadline, out)
        return {num_iid: out[num_iid] for num_iid in wanted}

    def _max_age(self, asked: float | None, degraded: bool) -> float:
        """A lookup's own ``max_age`` wins; the default widens while degraded."""
        if asked is not None:
            return asked
        return self.degrade.max_age_s if degraded else self.cache.max_age_s

    async def _fetch(
        self,
        ids: Sequence[str],
        stale: Mapping[str, Any],
        priority: Priority,
        deadline: float,
        out: dict[str, Lookup],
    ) -> None:
        dispatcher = self.dispatcher
        if not self.breaker.permits():
            # open, or half-open with its probes out: fail fast (or serve stale), never queue
            error: Exception = UpstreamUnavailable(
                f"the upstream is failing; circuit breaker {self.breaker.state}",
                retry_after=self.breaker.retry_after() or dispatcher.rtt_estimate,
            )
            for num_iid in ids:
                out[num_iid] = self._fallback(num_iid, stale, error)
            return
        if priority is not Priority.INTERACTIVE and self.degrade.active:
            # degraded: the reserve keeps its share of the quota for interactive misses
            try:
                wait = self.degrade.hold(
                    len(ids),
                    calls_per_s=self._replica_rate(),
                    max_batch=dispatcher.max_batch,
                    now=self._clock(),
                    deadline=deadline,
                )
            except Overloaded as refused:
                for num_iid in ids:
                    out[num_iid] = self._fallback(num_iid, stale, refused)
                return
            if wait > 0:
                await asyncio.sleep(wait)
        flights = dispatcher.submit(ids, priority=priority, deadline=deadline)
        pending = {f for f in flights.values() if not f.done()}
        if pending:
            # asyncio.wait never cancels the flights: another waiter may still want them
            await asyncio.wait(pending, timeout=max(0.0, deadline - self._clock()))
        now = self._clock()
        for num_iid, flight in flights.items():
            if not flight.done():
                out[num_iid] = self._fallback(
                    num_iid, stale, DeadlineExceeded("no answer before the deadline")
                )
                continue
            exc = flight.exception()
            if exc is not None:
                out[num_iid] = self._fallback(num_iid, stale, exc)
                continue
            item: Item | None = flight.result()
            entry = self.cache.l1.peek(num_iid)
            age = entry.age(now) if entry is not None else 0.0
            out[num_iid] = Lookup(num_iid=num_iid, item=item, source=Source.UPSTREAM, age_s=age)

    def _replica_rate(self) -> float:
        """Calls per second this replica may count as its own (shared limits: a live share)."""
        rate = self.pool.total_rate()
        if self.replicas is not None and self.replicas.sharing:
            rate /= max(1, self.replicas.live_replicas)
        return rate

    def _fallback(self, num_iid: str, stale: Mapping[str, Any], error: BaseException) -> Lookup:
        entry = stale.get(num_iid)
        if entry is not None:
            self.stale_served += 1
            return Lookup(
                num_iid=num_iid,
                item=entry.item,
                source=Source.L1,
                stale=True,
                age_s=entry.age(self._clock()),
            )
        if not isinstance(error, Exception):  # pragma: no cover - flights hold Exceptions
            raise error
        return Lookup(num_iid=num_iid, error=error)

    def _refresh_ahead(self, ids: list[str]) -> None:
        if self.degrade.active:
            return  # degraded: older answers are fresh enough; the quota is for misses
        dispatcher = self.dispatcher
        room = REFRESH_QUEUE_BATCHES * dispatcher.max_batch - dispatcher.queued(Priority.REFRESH)
        if room <= 0 or self.breaker.state is not BreakerState.CLOSED:
            return
        ids = ids[:room]
        self.refreshes += len(ids)
        # a refresh that lands a little after expiry still serves the next lookups
        deadline = self._clock() + self.settings.limits.deadline_s
        dispatcher.submit(ids, priority=Priority.REFRESH, deadline=deadline)

    async def invalidate(self, ids: Iterable[str]) -> int:
        """Forget ``ids`` here, in L2 and in every replica's L1; returns how many L1 held here.

        ``last_invalidation_everywhere`` tells whether the other replicas were reached.
        """
        checked = [self._id_policy.check(i) for i in ids]
        count, everywhere = await self.cache.invalidate(checked)
        self.last_invalidation_everywhere = everywhere
        return count

    # --- state ---------------------------------------------------------------------------

    def stats(self) -> GatewayStats:
        """Counters and state of the gateway and its parts now, typed and frozen."""
        dispatcher = self.dispatcher  # raises before start
        return GatewayStats(
            lookups=self.lookups,
            l1_hits=self.hits,
            stale_served=self.stale_served,
            refresh_ahead=self.refreshes,
            cache=self.cache.stats(),
            dispatcher=dispatcher.snapshot(),
            breaker=self.breaker.stats(),
            degrade=self.degrade.stats(),
            secret_files=() if self.secret_files is None else self.secret_files.stats(),
            pool=self.pool.stats(),
            replicas=None if self.replicas is None else self.replicas.stats(),
        )

    def snapshot(self) -> dict[str, Any]:
        """:meth:`stats` in its JSON form, for tools and benchmarks."""
        return self.stats().to_dict()
