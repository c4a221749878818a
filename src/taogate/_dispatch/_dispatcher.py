"""The dispatcher: one per process, it turns lookups into upstream calls.

It owns the loop: wait for work, wait out the batching window, wait for a credential slot,
take a batch from the queue and hand it to the sender, which runs the call in a task of its
own. Ids whose deadline cannot be met are refused when they are submitted.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
from collections.abc import Callable, Iterable

from taogate._breaker import CircuitBreaker, RetryBudget
from taogate._dispatch._queue import DispatchQueue, Flight, Priority, failed_flight
from taogate._dispatch._sender import PROVENANCE_IDS, ResultSink, Sender
from taogate._dispatch._stats import DispatchCounters, DispatcherStats
from taogate._errors import NoCredentialAvailable, Overloaded, UpstreamUnavailable
from taogate._tasks import cancel_within
from taogate.providers.base import Provider
from taogate.quota.pool import CredentialPool

__all__ = ["Dispatcher"]

log = logging.getLogger("taogate.dispatch")


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
        self._pool = pool
        self._breaker = breaker
        self._clock = clock
        self._window = batch_window_s
        self.stats = DispatchCounters()
        self._queue = DispatchQueue(self.stats)
        self._sender = Sender(
            provider,
            pool,
            self._queue,
            self.stats,
            breaker=breaker,
            retry_budget=retry_budget,
            clock=clock,
            max_attempts=max_attempts,
            expected_rtt_s=expected_rtt_s,
            on_result=on_result,
            rng=rng or random.Random(),
            provenance_ids=provenance_ids,
        )
        self._task: asyncio.Task[None] | None = None
        self._calls: set[asyncio.Task[None]] = set()

    @property
    def max_batch(self) -> int:
        return self._provider.max_batch

    @property
    def rtt_estimate(self) -> float:
        """The moving average of call durations, in seconds."""
        return self._sender.rtt

    def queued(self, priority: Priority | None = None) -> int:
        """Ids waiting (not in flight), in one class or in all."""
        return self._queue.queued(priority)

    @property
    def in_flight(self) -> int:
        return self._queue.in_flight

    def snapshot(self) -> DispatcherStats:
        """A frozen copy of :attr:`stats`, with the queue as it is now."""
        return DispatcherStats(
            counts=self.stats.copy(),
            queued={p.name.lower(): self.queued(p) for p in Priority},
            in_flight=self.in_flight,
        )

    def fetched_by(self, num_iid: str) -> tuple[str, str] | None:
        """``(masked credential, egress)`` of this replica's last upstream answer for
        ``num_iid``, while it is among the last ``provenance_ids`` ids fetched here."""
        return self._sender.fetched_by(num_iid)

    def interactive_load(self, window_s: float = 10.0) -> float:
        """Upstream calls' worth of interactive ids per second, over the last ``window_s``.

        Counted in ids, not calls: ids of lower priorities fill the room an interactive call
        leaves, so what interactive traffic takes from the quota is its ids over ``max_batch``.
        ``window_s`` is at most ``INTERACTIVE_LOAD_WINDOW_S`` (60 s).
        """
        return self._sender.interactive_load(window_s, self.max_batch)

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
            joined = self._queue.join(num_iid, priority, deadline)
            if joined is not None:
                self.stats.joined += 1
                out[num_iid] = joined
                continue
            if ahead is None:
                ahead = self._queue.ahead_of(priority)
                rate = self._pool.total_rate()
                credential, ready_at = self._pool.next_ready()  # a ban delays everything
                if credential is None:
                    retry = None if math.isinf(ready_at) else max(0.0, ready_at - now)
                    unusable = NoCredentialAvailable("no usable credential", retry_after=retry)
                paused = max(0.0, ready_at - now)
            if unusable is not None:
                self.stats.unavailable += 1
                out[num_iid] = failed_flight(unusable)
                continue
            wait = paused + self._estimate_wait(ahead, rate)
            if now + wait > deadline:
                self.stats.overloaded += 1
                retry = max(0.0, now + wait - deadline)
                out[num_iid] = failed_flight(
                    Overloaded(
                        f"{ahead} ids queued ahead; not before the deadline at {rate:.1f} calls/s",
                        retry_after=retry,
                    )
                )
                continue
            out[num_iid] = self._queue.add(num_iid, priority, deadline, now)
            ahead += 1
        self._queue.wake()
        if priority is Priority.INTERACTIVE:
            self._pool.wake()  # a wait for a slot becomes urgent: claim it from other replicas
        return out

    def _estimate_wait(self, ahead: int, rate: float) -> float:
        """Seconds until an id with ``ahead`` ids before it is answered."""
        batches_before = ahead // self.max_batch
        if batches_before == 0:
            return self._sender.rtt
        if rate <= 0:
            return math.inf
        return batches_before / rate + self._sender.rtt

    # --- the loop ------------------------------------------------------------------------

    async def wait_idle(self) -> None:
        """Return once no id is queued or in flight (for graceful shutdown and tests)."""
        await self._queue.wait_idle()

    def start(self) -> None:
        """Start the dispatch loop on the running event loop."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="dispatcher")

    async def aclose(self) -> None:
        """Stop the loop and the calls in flight; every waiting flight fails."""
        tasks = [t for t in (self._task, *self._calls) if t is not None]
        # bounded: a call waiting on the shared limiter may be stuck in the Redis client
        await cancel_within(tasks, log=log, what="dispatcher tasks")
        self._task = None
        self._queue.fail_all(UpstreamUnavailable("the gateway is closing"))

    async def _run(self) -> None:
        queue = self._queue
        while True:
            now = self._clock()
            eligible, soonest = queue.eligible(now)
            if eligible == 0:
                await queue.sleep_for_work(None if math.isinf(soonest) else soonest - now)
                continue
            if not self._breaker.permits():
                # open, or half-open with every probe out: answer now, do not queue behind it
                self.stats.unavailable += 1
                queue.fail_queued(self._breaker_error())
                continue
            # Batch first, then the slot: the lease is stamped right before the call goes out,
            # so the pool's pacing and window guard hold for what the upstream sees, and a
            # credential banned or quarantined meanwhile is never used.
            await self._fill_window()
            try:
                lease = await self._pool.acquire(urgent=queue.urgent)
            except NoCredentialAvailable as exc:
                self.stats.unavailable += 1
                queue.fail_queued(exc)
                continue
            batch = queue.take(self._clock(), self.max_batch)
            if not batch:
                self._pool.release_unused(lease)
                continue
            if not self._breaker.allow():  # the last probe went while we waited for the lease
                self._pool.release_unused(lease)
                self.stats.unavailable += 1
                for pending in batch:
                    queue.settle(pending, self._breaker_error())
                continue
            generation = self._breaker.generation
            call = self._sender.send(lease, batch, generation)
            task = asyncio.get_running_loop().create_task(call)
            self._calls.add(task)
            task.add_done_callback(self._calls.discard)

    def _breaker_error(self) -> UpstreamUnavailable:
        return UpstreamUnavailable(
            f"the upstream is failing; circuit breaker {self._breaker.state}",
            retry_after=self._breaker.retry_after() or self._sender.rtt,
        )

    async def _fill_window(self) -> None:
        """With fewer than ``max_batch`` ids pending, wait out the batching window."""
        if self._window <= 0:
            return
        while True:
            now = self._clock()
            eligible, _ = self._queue.eligible(now)
            if eligible >= self.max_batch or self._queue.has_groups:
                return
            left = self._queue.oldest(now) + self._window - now
            if left <= 0:
                return
            await self._queue.sleep_for_work(left)
