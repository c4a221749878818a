"""One upstream call: send a batch on its lease, then settle what the outcome means per id
(requeue, bisect, retry or fail: the rules are in the package's docstring).

The sender also keeps what calls leave behind: the moving average of their duration, which
credential fetched each recent id, and the interactive ids sent of late.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping, Sequence

from taogate._breaker import CircuitBreaker, RetryBudget, backoff
from taogate._dispatch._queue import DispatchQueue, Lineage, Pending, Priority
from taogate._dispatch._stats import DispatchCounters
from taogate._errors import (
    CredentialInvalid,
    EgressUnreachable,
    IpNotWhitelisted,
    ProtocolMismatch,
    RateLimited,
    UpstreamBadRequest,
    UpstreamTransient,
    UpstreamUnavailable,
)
from taogate._model import Item
from taogate.providers.base import Provider, split_answer
from taogate.quota.pool import CredentialPool, Lease

__all__ = ["INTERACTIVE_LOAD_WINDOW_S", "PROVENANCE_IDS", "ResultSink", "Sender"]

log = logging.getLogger("taogate.dispatch")

ResultSink = Callable[[Sequence[str], Mapping[str, Item]], None]

#: Ids whose fetching credential the dispatcher remembers (for the operator console), by
#: default; the gateway keeps no more than L1 holds.
PROVENANCE_IDS = 20_000

#: The longest window :meth:`Sender.interactive_load` may look back over; older calls are
#: forgotten as new ones are counted, so the record holds at most this many seconds of calls.
INTERACTIVE_LOAD_WINDOW_S = 60.0


class Sender:
    """Sends batches taken from ``queue`` and settles or requeues their ids there."""

    def __init__(
        self,
        provider: Provider,
        pool: CredentialPool,
        queue: DispatchQueue,
        stats: DispatchCounters,
        *,
        breaker: CircuitBreaker,
        retry_budget: RetryBudget,
        clock: Callable[[], float],
        max_attempts: int,
        expected_rtt_s: float,
        on_result: ResultSink | None,
        rng: random.Random,
        provenance_ids: int,
    ) -> None:
        self._provider = provider
        self._pool = pool
        self._queue = queue
        self._stats = stats
        self._breaker = breaker
        self._budget = retry_budget
        self._clock = clock
        self._max_attempts = max_attempts
        self._on_result = on_result
        self._rng = rng
        self._provenance_ids = max(1, provenance_ids)
        #: the moving average of call durations, in seconds
        self.rtt = expected_rtt_s
        # (start, ids) of calls carrying interactive ids, the last INTERACTIVE_LOAD_WINDOW_S
        self._interactive_ids: deque[tuple[float, int]] = deque()
        #: which credential and egress last fetched an id (the most recent ids only)
        self._provenance: OrderedDict[str, tuple[str, str]] = OrderedDict()

    # --- what calls leave behind ---------------------------------------------------------

    def fetched_by(self, num_iid: str) -> tuple[str, str] | None:
        """``(masked credential, egress)`` of the last upstream answer for ``num_iid``, while it
        is among the last ``provenance_ids`` ids fetched."""
        return self._provenance.get(num_iid)

    def interactive_load(self, window_s: float, max_batch: int) -> float:
        """Calls' worth (``max_batch`` ids a call) of interactive ids per second, over the last
        ``window_s`` (at most :data:`INTERACTIVE_LOAD_WINDOW_S`)."""
        if not 0 < window_s <= INTERACTIVE_LOAD_WINDOW_S:
            raise ValueError(f"window_s must be in (0, {INTERACTIVE_LOAD_WINDOW_S:g}]")
        now = self._clock()
        self._forget_interactive(now)
        edge = now - window_s
        return sum(n for t, n in self._interactive_ids if t >= edge) / max_batch / window_s

    def _forget_interactive(self, now: float) -> None:
        """Drop calls older than the longest window: the record stays bounded however long
        nobody asks for the load (it is read only when a job is submitted)."""
        edge = now - INTERACTIVE_LOAD_WINDOW_S
        while self._interactive_ids and self._interactive_ids[0][0] < edge:
            self._interactive_ids.popleft()

    def _count(self, batch: list[Pending], started: float) -> None:
        """Count a call going out: by priority, by size, and its interactive ids."""
        stats = self._stats
        lead = min(p.priority for p in batch)
        by_id = stats.ids_by_priority
        for p in batch:
            name = p.priority.name.lower()
            by_id[name] = by_id.get(name, 0) + 1
        by_call = stats.calls_by_priority
        by_call[lead.name.lower()] = by_call.get(lead.name.lower(), 0) + 1
        interactive = sum(p.priority is Priority.INTERACTIVE for p in batch)
        if interactive:
            self._forget_interactive(started)
            self._interactive_ids.append((started, interactive))
        stats.calls += 1
        stats.ids_sent += len(batch)
        stats.batch_sizes[len(batch)] = stats.batch_sizes.get(len(batch), 0) + 1

    # --- one call ------------------------------------------------------------------------

    async def send(self, lease: Lease, batch: list[Pending], generation: int) -> None:
        """Send ``batch`` on ``lease`` (granted in breaker ``generation``) and settle it."""
        ids = [p.num_iid for p in batch]
        started = self._clock()
        if started - lease.asked_at > self._pool.send_slack(lease) / 2:
            # The event loop stalled between the grant and the send (CPU starvation, a
            # throttled container): sent now, this call would reach the upstream later than its
            # slot, closer to the next calls than the platform's one-second window allows.
            # Give the slot back and ask again at the real time.
            self._stats.late_leases += 1
            self._pool.release_unused(lease)
            self._breaker.release(generation)
            self._queue.requeue(batch)
            return
        self._count(batch, started)
        self._budget.deposit()
        try:
            answer = await self._provider.fetch(ids, lease.credential)
        except RateLimited as exc:
            self._stats.rate_limited += 1
            self._pool.on_rate_limited(lease, exc.retry_after, exc.scope)
            self._breaker.release(generation)
            log.warning("rate limited: %s; %d ids requeued", exc, len(ids))
            self._queue.requeue(batch)
        except IpNotWhitelisted as exc:
            self._stats.ip_refused += 1
            moved_to = self._pool.on_ip_refused(lease)
            self._breaker.release(generation)
            where = "paused" if moved_to is None else f"moved to egress {moved_to}"
            log.warning("%s; the key is %s, %d ids requeued", exc, where, len(ids))
            self._queue.requeue(batch)
        except CredentialInvalid as exc:
            self._stats.credential_invalid += 1
            quarantined = self._pool.on_invalid(lease)
            self._breaker.record(
                failed=False, duration_s=self._clock() - started, generation=generation
            )
            if quarantined:
                log.error("credential refused, quarantined: %s", exc)
            else:  # signed with a secret rotated out meanwhile: send again with the new one
                log.info("credential refused its old secret (rotated); %d ids requeued", len(ids))
            self._queue.requeue(batch)
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
                self._queue.settle(pending, exc)
        except EgressUnreachable as exc:
            self._pool.on_done(lease)
            if self._pool.on_egress_unreachable(lease):  # another egress works: move on
                self._stats.egress_unreachable += 1
                self._breaker.release(generation)
                log.warning("%s; %d ids go out another way", exc, len(ids))
                self._queue.requeue(batch)
            else:  # no way out works: the upstream's fault
                self._stats.transient += 1
                self._breaker.record(
                    failed=True, duration_s=self._clock() - started, generation=generation
                )
                self._retry_or_fail(batch, exc)
        except UpstreamTransient as exc:
            self._stats.transient += 1
            self._pool.on_done(lease)
            self._breaker.record(
                failed=True, duration_s=self._clock() - started, generation=generation
            )
            self._retry_or_fail(batch, exc)
        except asyncio.CancelledError:
            self._pool.on_done(lease)
            self._breaker.release(generation)
            for pending in batch:
                self._queue.settle(pending, UpstreamUnavailable("the gateway is closing"))
            raise
        except Exception as exc:  # a bug (ours or the provider's): fail loudly, never hang
            self._pool.on_done(lease)
            self._breaker.release(generation)
            log.exception("unexpected error from the provider")
            for pending in batch:
                self._queue.settle(pending, exc)
        else:
            duration = self._clock() - started
            items, unreadable = split_answer(answer)
            if unreadable:
                self._stats.items_unreadable += len(unreadable)
                log.warning(
                    "%d item(s) of a call could not be read: %s",
                    len(unreadable),
                    next(iter(unreadable.values())),
                )
            self._stats.calls_ok += 1
            self._stats.items_found += len(items)
            self.rtt = 0.8 * self.rtt + 0.2 * duration
            self._pool.on_success(lease)
            self._breaker.record(failed=False, duration_s=duration, generation=generation)
            fetched_by = (lease.credential.masked, self._pool.egress_name(lease))
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
                outcome = failed if failed is not None else items.get(pending.num_iid)
                self._queue.settle(pending, outcome)
        finally:
            # whatever happened above, no flight of this batch is left hanging (a requeued id
            # will be sent again)
            for pending in batch:
                if self._queue.dangling(pending):
                    error = UpstreamUnavailable("the call ended without an answer")
                    self._queue.settle(pending, error)
            self._queue.wake()

    def _bisect(self, batch: list[Pending], exc: UpstreamBadRequest) -> None:
        """Split a refused batch until the bad id stands alone; only that id fails.

        The splits of one original batch share a budget of calls (enough to isolate two bad
        ids): a refusal that is not about one id — every half refused — ends there instead of
        spending a call per id.
        """
        lineage = batch[0].lineage
        if lineage is None:
            lineage = Lineage(calls_left=4 * max(1, math.ceil(math.log2(max(2, len(batch))))))
            for pending in batch:
                pending.lineage = lineage
        if len(batch) > 1 and lineage.calls_left < 2:
            for pending in batch:
                self._queue.settle(pending, exc)
            return
        if len(batch) == 1:
            (pending,) = batch
            self._queue.settle(
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
        self._stats.bisections += 1
        lineage.calls_left -= 2
        half = len(batch) // 2
        self._queue.send_first(batch[:half], batch[half:])

    def _retry_or_fail(self, batch: list[Pending], exc: UpstreamTransient) -> None:
        now = self._clock()
        attempts = max(p.attempts for p in batch) + 1
        delay = backoff(attempts, rng=self._rng)
        retry: list[Pending] = []
        for pending in batch:
            pending.attempts += 1
            if pending.attempts < self._max_attempts and now + delay + self.rtt < pending.deadline:
                retry.append(pending)
            else:
                self._queue.settle(pending, exc)
        if retry and self._budget.try_withdraw():
            self._stats.retries += 1
            self._queue.requeue(retry, not_before=now + delay)
        else:
            for pending in retry:
                self._queue.settle(pending, exc)
