"""The dispatcher: singleflight, priority micro-batching, deadlines, retries.

One dispatcher per process turns a flood of lookups into as few and as full upstream calls as
the quota allows:

- **Singleflight.** An id already pending or in flight is joined, never fetched twice. Callers
  get the flight's future and wait on it through ``asyncio.shield`` so one waiter's cancellation
  never cancels the fetch for the others; an error reaches every waiter.
- **Priorities.** Pending ids wait in three classes, interactive > refresh-ahead > bulk. Joining
  a pending id from a higher class promotes it.
- **Token-driven batching.** The loop waits for a credential slot, then takes up to
  ``max_batch`` ids by priority; when fewer are pending it waits at most the batching window
  (counted from the oldest pending id) for more. Under backlog every batch is full.
- **Deadlines.** Every id carries a deadline. An id whose place in the queue cannot be served
  before it at the current rate is refused at once with :class:`Overloaded`.
- **Failures.** A rate limit or an invalid credential puts the batch back at the head of its
  queue (the pool pauses or quarantines the credential); a bad request is bisected until the
  bad id is alone; transient faults are retried after jittered back-off within the deadline and
  the retry budget; a protocol mismatch fails the batch. An item the provider could not read
  (:class:`ItemUnreadable`) fails its own id only: it is neither retried nor cached.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import logging
import math
import random
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import IntEnum

from taogate._breaker import CircuitBreaker, RetryBudget, backoff
from taogate._errors import (
    CredentialInvalid,
    DeadlineExceeded,
    EgressUnreachable,
    NoCredentialAvailable,
    Overloaded,
    ProtocolMismatch,
    RateLimited,
    TaogateError,
    UpstreamBadRequest,
    UpstreamTransient,
    UpstreamUnavailable,
)
from taogate._model import Item
from taogate.providers.base import Provider, split_answer
from taogate.quota.pool import CredentialPool, Lease

__all__ = ["WAIT_BUCKETS", "DispatchCounters", "Dispatcher", "DispatcherStats", "Priority"]

log = logging.getLogger("taogate.dispatch")

Flight = asyncio.Future[Item | None]
ResultSink = Callable[[Sequence[str], Mapping[str, Item]], None]


class Priority(IntEnum):
    """Lower is served first."""

    INTERACTIVE = 0
    REFRESH = 1
    BULK = 2


@dataclass(slots=True, eq=False)
class _Lineage:
    """The calls left to bisect one refused batch."""

    calls_left: int


@dataclass(slots=True, eq=False)
class _Pending:
    num_iid: str
    future: Flight
    priority: Priority
    deadline: float
    enqueued_at: float
    attempts: int = 0
    not_before: float = 0.0
    lineage: _Lineage | None = None


#: Ids whose fetching credential the dispatcher remembers (for the operator console), by
#: default; the gateway keeps no more than L1 holds.
PROVENANCE_IDS = 20_000

#: The longest window :meth:`Dispatcher.interactive_load` may look back over; older calls are
#: forgotten as new ones are counted, so the record holds at most this many seconds of calls.
INTERACTIVE_LOAD_WINDOW_S = 60.0

#: Upper bounds (seconds) of the queue-wait histogram's buckets.
WAIT_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


@dataclass(slots=True)
class DispatchCounters:
    """What the dispatcher counts as it works (:meth:`Dispatcher.snapshot` freezes a copy)."""

    calls: int = 0
    calls_ok: int = 0
    ids_sent: int = 0
    items_found: int = 0
    joined: int = 0
    rate_limited: int = 0
    credential_invalid: int = 0
    transient: int = 0
    retries: int = 0
    bisections: int = 0
    overloaded: int = 0
    expired: int = 0
    unavailable: int = 0
    #: leases given back unused: the call could not go out soon enough after its grant
    late_leases: int = 0
    #: calls that found no connection through their egress while another egress worked
    egress_unreachable: int = 0
    #: ids whose item was in an answer but could not be read (failed alone, not cached)
    items_unreadable: int = 0
    batch_sizes: dict[int, int] = field(default_factory=dict)
    #: calls by the most urgent priority they carried (``interactive``, ``refresh``, ``bulk``)
    calls_by_priority: dict[str, int] = field(default_factory=dict)
    #: ids sent, by their own priority (a bulk id riding in an interactive call counts as bulk)
    ids_by_priority: dict[str, int] = field(default_factory=dict)
    #: ids sent, by how long they waited in the queue (bucket i: <= WAIT_BUCKETS[i]; last: more)
    wait_counts: list[int] = field(default_factory=lambda: [0] * (len(WAIT_BUCKETS) + 1))
    wait_sum_s: float = 0.0

    def observe_wait(self, seconds: float) -> None:
        self.wait_counts[bisect.bisect_left(WAIT_BUCKETS, seconds)] += 1
        self.wait_sum_s += seconds


@dataclass(frozen=True, slots=True, kw_only=True)
class DispatcherStats:
    """The dispatcher at one moment: its counters (see :class:`DispatchCounters`, whose fields
    these are, copied) and its queue. Maps by priority are keyed by the priority's name in
    lower case (``interactive``, ``refresh``, ``bulk``)."""

    calls: int
    calls_ok: int
    ids_sent: int
    items_found: int
    joined: int
    rate_limited: int
    credential_invalid: int
    transient: int
    retries: int
    bisections: int
    overloaded: int
    expired: int
    unavailable: int
    late_leases: int
    egress_unreachable: int
    items_unreadable: int
    #: calls by the ids they carried, in ascending order of size
    batch_sizes: Mapping[int, int]
    #: calls by the most urgent priority they carried (a priority never counted is absent)
    calls_by_priority: Mapping[str, int]
    #: ids sent, by their own priority (a priority never counted is absent)
    ids_by_priority: Mapping[str, int]
    #: ids sent, by their wait in the queue (bucket i: <= WAIT_BUCKETS[i]; last: more)
    wait_counts: tuple[int, ...]
    wait_sum_s: float
    #: ids waiting now, by priority (every priority)
    queued: Mapping[str, int]
    #: ids in calls on the wire now
    in_flight: int


def _consume(future: Flight) -> None:
    """Mark a flight's exception as retrieved: a flight may end with nobody waiting on it."""
    if not future.cancelled():
        future.exception()


