"""The gateway: cache, dispatcher, pool, breaker and provider wired into one object.

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
import contextlib
import random
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Self, Unpack

from taogate._breaker import BreakerPolicy, BreakerState, CircuitBreaker, RetryBudget
from taogate._degrade import DegradeControl
from taogate._dispatch import PROVENANCE_IDS, Dispatcher, Priority
from taogate._errors import DeadlineExceeded, InvalidRequest, Overloaded, UpstreamUnavailable
from taogate._gateway_stats import GatewayStats
from taogate._lookup import LookupOptions, LookupPolicy
from taogate._masking import mask_id
from taogate._model import Item, Lookup, Source
from taogate._secrets import SecretFiles
from taogate._settings import Settings
from taogate.cache.memory import MemoryCache
from taogate.cache.tiered import TieredCache
from taogate.providers import build_provider
from taogate.providers.base import Provider
from taogate.quota.pool import CredentialPool, PoolPolicy

if TYPE_CHECKING:
    from taogate.cache.redis import RedisTier
    from taogate.jobs._store import JobStore
    from taogate.jobs._worker import JobWorker
    from taogate.quota.redis import SharedLimits
    from taogate.shared._backend import SharedBackend
    from taogate.shared._degrade import SharedOverride

__all__ = ["Gateway"]

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
        self._provider = provider
        self._owns_provider = provider is None
        self._breaker_policy = breaker_policy
        self._clock_arg = clock
        self._rng = rng or random.Random()
        self._id_policy = settings.upstream.id_policy
        #: makes upstream text safe to show (job rows, HTTP answers): secrets out, cut short
        self.redact = settings.redactor()
        self._dispatcher: Dispatcher | None = None
        self._worker_task: asyncio.Task[None] | None = None
        self._worker: JobWorker | None = None
        self._jobs_reader: Any = None
        self._degrade_task: asyncio.Task[None] | None = None
        self._shared_override: SharedOverride | None = None
        self._started = False

    # --- lifecycle -----------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def start(self) -> None:
        """Build the parts on the running loop and start the dispatcher."""
        if self._started:
            return
        loop = asyncio.get_running_loop()
        clock = self._clock_arg or loop.time
        self._clock = clock
        s = self.settings
        egresses = s.build_egresses()
        if self._provider is None:
            self._provider = build_provider(s.upstream, egresses)
        self.breaker = CircuitBreaker(self._breaker_policy, clock=clock)
        #: degraded mode (process-local without Redis, shared by every replica with it)
        self.degrade = DegradeControl(s, clock=clock)
        self.shared: SharedBackend | None = None
        policy = PoolPolicy(safety_factor=s.limits.safety_factor)
        limits: SharedLimits | None = None
        l2: RedisTier | None = None
        if s.redis.url:
            from taogate.cache.redis import RedisTier  # only with Redis configured
            from taogate.quota.redis import SharedLimits
            from taogate.shared._backend import SharedBackend
            from taogate.shared._degrade import SharedOverride

            shared = self.shared = SharedBackend(s, clock=clock)
            limits = SharedLimits(
                shared.client,
                prefix=s.redis.prefix,
                policy=policy,
                probe_hold_s=max(10.0, 2 * s.upstream.timeout_s),
                on_malformed=shared.note_malformed,
                share=lambda: shared.shared_share,
            )
            l2 = RedisTier(
                shared.client,
                prefix=s.redis.prefix,
                max_fresh_s=max(s.cache.max_age_s, s.cache.negative_ttl_s),
                max_keep_s=s.cache.max_age_s + s.cache.max_stale_s,
                enabled=s.redis.l2,
                is_shared=lambda: shared.sharing,
                on_failure=shared.lost,
                on_malformed=shared.note_malformed,
                clock=clock,
            )
            shared.listen(l2.channel, l2.on_message)
            self._shared_override = SharedOverride(
                self.shared, self.degrade, poll_s=s.redis.heartbeat_s
            )
        self.pool = CredentialPool(
            s.build_credentials(),
            policy,
            clock=clock,
            egresses=egresses,
            shared=limits,
            replicas=self.shared,
            shared_timeout_s=s.redis.timeout_s,
        )
        self.cache = TieredCache(
            MemoryCache(
                max_entries=s.cache.l1_max_entries, max_bytes=s.cache.l1_max_bytes, clock=clock
            ),
            l2,
            max_age_s=s.cache.max_age_s,
            max_stale_s=s.cache.max_stale_s,
            negative_ttl_s=s.cache.negative_ttl_s,
            jitter=s.cache.ttl_jitter,
            clock=clock,
            rng=self._rng,
        )
        if self.shared is not None:
            await self.shared.start()
        if self._shared_override is not None:
            await self._shared_override.start()
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
        self.jobs: JobStore | None = None
        if self.shared is not None and s.jobs.enabled:
            from taogate.jobs._store import JobStore
            from taogate.jobs._worker import JobWorker
            from taogate.shared._client import connect

            self.jobs = JobStore(
                self.shared.client,
                prefix=s.redis.prefix,
                result_ttl_s=s.jobs.result_ttl_s,
                on_malformed=self.shared.note_malformed,
            )
            block_s = 1.0
            self._jobs_reader = connect(
                s.redis.model_copy(update={"timeout_s": block_s + max(1.0, s.redis.timeout_s)})
            )
            self._worker = JobWorker(
                self,
                self.jobs,
                self.shared.client,
                concurrency=s.jobs.concurrency,
                claim_idle_s=s.jobs.claim_idle_s,
                deadline_s=s.jobs.deadline_s,
                max_attempts=s.jobs.max_attempts,
                reader=self._jobs_reader,
                block_s=block_s,
            )
            self._worker_task = loop.create_task(self._worker.run(), name="taogate-jobs")
        self.secret_files = self._watch_secret_files()
        self.lookups = 0
        self.hits = 0
        self.stale_served = 0
        self.refreshes = 0
        self.last_invalidation_everywhere = True
        self._started = True

    async def aclose(self) -> None:
        """Stop the dispatcher (waiting lookups fail) and close the provider if ours."""
        if not self._started:
            return
        self._started = False
        if self._worker_task is not None:
            self._worker_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                await asyncio.wait_for(self._worker_task, timeout=5.0)
        if self._worker is not None:
            await self._worker.aclose()  # its chunks in progress stay pending for others
        if self._jobs_reader is not None:
            from taogate.shared._client import close as close_client

            await close_client(self._jobs_reader)
            self._jobs_reader = None
        if self._dispatcher is not None:
            await self._dispatcher.aclose()
        if self._degrade_task is not None:
            self._degrade_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._degrade_task
        if self._shared_override is not None:
            await self._shared_override.aclose()
        if self.secret_files is not None:
            await self.secret_files.aclose()
        await self.cache.aclose()
        if self.shared is not None:
            await self.shared.aclose()
        await self.pool.aclose()
        if self._owns_provider and self._provider is not None:
            await self._provider.aclose()

    def _watch_secret_files(self) -> SecretFiles | None:
        """Keep every ``secret_file`` secret current (poll, SIGHUP, a refused credential)."""
        files = {c.app_key: c.secret_file for c in self.settings.credentials if c.secret_file}
        if not files:
            return None
        pool = self.pool

        def rotate(app_key: str, secret: str) -> None:
            self.redact.add(secret)
            pool.replace_secret(app_key, secret)

        watcher = SecretFiles(
            files,
            {c.app_key: c.secret for c in pool.credentials},
            on_rotate=rotate,
            poll_s=self.settings.secrets.poll_s,
        )
        watcher.check("start")  # the file may have changed since the settings were read
        pool.recheck_secret = lambda app_key: watcher.check_one(app_key, "credential refused")
        watcher.start()
        return watcher

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
        self._check_started()
        checked = self._id_policy.check(num_iid)
        asked = LookupPolicy.of(policy, options)
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
        if self.shared is not None and self.shared.mode == "shared":
            rate /= max(1, self.shared.live_replicas)
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

    def shared_lost(self, exc: BaseException) -> None:
        """Redis failed for a part outside the gateway (the job routes): the replicas decide
        whether to switch to local mode (a timeout counts only after a few in a row)."""
        if self.shared is not None:
            self.shared.lost(exc)

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
            credentials=self.pool.snapshot(),  # typed by i14-pool
            egresses=self.pool.egress_snapshot(),  # typed by i14-pool
            replicas=None if self.shared is None else self.shared.describe(),  # i14-service
        )

    def snapshot(self) -> dict[str, Any]:
        """:meth:`stats` in its JSON form, for tools and benchmarks."""
        return self.stats().to_dict()
