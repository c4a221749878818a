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

The parts: ``_queue`` (the ids pending or in flight, and batches taken from them), ``_sender``
(one call and what its outcome does to each id), ``_dispatcher`` (submitting, and the loop
between them) and ``_stats`` (the counters).
"""

from taogate._dispatch._dispatcher import Dispatcher
from taogate._dispatch._queue import Priority
from taogate._dispatch._sender import INTERACTIVE_LOAD_WINDOW_S, PROVENANCE_IDS
from taogate._dispatch._stats import WAIT_BUCKETS, DispatchCounters, DispatcherStats

__all__ = [
    "INTERACTIVE_LOAD_WINDOW_S",
    "PROVENANCE_IDS",
    "WAIT_BUCKETS",
    "DispatchCounters",
    "Dispatcher",
    "DispatcherStats",
    "Priority",
]