class Dispatcher:
    """Batches lookups onto credentials; start it with :meth:`start`, stop with :meth:`aclose`."""

    def __init__(
        self,
        provider: Provider,
        pool: CredentialPool,
        *,
        breaker: CircuitBreaker,
        retry_budget: RetryBudget,
        clock: Callable[[], float],
        batch_window_s: float = 0.010,
        max_attempts: int = 3,
        expected_rtt_s: float = 0.35,
        on_result: ResultSink | None = None,
        rng: random.Random | None = None,
        provenance_ids: int = PROVENANCE_IDS,
    ) -> None:
        self._provider = provider
        self._provenance_ids = max(1, provenance_ids)
        self._pool = pool
        self._breaker = breaker
        self._budget = retry_budget
        self._clock = clock
        self._window = batch_window_s
        self._max_attempts = max_attempts
        self._rtt = expected_rtt_s
        self._on_result = on_result
        self._rng = rng or random.Random()
        self._queues: tuple[OrderedDict[str, _Pending], ...] = tuple(
            OrderedDict() for _ in Priority
        )
        self._groups: deque[list[_Pending]] = deque()  # bisected batches, sent as they are
        self._index: dict[str, _Pending] = {}  # every id pending or in flight
        self._wakeup = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._task: asyncio.Task[None] | None = None
        self._calls: set[asyncio.Task[None]] = set()
        # (start, ids) of calls carrying interactive ids, the last INTERACTIVE_LOAD_WINDOW_S
        self._interactive_ids: deque[tuple[float, int]] = deque()
        #: which credential and egress last fetched an id (the most recent ids only)
        self._provenance: OrderedDict[str, tuple[str, str]] = OrderedDict()
        self.stats = DispatchCounters()

    @property
    def max_batch(self) -> int:
        return self._provider.max_batch

    @property
    def rtt_estimate(self) -> float:
        """The moving average of call durations, in seconds."""
        return self._rtt

    def queued(self, priority: Priority | None = None) -> int:
        """Ids waiting (not in flight), in one class or in all."""
        if priority is None:
            return sum(len(q) for q in self._queues) + sum(len(g) for g in self._groups)
        return len(self._queues[priority])

    @property
    def in_flight(self) -> int:
        return len(self._index) - self.queued()

    def snapshot(self) -> DispatcherStats:
        """A frozen copy of :attr:`stats`, with the queue as it is now."""
        c = self.stats
        return DispatcherStats(
            calls=c.calls,
            calls_ok=c.calls_ok,
            ids_sent=c.ids_sent,
            items_found=c.items_found,
            joined=c.joined,
            rate_limited=c.rate_limited,
            credential_invalid=c.credential_invalid,
            transient=c.transient,
            retries=c.retries,
            bisections=c.bisections,
            overloaded=c.overloaded,
            expired=c.expired,
            unavailable=c.unavailable,
            late_leases=c.late_leases,
            egress_unreachable=c.egress_unreachable,
            items_unreadable=c.items_unreadable,
            batch_sizes=dict(sorted(c.batch_sizes.items())),
            calls_by_priority=dict(c.calls_by_priority),
            ids_by_priority=dict(c.ids_by_priority),
            wait_counts=tuple(c.wait_counts),
            wait_sum_s=c.wait_sum_s,
            queued={p.name.lower(): self.queued(p) for p in Priority},
            in_flight=self.in_flight,
        )

    # --- submitting ----------------------------------------------------------------------

    def submit(
        self, ids: Iterable[str], *, priority: Priority, deadline: float
    ) -> dict[str, Flight]:
        """A flight per id: joined when the id is already pending or in flight, else queued.

        An id that cannot be sent before ``deadline`` given the queue ahead of it and the
        current rate gets a flight that has already failed with :class:`Overloaded`.
        """
        now = self._clock()
        out: dict[str, Flight] = {}
        ahead: int | None = None
        rate = paused = 0.0
        unusable: NoCredentialAvailable | None = None
        for num_iid in ids:
            if num_iid in out:
                continue
            pending = self._index.get(num_iid)
            if pending is not None:
                self.stats.joined += 1
                pending.deadline = max(pending.deadline, deadline)
                if priority < pending.priority and num_iid in self._queues[pending.priority]:
                    del self._queues[pending.priority][num_iid]
                    pending.priority = priority
                    self._queues[priority][num_iid] = pending
                out[num_iid] = pending.future
                continue
            if ahead is None:
                ahead = self._ahead_of(priority)
                rate = self._pool.total_rate()
                credential, ready_at = self._pool.next_ready()  # a ban delays everything
                if credential is None:
                    retry = None if math.isinf(ready_at) else max(0.0, ready_at - now)
                    unusable = NoCredentialAvailable("no usable credential", retry_after=retry)
                paused = max(0.0, ready_at - now)
            if unusable is not None:
                self.stats.unavailable += 1
                out[num_iid] = self._failed(unusable)
                continue
            wait = paused + self._estimate_wait(ahead, rate)
            if now + wait > deadline:
                self.stats.overloaded += 1
                retry = max(0.0, now + wait - deadline)
                out[num_iid] = self._failed(
                    Overloaded(
                        f"{ahead} ids queued ahead; not before the deadline at {rate:.1f} calls/s",
                        retry_after=retry,
                    )
                )
                continue
            future: Flight = asyncio.get_running_loop().create_future()
            future.add_done_callback(_consume)
            pending = _Pending(num_iid, future, priority, deadline, now)
            self._index[num_iid] = pending
            self._idle.clear()
            self._queues[priority][num_iid] = pending
            out[num_iid] = future
            ahead += 1
        self._wakeup.set()
        if priority is Priority.INTERACTIVE:
            self._pool.wake()  # a wait for a slot becomes urgent: claim it from other replicas
        return out

    def _urgent(self) -> bool:
        """Whether interactive lookups are waiting for the next call."""
        return bool(self._queues[Priority.INTERACTIVE]) or any(
            p.priority is Priority.INTERACTIVE for g in self._groups for p in g
        )

    def _ahead_of(self, priority: Priority) -> int:
        return sum(len(g) for g in self._groups) + sum(
            len(self._queues[p]) for p in Priority if p <= priority
        )

    def _estimate_wait(self, ahead: int, rate: float) -> float:
        """Seconds until an id with ``ahead`` ids before it is answered."""
        batches_before = ahead // self.max_batch
        if batches_before == 0:
            return self._rtt
        if rate <= 0:
            return math.inf
        return batches_before / rate + self._rtt

    def _failed(self, error: BaseException) -> Flight:
        future: Flight = asyncio.get_running_loop().create_future()
        future.add_done_callback(_consume)
        future.set_exception(error)
        return future

    # --- the loop ------------------------------------------------------------------------

    async def wait_idle(self) -> None:
        """Return once no id is queued or in flight (for graceful shutdown and tests)."""
        await self._idle.wait()

    def start(self) -> None:
        """Start the dispatch loop on the running event loop."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="dispatcher")

    async def aclose(self) -> None:
        """Stop the loop and the calls in flight; every waiting flight fails."""
        tasks = [t for t in (self._task, *self._calls) if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._task = None
        self._fail_all(UpstreamUnavailable("the gateway is closing"))

    def _eligible(self, now: float) -> tuple[int, float]:
        """How many ids could go now, and when the earliest deferred one could."""
        count = sum(len(g) for g in self._groups)
        soonest = math.inf
        for queue in self._queues:
            for pending in queue.values():
                if pending.not_before <= now:
                    count += 1
                else:
                    soonest = min(soonest, pending.not_before)
        return count, soonest

    async def _sleep_for_work(self, at_most_s: float | None) -> None:
        """Sleep until new work or a change (a call ending) wakes the loop, or ``at_most_s``."""
        self._wakeup.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wakeup.wait(), timeout=at_most_s)

    async def _run(self) -> None:
        while True:
            now = self._clock()
            eligible, soonest = self._eligible(now)
            if eligible == 0:
                await self._sleep_for_work(None if math.isinf(soonest) else soonest - now)
                continue
            if not self._breaker.permits():
                # open, or half-open with every probe out: answer now, do not queue behind it
                self.stats.unavailable += 1
                self._fail_queued(self._breaker_error())
                continue
            # Batch first, then the slot: the lease is stamped right before the call goes out,
            # so the pool's pacing and window guard hold for what the upstream sees, and a
            # credential banned or quarantined meanwhile is never used.
            await self._fill_window()
            try:
                lease = await self._pool.acquire(urgent=self._urgent)
            except NoCredentialAvailable as exc:
                self.stats.unavailable += 1
                self._fail_queued(exc)
                continue
            batch = self._take(self._clock())
            if not batch:
                self._pool.release_unused(lease)
                continue
            if not self._breaker.allow():  # the last probe went while we waited for the lease
                self._pool.release_unused(lease)
                self.stats.unavailable += 1
                for pending in batch:
                    self._settle(pending, self._breaker_error())
                continue
            generation = self._breaker.generation
            task = asyncio.get_running_loop().create_task(self._call(lease, batch, generation))
            self._calls.add(task)
            task.add_done_callback(self._calls.discard)

    def _breaker_error(self) -> UpstreamUnavailable:
        return UpstreamUnavailable(
            f"the upstream is failing; circuit breaker {self._breaker.state}",
            retry_after=self._breaker.retry_after() or self._rtt,
        )

    async def _fill_window(self) -> None:
        """With fewer than ``max_batch`` ids pending, wait out the batching window."""
        if self._window <= 0:
            return
        while True:
            now = self._clock()
            eligible, _ = self._eligible(now)
            if eligible >= self.max_batch or self._groups:
                return
            oldest = min((p.enqueued_at for q in self._queues for p in q.values()), default=now)
            left = oldest + self._window - now
            if left <= 0:
                return
            await self._sleep_for_work(left)

    def _take(self, now: float) -> list[_Pending]:
        while self._groups:
            group = [p for p in self._groups.popleft() if not self._expired(p, now)]
            if group:
                return group
        batch: list[_Pending] = []
        for queue in self._queues:
            for num_iid, pending in list(queue.items()):
                if pending.not_before > now:
                    continue
                del queue[num_iid]
                if self._expired(pending, now):
                    continue
                batch.append(pending)
                self.stats.observe_wait(now - pending.enqueued_at)
                if len(batch) == self.max_batch:
                    return batch
        return batch

    def _expired(self, pending: _Pending, now: float) -> bool:
        """Settle ``pending`` as expired if its deadline has passed (no quota spent on it)."""
        if pending.deadline >= now:
            return False
        self.stats.expired += 1
        self._settle(pending, DeadlineExceeded("the deadline passed in the queue"))
        return True

    def _requeue(self, batch: Sequence[_Pending], *, not_before: float = 0.0) -> None:
        """Put ids back at the head of their queues (in their order)."""
        for pending in reversed(batch):
            pending.not_before = not_before
            queue = self._queues[pending.priority]
            queue[pending.num_iid] = pending
            queue.move_to_end(pending.num_iid, last=False)
        self._wakeup.set()

    # --- one upstream call ---------------------------------------------------------------

    def fetched_by(self, num_iid: str) -> tuple[str, str] | None:
        """``(masked credential, egress)`` of this replica's last upstream answer for
        ``num_iid``, while it is among the last ``provenance_ids`` ids fetched here."""
        return self._provenance.get(num_iid)

    def interactive_load(self, window_s: float = 10.0) -> float:
        """Upstream calls' worth of interactive ids per second, over the last ``window_s``.

        Counted in ids, not calls: ids of lower priorities fill the room an interactive call
        leaves, so what interactive traffic takes from the quota is its ids over ``max_batch``.
        ``window_s`` is at most :data:`INTERACTIVE_LOAD_WINDOW_S`.
        """
        if not 0 < window_s <= INTERACTIVE_LOAD_WINDOW_S:
            raise ValueError(f"window_s must be in (0, {INTERACTIVE_LOAD_WINDOW_S:g}]")
        now = self._clock()
        self._forget_interactive(now)
        edge = now - window_s
        return sum(n for t, n in self._interactive_ids if t >= edge) / self.max_batch / window_s

    def _forget_interactive(self, now: float) -> None:
        """Drop calls older than the longest window: the record stays bounded however long
        nobody asks for the load (it is read only when a job is submitted)."""
        edge = now - INTERACTIVE_LOAD_WINDOW_S
        while self._interactive_ids and self._interactive_ids[0][0] < edge:
            self._interactive_ids.popleft()

    async def _call(self, lease: Lease, batch: list[_Pending], generation: int) -> None:
        ids = [p.num_iid for p in batch]
        started = self._clock()
        if started - lease.asked_at > self._pool.send_slack(lease) / 2:
            # The event loop stalled between the grant and the send (CPU starvation, a
            # throttled container): sent now, this call would reach the upstream later than its
            # slot, closer to the next calls than the platform's one-second window allows.
            # Give the slot back and ask again at the real time.
            self.stats.late_leases += 1
            self._pool.release_unused(lease)
            self._breaker.release(generation)
            self._requeue(batch)
            return
        lead = min(p.priority for p in batch)
        by_id = self.stats.ids_by_priority
        for p in batch:
            name = p.priority.name.lower()
            by_id[name] = by_id.get(name, 0) + 1
        by_call = self.stats.calls_by_priority
        by_call[lead.name.lower()] = by_call.get(lead.name.lower(), 0) + 1
        interactive = sum(p.priority is Priority.INTERACTIVE for p in batch)
        if interactive:
            self._forget_interactive(started)
            self._interactive_ids.append((started, interactive))
        self.stats.calls += 1
        self.stats.ids_sent += len(ids)
        self.stats.batch_sizes[len(ids)] = self.stats.batch_sizes.get(len(ids), 0) + 1
        self._budget.deposit()
        try:
            answer = await self._provider.fetch(ids, lease.credential)
        except RateLimited as exc:
            self.stats.rate_limited += 1
            self._pool.on_rate_limited(lease, exc.retry_after)
            self._breaker.release(generation)
            log.warning("rate limited: %s; %d ids requeued", exc, len(ids))
            self._requeue(batch)
        except CredentialInvalid as exc:
            self.stats.credential_invalid += 1
            quarantined = self._pool.on_invalid(lease)
            self._breaker.record(
                failed=False, duration_s=self._clock() - started, generation=generation
            )
            if quarantined:
                log.error("credential refused, quarantined: %s", exc)
            else:  # signed with a secret rotated out meanwhile: send again with the new one
                log.info("credential refused its old secret (rotated); %d ids requeued", len(ids))
            self._requeue(batch)
        except UpstreamBadRequest as exc:
            self._pool.on_done(lease)
            self._breaker.record(
                failed=False, duration_s=self._clock() - started, generation=generation
            )
            self._bisect(batch, exc)
        except ProtocolMismatch as exc:
            self._pool.on_done(lease)
            self._breaker.record(
                failed=False, duration_s=self._clock() - started, generation=generation
            )
            log.error("upstream refused the request itself: %s", exc)
            for pending in batch:
                self._settle(pending, exc)
        except EgressUnreachable as exc:
            self._pool.on_done(lease)
            if self._pool.on_egress_unreachable(lease):  # another egress works: move on
                self.stats.egress_unreachable += 1
                self._breaker.release(generation)
                log.warning("%s; %d ids go out another way", exc, len(ids))
                self._requeue(batch)
            else:  # no way out works: the upstream's fault
                self.stats.transient += 1
                self._breaker.record(
                    failed=True, duration_s=self._clock() - started, generation=generation
                )
                self._retry_or_fail(batch, exc)
        except UpstreamTransient as exc:
            self.stats.transient += 1
            self._pool.on_done(lease)
            self._breaker.record(
                failed=True, duration_s=self._clock() - started, generation=generation
            )
            self._retry_or_fail(batch, exc)
        except asyncio.CancelledError:
            self._pool.on_done(lease)
            self._breaker.release(generation)
            for pending in batch:
                self._settle(pending, UpstreamUnavailable("the gateway is closing"))
            raise
        except Exception as exc:  # a bug (ours or the provider's): fail loudly, never hang
            self._pool.on_done(lease)
            self._breaker.release(generation)
            log.exception("unexpected error from the provider")
            for pending in batch:
                self._settle(pending, exc)
        else:
            duration = self._clock() - started
            items, unreadable = split_answer(answer)
            if unreadable:
                self.stats.items_unreadable += len(unreadable)
                log.warning(
                    "%d item(s) of a call could not be read: %s",
                    len(unreadable),
                    next(iter(unreadable.values())),
                )
            self.stats.calls_ok += 1
            self.stats.items_found += len(items)
            self._rtt = 0.8 * self._rtt + 0.2 * duration
            self._pool.on_success(lease)
            self._breaker.record(failed=False, duration_s=duration, generation=generation)
            fetched_by = (lease.credential.masked, lease.state.egress.egress.name)
            provenance = self._provenance
            for num_iid in ids:
                provenance[num_iid] = fetched_by
                provenance.move_to_end(num_iid)
            while len(provenance) > self._provenance_ids:
                provenance.popitem(last=False)
            if self._on_result is not None:
                answered = [i for i in ids if i not in unreadable]  # unreadable: not "absent"
                try:
                    self._on_result(answered, items)  # the cache is written before anyone wakes
                except Exception:  # a cache that cannot be written must not lose the answer
                    log.exception("writing the answer to the cache failed")
            for pending in batch:
                failed = unreadable.get(pending.num_iid)
                self._settle(pending, failed if failed is not None else items.get(pending.num_iid))
        finally:
            # whatever happened above, no flight of this batch is left hanging
            for pending in batch:
                if not pending.future.done() and self._index.get(pending.num_iid) is pending:
                    if pending.num_iid in self._queues[pending.priority] or any(
                        pending in g for g in self._groups
                    ):
                        continue  # requeued: it will be sent again
                    self._settle(pending, UpstreamUnavailable("the call ended without an answer"))
            self._wakeup.set()

    def _bisect(self, batch: list[_Pending], exc: UpstreamBadRequest) -> None:
        """Split a refused batch until the bad id stands alone; only that id fails.

        The splits of one original batch share a budget of calls (enough to isolate two bad
        ids): a refusal that is not about one id — every half refused — ends there instead of
        spending a call per id.
        """
        lineage = batch[0].lineage
        if lineage is None:
            lineage = _Lineage(calls_left=4 * max(1, math.ceil(math.log2(max(2, len(batch))))))
            for pending in batch:
                pending.lineage = lineage
        if len(batch) > 1 and lineage.calls_left < 2:
            for pending in batch:
                self._settle(pending, exc)
            return
        if len(batch) == 1:
            (pending,) = batch
            self._settle(
                pending,
                UpstreamBadRequest(
                    f"the upstream refused item {pending.num_iid}: {exc.message}",
                    ids=(pending.num_iid,),
                    credential=exc.credential,
                    request_id=exc.request_id,
                    code=exc.code,
                    sub_code=exc.sub_code,
                ),
            )
            return
        self.stats.bisections += 1
        lineage.calls_left -= 2
        half = len(batch) // 2
        self._groups.appendleft(batch[half:])
        self._groups.appendleft(batch[:half])
        self._wakeup.set()

    def _retry_or_fail(self, batch: list[_Pending], exc: UpstreamTransient) -> None:
        now = self._clock()
        attempts = max(p.attempts for p in batch) + 1
        delay = backoff(attempts, rng=self._rng)
        retry: list[_Pending] = []
        for pending in batch:
            pending.attempts += 1
            if pending.attempts < self._max_attempts and now + delay + self._rtt < pending.deadline:
                retry.append(pending)
            else:
                self._settle(pending, exc)
        if retry and self._budget.try_withdraw():
            self.stats.retries += 1
            self._requeue(retry, not_before=now + delay)
        else:
            for pending in retry:
                self._settle(pending, exc)

    # --- ending flights ------------------------------------------------------------------

    def _settle(self, pending: _Pending, outcome: Item | BaseException | None) -> None:
        if self._index.get(pending.num_iid) is pending:
            del self._index[pending.num_iid]
            if not self._index:
                self._idle.set()
        if pending.future.done():
            return
        if isinstance(outcome, BaseException):
            pending.future.set_exception(outcome)
        else:
            pending.future.set_result(outcome)

    def _fail_queued(self, error: TaogateError) -> None:
        for queue in self._queues:
            for pending in list(queue.values()):
                self._settle(pending, error)
            queue.clear()
        while self._groups:
            for pending in self._groups.popleft():
                self._settle(pending, error)

    def _fail_all(self, error: TaogateError) -> None:
        self._fail_queued(error)
        for pending in list(self._index.values()):
            self._settle(pending, error)
