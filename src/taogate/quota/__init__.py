"""Quota: the limit scopes a call consumes, what the upstream's answers do to them, the daily
budget, the negotiation with other replicas, and the credential pool that orchestrates them."""

from taogate.quota.policy import PoolPolicy
from taogate.quota.pool import CredentialPool, Lease
from taogate.quota.sharing import (
    FixedShare,
    ReplicaView,
    SharedLimiter,
    SharedUnavailable,
    SharedVerdict,
)
from taogate.quota.stats import CredentialStats, CredentialStatus, EgressStats, PoolStats

__all__ = [
    "CredentialPool",
    "CredentialStats",
    "CredentialStatus",
    "EgressStats",
    "FixedShare",
    "Lease",
    "PoolPolicy",
    "PoolStats",
    "ReplicaView",
    "SharedLimiter",
    "SharedUnavailable",
    "SharedVerdict",
]
