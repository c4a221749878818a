"""A credential in the pool, and the egress it sends through: the scopes a call with it
consumes, its quarantine, its daily budget, what the shared limiter said, and its counts."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
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


#: how long a key's first call through an egress holds its next call back at most, when its
#: answer has not come (the answer wakes the pool earlier)
PROVE_WAIT_S = 1.0


@dataclass(slots=True, eq=False)
class Member:
    """One credential of the pool, and the scopes a call with it consumes from."""

    credential: Credential
    key: Scope
    egress: EgressState
    budget: DayBudget
    quarantine: Quarantine
    #: the API method over every key, and this key on it
    method: Scope
    pair: Scope
    #: the promoter account the key shares a limit with, if any
    account: Scope | None = None
    #: a key's first call through an egress goes alone (:attr:`PoolPolicy.prove_egress`)
    prove: bool = False
    claim: Claim = field(default_factory=Claim)
    cost: Decimal = Decimal(0)
    rate_limited: int = 0
    invalid: int = 0
    #: code 11 answers: an egress's address is not in the key's IP whitelist
    ip_refused: int = 0
    #: egresses whose address the key's whitelist refused, and until when they are not tried
    refused: dict[str, float] = field(default_factory=dict)
    #: the pause of the next refusal with no other egress (doubling)
    refused_pause_s: float = 0.0
    #: an answer came through the current egress (the whitelist accepts it)
    proven: bool = False
    #: when the call trying the current egress (before it is proven) was granted
    trial_at: float | None = None
    #: every scope a call with this credential consumes from, the key's first
    scopes: tuple[Scope, ...] = field(init=False)

    def __post_init__(self) -> None:
        self._gather()

    def _gather(self) -> None:
        own = (self.key, self.egress.scope, self.account, self.method, self.pair)
        self.scopes = tuple(scope for scope in own if scope is not None)

    def move(self, egress: EgressState) -> None:
        """Send the key's next calls through ``egress`` (calls in flight keep theirs): the
        leases' credential names it, and the provider sends through the egress it names."""
        self.egress = egress
        self.credential = replace(self.credential, egress=egress.egress.name)
        self.proven = False
        self.trial_at = None
        self._gather()

    def refused_until(self) -> float:
        """Until when the current egress is refused by the key's whitelist (0: it is not)."""
        return self.refused.get(self.egress.egress.name, 0.0)

    def trial_until(self) -> float:
        """Until when the call trying an egress not yet proven holds the key's next call back
        (0: none does): until its answer comes, or :data:`PROVE_WAIT_S` after its grant."""
        if not self.prove or self.proven or self.trial_at is None:
            return 0.0
        return self.trial_at + PROVE_WAIT_S

    def waits_on_its_own(self, now: float) -> bool:
        """Whether something only this replica knows holds the call back (a pause, a refusing
        egress, a trial call): the shared limiter would grant what must wait, so an urgent
        caller does not claim the slot there."""
        return (
            self.refused_until() > now
            or self.trial_until() > now
            or any(scope.paused_until > now for scope in self.scopes)
        )

    def usable(self, now: float, share: float) -> bool:
        """Not quarantined (or due for its probe) and within today's budget."""
        return self.quarantine.usable(now) and self.budget.left(share)

    def ready_at(self, now: float, share: float, *, urgent: bool) -> float:
        """When a call may go: the slowest of its scopes, a yield, a quarantine's probe, a
        refusing egress, a first call through the egress still out."""
        at = max(scope.ready_at(now, share) for scope in self.scopes)
        at = max(at, self.refused_until())
        if not urgent:
            at = max(at, self.claim.yield_until)
        if self.quarantine.active:
            at = max(at, self.quarantine.probe_at)
        return max(at, self.trial_until())

    def take(self, now: float, share: float, *, probe: bool) -> tuple[Mark, ...]:
        """Count a call granted at ``now`` in every scope, the budget and the cost."""
        marks = tuple(scope.take(now, share) for scope in self.scopes)
        if self.prove and not self.proven and self.trial_at is None:
            self.trial_at = now  # this call tries the egress
        if probe:
            self.quarantine.probing = True
        self.claim.granted()
        self.budget.spend()
        self.cost += self.credential.cost_per_call
        return marks

    def give_back(
        self, granted_at: float, scopes: tuple[Scope, ...], marks: tuple[Mark, ...]
    ) -> None:
        """Undo :meth:`take` for a call never sent (``scopes``: those it was granted in)."""
        for scope, mark in zip(scopes, marks, strict=True):
            scope.give_back(granted_at, mark)
        if self.trial_at == granted_at:
            self.trial_at = None  # the trial never went: the next call tries
        self.budget.give_back()
        self.cost -= self.credential.cost_per_call

    @staticmethod
    def ended(scopes: tuple[Scope, ...]) -> None:
        """A call granted in ``scopes`` came back."""
        for scope in scopes:
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
        if self.refused_until() > now:
            return CredentialStatus.NOT_WHITELISTED
        if self.key.paused_until > now:
            return CredentialStatus.BANNED
        return CredentialStatus.ACTIVE

    def stats(self, now: float, share: float) -> CredentialStats:
        c, key = self.credential, self.key
        banned_by_others = key.held_until - now if self.claim.reason == "banned" else 0.0
        quarantine = self.quarantine
        calls_today = self.budget.calls_today()
        status = self.status(now, share)
        return CredentialStats(
            credential=c.masked,
            egress=self.egress.egress.name,
            account=c.account,
            status=status,
            rate=key.rate(now),
            configured_qps=c.qps,
            banned_for_s=max(0.0, key.paused_until - now, banned_by_others),
            probe_in_s=max(0.0, quarantine.probe_at - now) if quarantine.active else None,
            exhausted_for_s=self.budget.seconds_left()
            if status is CredentialStatus.EXHAUSTED
            else None,
            calls=key.calls,
            calls_today=calls_today,
            daily_budget=c.daily_budget,
            rate_limited=self.rate_limited,
            method_limited=self.pair.limited,
            ip_refused=self.ip_refused,
            refused_egresses=tuple(sorted(e for e, t in self.refused.items() if t > now)),
            invalid=self.invalid,
            in_flight=key.in_flight,
            cost=self.cost,
            cost_today=calls_today * c.cost_per_call,
        )
