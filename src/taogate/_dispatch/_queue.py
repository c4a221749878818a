"""The dispatcher's queue: every id pending or in flight, once, and the batches taken from it.

An id enters once (singleflight) and has one flight until it is settled. While it waits it sits
in the queue of its priority class, or in a group of a bisected batch (sent as it is, before the
queues); once taken into a batch it is in flight, and a call that cannot answer it puts it back
at the head of its queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections import OrderedDict, deque
from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum

from taogate._dispatch._stats import DispatchCounters
from taogate._errors import DeadlineExceeded, TaogateError
from taogate._model import Item

__all__ = ["DispatchQueue", "Flight", "Lineage", "Pending", "Priority", "failed_flight"]

Flight = asyncio.Future[Item | None]


class Priority(IntEnum):
    """Lower is served first."""

    INTERACTIVE = 0
    REFRESH = 1
    BULK = 2


@dataclass(slots=True, eq=False)
class Lineage:
    """The calls left to bisect one refused batch."""

    calls_left: int


@dataclass(slots=True, eq=False)
class Pending:
    num_iid: str
    future: Flight
    priority: Priority
    deadline: float
    enqueued_at: float
    attempts: int = 0
    not_before: float = 0.0
    lineage: Lineage | None = None


def _consume(future: Flight) -> None:
    """Mark a flight's exception as retrieved: a flight may end with nobody waiting on it."""
    if not future.cancelled():
        future.exception()


def failed_flight(error: BaseException) -> Flight:
    """A flight that has already failed with ``error``."""
    future: Flight = asyncio.get_running_loop().create_future()
    future.add_done_callback(_consume)
    future.set_exception(error)
    return future


