"""What one gateway counts, at one moment: :class:`GatewayStats`, from :meth:`Gateway.stats`.

It holds the gateway's own lookup counters and each part's own frozen stats (the cache's, the
dispatcher's, the breaker's, degraded mode's, the secret files'). The metrics
(:mod:`taogate.metrics`), the operator console and ``/readyz`` read it;
:meth:`GatewayStats.to_dict` is its JSON form (:meth:`Gateway.snapshot`, ``/v1/admin/keys``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from taogate._breaker import BreakerStats
from taogate._degrade import DegradeStats
from taogate._dispatch import DispatcherStats
from taogate._secrets import SecretFileStats
from taogate.cache.tiered import CacheStats
from taogate.quota import PoolStats

if TYPE_CHECKING:  # the replicas need redis-py; a gateway without Redis never loads it
    from taogate.replicas import ReplicasStats

__all__ = ["GatewayStats"]


@dataclass(frozen=True, slots=True, kw_only=True)
class GatewayStats:
    """Counters and state of one gateway and its parts, copied at one moment."""

    #: ids looked up (a ``get_many`` counts each distinct id)
    lookups: int
    #: lookups answered fresh from L1
    l1_hits: int
    #: answers served stale because the upstream could not answer in time
    stale_served: int
    #: ids refreshed ahead of expiry
    refresh_ahead: int
    cache: CacheStats
    dispatcher: DispatcherStats
    breaker: BreakerStats
    degrade: DegradeStats
    secret_files: tuple[SecretFileStats, ...]
    #: every credential and egress of the pool
    pool: PoolStats
    #: membership and mode (``None`` without Redis)
    replicas: ReplicasStats | None

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (:meth:`Gateway.snapshot`): for tools, benchmarks, ``/v1/admin/keys``."""
        cache, d = self.cache, self.dispatcher
        return {
            "lookups": self.lookups,
            "l1_hits": self.l1_hits,
            "stale_served": self.stale_served,
            "refresh_ahead": self.refresh_ahead,
            "l2_hits": cache.l2_hits,
            "redis": None
            if self.replicas is None
            else asdict(self.replicas) | {"l2_corrupt": cache.l2_corrupt},
            "l1_entries": cache.l1_entries,
            "l1_bytes": cache.l1_bytes,
            "breaker": str(self.breaker.state),
            "queued": dict(d.queued),
            "in_flight": d.in_flight,
            "dispatcher": asdict(d.counts)
            | {"batch_sizes": dict(sorted(d.counts.batch_sizes.items()))},
            "credentials": [c.as_row() for c in self.pool.credentials],
            "egresses": [e.as_row() for e in self.pool.egresses],
            "scopes": [s.as_row() for s in self.pool.scopes],
            "degraded": self.degrade.status.to_dict(),
            "degrade": {
                "changes": self.degrade.changes,
                "held_ids": self.degrade.held_ids,
                "refused_ids": self.degrade.refused_ids,
            },
            "secret_files": [asdict(f) for f in self.secret_files],
        }
