"""The pool's statistics: one frozen value per credential, egress and shared limit scope
(account, API method), for tools and metrics.

:meth:`CredentialPool.stats` returns them; the rows of ``snapshot()`` and ``egress_snapshot()``
(and so ``/v1/stats``) are derived from them: times rounded to the millisecond, money as exact
decimal strings. Credentials appear by their masked key, proxies by their masked address.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum

__all__ = ["CredentialStats", "CredentialStatus", "EgressStats", "PoolStats", "ScopeStats"]


class CredentialStatus(StrEnum):
    ACTIVE = "active"
    BANNED = "banned"
    QUARANTINED = "quarantined"
    PROBING = "probing"
    #: today's budget, or the platform's daily quota (a ban until midnight), is spent
    EXHAUSTED = "exhausted"
    #: the key's IP whitelist refuses every egress it could use: paused, an operator must act
    NOT_WHITELISTED = "not-whitelisted"


@dataclass(frozen=True, slots=True, kw_only=True)
class CredentialStats:
    """One credential now: its status, rate, ban, probe, calls and cost."""

    #: the masked app key
    credential: str
    egress: str
    #: the promoter account it shares a limit with, if any
    account: str | None
    status: CredentialStatus
    #: calls per second its limit allows now (the safety factor and a ban's cut included)
    rate: float
    configured_qps: float
    banned_for_s: float
    #: seconds until the next probe while quarantined, else ``None``
    probe_in_s: float | None
    #: seconds until midnight in Beijing while the platform says today's quota is spent
    exhausted_for_s: float | None
    calls: int
    calls_today: int
    daily_budget: int | None
    #: bans of the key (code 7 for the key, or a limit the answer did not name)
    rate_limited: int
    #: bans of the key on the API method (``limited-by-app-api-access-count`` and kin)
    method_limited: int
    #: code 11 answers: an egress's address was not in the key's IP whitelist
    ip_refused: int
    #: the egresses the key's whitelist refuses now (not tried until their pause ends)
    refused_egresses: tuple[str, ...]
    invalid: int
    in_flight: int
    cost: Decimal
    #: the Beijing day's calls at the configured price (what the bill will say)
    cost_today: Decimal

    def as_row(self) -> dict[str, object]:
        """The row of ``CredentialPool.snapshot()``."""
        return {
            "credential": self.credential,
            "egress": self.egress,
            "account": self.account,
            "status": str(self.status),
            "rate": round(self.rate, 3),
            "configured_qps": self.configured_qps,
            "banned_for_s": round(self.banned_for_s, 3),
            "probe_in_s": None if self.probe_in_s is None else round(self.probe_in_s, 3),
            "exhausted_for_s": (
                None if self.exhausted_for_s is None else round(self.exhausted_for_s, 3)
            ),
            "calls": self.calls,
            "calls_today": self.calls_today,
            "daily_budget": self.daily_budget,
            "rate_limited": self.rate_limited,
            "method_limited": self.method_limited,
            "ip_refused": self.ip_refused,
            "refused_egresses": list(self.refused_egresses),
            "invalid": self.invalid,
            "in_flight": self.in_flight,
            "cost": str(self.cost),
            "cost_today": str(self.cost_today),
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class EgressStats:
    """One egress now: its cap, its calls and its pause."""

    egress: str
    max_qps: float
    #: calls per second this process allows through it now (its share of ``max_qps``)
    rate: float
    credentials: int
    calls: int
    unreachable: int
    paused_for_s: float
    #: the local address or the masked proxy; ``None``: the host's own address
    via: str | None

    def as_row(self) -> dict[str, object]:
        """The row of ``CredentialPool.egress_snapshot()``."""
        return {
            "egress": self.egress,
            "max_qps": self.max_qps,
            "rate": round(self.rate, 3),
            "credentials": self.credentials,
            "calls": self.calls,
            "unreachable": self.unreachable,
            "paused_for_s": round(self.paused_for_s, 3),
            "via": self.via,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class ScopeStats:
    """A limit several keys share, other than an egress: a promoter account, an API method."""

    kind: str
    name: str
    #: the configured calls per second; ``None``: not paced, only paused by its bans
    qps: float | None
    #: calls per second this process allows now (its share, a ban's cut included)
    rate: float | None
    credentials: int
    calls: int
    #: rate limits the upstream answered for it (code 15 / 9100, a method's ban)
    limited: int
    paused_for_s: float

    def as_row(self) -> dict[str, object]:
        """The row of the ``scopes`` of ``Gateway.snapshot()`` and ``/v1/admin/keys``."""
        return {
            "kind": self.kind,
            "name": self.name,
            "qps": self.qps,
            "rate": None if self.rate is None else round(self.rate, 3),
            "credentials": self.credentials,
            "calls": self.calls,
            "limited": self.limited,
            "paused_for_s": round(self.paused_for_s, 3),
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class PoolStats:
    """Every credential, egress and shared scope of a pool, in configuration order."""

    credentials: tuple[CredentialStats, ...]
    egresses: tuple[EgressStats, ...]
    #: the accounts, then the API method
    scopes: tuple[ScopeStats, ...] = ()