class DispatchQueue:
    """The ids pending or in flight, by priority; it counts waits and expiries in ``stats``."""

    def __init__(self, stats: DispatchCounters) -> None:
        self._stats = stats
        self._queues: tuple[OrderedDict[str, Pending], ...] = tuple(OrderedDict() for _ in Priority)
        self._groups: deque[list[Pending]] = deque()  # bisected batches, sent as they are
        self._index: dict[str, Pending] = {}  # every id pending or in flight
        self._wakeup = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()

    # --- entering ------------------------------------------------------------------------

    def join(self, num_iid: str, priority: Priority, deadline: float) -> Flight | None:
        """The flight of ``num_iid`` if it is pending or in flight, else ``None``.

        A join extends the id's deadline to ``deadline``, and promotes a waiting id to
        ``priority`` when that is higher.
        """
        pending = self._index.get(num_iid)
        if pending is None:
            return None
        pending.deadline = max(pending.deadline, deadline)
        if priority < pending.priority and num_iid in self._queues[pending.priority]:
            del self._queues[pending.priority][num_iid]
            pending.priority = priority
            self._queues[priority][num_iid] = pending
        return pending.future

    def add(self, num_iid: str, priority: Priority, deadline: float, now: float) -> Flight:
        """Queue ``num_iid`` (not pending yet) at the tail of its class; its new flight."""
        future: Flight = asyncio.get_running_loop().create_future()
        future.add_done_callback(_consume)
        pending = Pending(num_iid, future, priority, deadline, now)
        self._index[num_iid] = pending
        self._idle.clear()
        self._queues[priority][num_iid] = pending
        return future

    # --- what is waiting -----------------------------------------------------------------

    def queued(self, priority: Priority | None = None) -> int:
        """Ids waiting (not in flight), in one class or in all."""
        if priority is None:
            return sum(len(q) for q in self._queues) + sum(len(g) for g in self._groups)
        return len(self._queues[priority])

    @property
    def in_flight(self) -> int:
        return len(self._index) - self.queued()

    @property
    def has_groups(self) -> bool:
        """Whether parts of a bisected batch wait to be sent."""
        return bool(self._groups)

    def urgent(self) -> bool:
        """Whether interactive lookups are waiting for the next call."""
        return bool(self._queues[Priority.INTERACTIVE]) or any(
            p.priority is Priority.INTERACTIVE for g in self._groups for p in g
        )

    def ahead_of(self, priority: Priority) -> int:
        """Ids that leave before a new id of ``priority``."""
        return sum(len(g) for g in self._groups) + sum(
            len(self._queues[p]) for p in Priority if p <= priority
        )

    def eligible(self, now: float) -> tuple[int, float]:
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

    def oldest(self, now: float) -> float:
        """When the oldest queued id was queued (``now`` when none is)."""
        return min((p.enqueued_at for q in self._queues for p in q.values()), default=now)

    # --- waking the loop -----------------------------------------------------------------

    def wake(self) -> None:
        """Tell the loop that work arrived or something changed (a call ended)."""
        self._wakeup.set()

    async def sleep_for_work(self, at_most_s: float | None) -> None:
        """Sleep until :meth:`wake` or ``at_most_s`` (``None``: no bound)."""
        self._wakeup.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wakeup.wait(), timeout=at_most_s)

    async def wait_idle(self) -> None:
        """Return once no id is queued or in flight."""
        await self._idle.wait()

    # --- batches -------------------------------------------------------------------------

    def take(self, now: float, max_batch: int) -> list[Pending]:
        """The next batch: a bisected group if one waits, else up to ``max_batch`` ids by
        priority whose back-off has passed. Ids past their deadline are settled, not taken."""
        while self._groups:
            group = [p for p in self._groups.popleft() if not self._expired(p, now)]
            if group:
                return group
        batch: list[Pending] = []
        for queue in self._queues:
            for num_iid, pending in list(queue.items()):
                if pending.not_before > now:
                    continue
                del queue[num_iid]
                if self._expired(pending, now):
                    continue
                batch.append(pending)
                self._stats.observe_wait(now - pending.enqueued_at)
                if len(batch) == max_batch:
                    return batch
        return batch

    def _expired(self, pending: Pending, now: float) -> bool:
        """Settle ``pending`` as expired if its deadline has passed (no quota spent on it)."""
        if pending.deadline >= now:
            return False
        self._stats.expired += 1
        self.settle(pending, DeadlineExceeded("the deadline passed in the queue"))
        return True

    def requeue(self, batch: Sequence[Pending], *, not_before: float = 0.0) -> None:
        """Put ids back at the head of their queues (in their order)."""
        for pending in reversed(batch):
            pending.not_before = not_before
            queue = self._queues[pending.priority]
            queue[pending.num_iid] = pending
            queue.move_to_end(pending.num_iid, last=False)
        self._wakeup.set()

    def send_first(self, *groups: list[Pending]) -> None:
        """Send ``groups`` (in this order) before anything else, each as one batch."""
        for group in reversed(groups):
            self._groups.appendleft(group)
        self._wakeup.set()

    def dangling(self, pending: Pending) -> bool:
        """Whether ``pending`` is still its id's flight, unanswered and waiting nowhere."""
        if pending.future.done() or self._index.get(pending.num_iid) is not pending:
            return False
        return pending.num_iid not in self._queues[pending.priority] and not any(
            pending in g for g in self._groups
        )

    # --- ending flights ------------------------------------------------------------------

    def settle(self, pending: Pending, outcome: Item | BaseException | None) -> None:
        """End ``pending``'s flight with an item, ``None`` (absent) or an error."""
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

    def fail_queued(self, error: TaogateError) -> None:
        """Fail every waiting id (not those in flight)."""
        for queue in self._queues:
            for pending in list(queue.values()):
                self.settle(pending, error)
            queue.clear()
        while self._groups:
            for pending in self._groups.popleft():
                self.settle(pending, error)

    def fail_all(self, error: TaogateError) -> None:
        """Fail every id, waiting or in flight."""
        self.fail_queued(error)
        for pending in list(self._index.values()):
            self.settle(pending, error)
