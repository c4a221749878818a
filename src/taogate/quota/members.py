"""A credential in the pool, and the egress it sends through: the scopes a call with it
consumes, its quarantine, its daily budget, what the shared limiter said, and its counts."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal

from taogate._credentials import Credential, Egress
from taogate._masking import mask_url
from taogate.quota.budget import DayBudget
from taogate.quota.health import Quarantine, Reachability
from taogate.quota.scopes import Mark, Scope
from taogate.quota.sharing import Claim
from taogate.quota.stats import CredentialStats, CredentialStatus, EgressStats

__all__ = ["EgressState", "Member"]

#: What another replica learned, by the reason the shared limiter holds a key for.
_SHARED_STATUS = {
    "banned": CredentialStatus.BANNED,
    "quarantined": CredentialStatus.QUARANTINED,
    "probing": CredentialStatus.PROBING,
    "budget": CredentialStatus.EXHAUSTED,
}


@dataclass(slots=True, eq=False)
class EgressState:
    """An egress: the scope of every call through it, and whether calls get through."""

    egress: Egress
    scope: Scope
    reach: Reachability = field(default_factory=Reachability)

    def stats(self, now: float, share: float, credentials: int) -> EgressStats:
        egress = self.egress
        return EgressStats(
            egress=egress.name,
            max_qps=egress.max_qps,
            rate=self.scope.rate(now, share),
            credentials=credentials,
            calls=self.scope.calls,
            unreachable=self.reach.unreachable,
            paused_for_s=max(0.0, self.scope.paused_until - now),
            via=egress.local_address or (None if egress.proxy is None else mask_url(egress.proxy)),
        )


@dataclass(slots=True, eq=False)
class Member:
    """One credential of the pool."""

    credential: Credential
    key: Scope
    egress: EgressState
    budget: DayBudget
    quarantine: Quarantine
    claim: Claim = field(default_factory=Claim)
    cost: Decimal = Decimal(0)
    rate_limited: int = 0
    invalid: int = 0
    #: every scope a call with this credential consumes from, the key's first
    scopes: tuple[Scope, ...] = field(init=False)

    def __post_init__(self) -> None:
        self.scopes = (self.key, self.egress.scope)

    def usable(self, now: float, share: float) -> bool:
        """Not quarantined (or due for its probe) and within today's budget."""
        return self.quarantine.usable(now) and self.budget.left(share)

    def ready_at(self, now: float, share: float, *, urgent: bool) -> float:
        """When a call may go: the slowest of its scopes, a yield, a quarantine's probe."""
        at = max(scope.ready_at(now, share) for scope in self.scopes)
        if not urgent:
            at = max(at, self.claim.yield_until)
        if self.quarantine.active:
            at = max(at, self.quarantine.probe_at)
        return at

    def take(self, now: float, share: float, *, probe: bool) -> tuple[Mark, ...]:
        """Count a call granted at ``now`` in every scope, the budget and the cost."""
        marks = tuple(scope.take(now, share) for scope in self.scopes)
        if probe:
            self.quarantine.probing = True
        self.claim.granted()
        self.budget.spend()
        self.cost += self.credential.cost_per_call
        return marks

    def give_back(self, granted_at: float, marks: tuple[Mark, ...]) -> None:
        """Undo :meth:`take` for a call never sent."""
        for scope, mark in zip(self.scopes, marks, strict=True):
            scope.give_back(granted_at, mark)
        self.budget.give_back()
        self.cost -= self.credential.cost_per_call

    def ended(self) -> None:
        """A call granted with this credential came back."""
        for scope in self.scopes:
            scope.in_flight -= 1

    def status(self, now: float, share: float) -> CredentialStatus:
        if self.key.held_until > now and self.claim.reason in _SHARED_STATUS:
            return _SHARED_STATUS[self.claim.reason]  # what another replica learned
        if self.quarantine.active:
            if self.quarantine.probing:
                return CredentialStatus.PROBING
            return CredentialStatus.QUARANTINED
        if not self.budget.left(share):
            return CredentialStatus.EXHAUSTED
        if self.key.paused_until > now:
            return CredentialStatus.BANNED
        return CredentialStatus.ACTIVE

    def stats(self, now: float, share: float) -> CredentialStats:
        c, key = self.credential, self.key
        banned_by_others = key.held_until - now if self.claim.reason == "banned" else 0.0
        quarantine = self.quarantine
        return CredentialStats(
            credential=c.masked,
            egress=self.egress.egress.name,
            status=self.status(now, share),
            rate=key.rate(now),
            configured_qps=c.qps,
            banned_for_s=max(0.0, key.paused_until - now, banned_by_others),
            probe_in_s=max(0.0, quarantine.probe_at - now) if quarantine.active else None,
            calls=key.calls,
            calls_today=self.budget.calls,
            daily_budget=c.daily_budget,
            rate_limited=self.rate_limited,
            invalid=self.invalid,
            in_flight=key.in_flight,
            cost=self.cost,
            cost_today=self.budget.calls * c.cost_per_call,
        )
