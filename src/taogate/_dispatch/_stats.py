"""What the dispatcher counts as it works (:class:`DispatchCounters`) and the frozen copy
that readers get (:class:`DispatcherStats`, from :meth:`Dispatcher.snapshot`)."""

from __future__ import annotations

import bisect
import copy
from collections.abc import Mapping
from dataclasses import dataclass, field

__all__ = ["WAIT_BUCKETS", "DispatchCounters", "DispatcherStats"]

#: Upper bounds (seconds) of the queue-wait histogram's buckets.
WAIT_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


@dataclass(slots=True)
class DispatchCounters:
    """What the dispatcher counts as it works (only the dispatcher writes them)."""

    calls: int = 0
    calls_ok: int = 0
    ids_sent: int = 0
    items_found: int = 0
    joined: int = 0
    rate_limited: int = 0
    credential_invalid: int = 0
    #: code 11 answers: an egress's address is not in the key's IP whitelist
    ip_refused: int = 0
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

    def copy(self) -> DispatchCounters:
        """A copy that later counting does not change."""
        return copy.deepcopy(self)


@dataclass(frozen=True, slots=True, kw_only=True)
class DispatcherStats:
    """The dispatcher at one moment: a copy of its counters and its queue."""

    counts: DispatchCounters
    #: ids waiting now, by priority name in lower case (every priority)
    queued: Mapping[str, int]
    #: ids in calls on the wire now
    in_flight: int
