"""The pool's statistics: one frozen value per credential and per egress, for tools and metrics.

:meth:`CredentialPool.stats` returns them; the rows of ``snapshot()`` and ``egress_snapshot()``
(and so ``/v1/stats``) are derived from them: times rounded to the millisecond, money as exact
decimal strings. Credentials appear by their masked key, proxies by their masked address.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum

__all__ = ["CredentialStats", "CredentialStatus", "EgressStats", "PoolStats"]


class CredentialStatus(StrEnum):
    ACTIVE = "active"
    BANNED = "banned"
    QUARANTINED = "quarantined"
    PROBING = "probing"
    EXHAUSTED = "exhausted"


@dataclass(frozen=True, slots=True, kw_only=True)
class CredentialStats:
    """One credential now: its status, rate, ban, probe, calls and cost."""

    #: the masked app key
    credential: str
    egress: str
    status: CredentialStatus
    #: calls per second its limit allows now (the safety factor and a ban's cut included)
    rate: float
    configured_qps: float
    banned_for_s: float
    #: seconds until the next probe while quarantined, else ``None``
    probe_in_s: float | None
    calls: int
    calls_today: int
    daily_budget: int | None
    rate_limited: int
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
            "status": str(self.status),
            "rate": round(self.rate, 3),
            "configured_qps": self.configured_qps,
            "banned_for_s": round(self.banned_for_s, 3),
            "probe_in_s": None if self.probe_in_s is None else round(self.probe_in_s, 3),
            "calls": self.calls,
            "calls_today": self.calls_today,
            "daily_budget": self.daily_budget,
            "rate_limited": self.rate_limited,
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
class PoolStats:
    """Every credential and every egress of a pool, in configuration order."""

    credentials: tuple[CredentialStats, ...]
    egresses: tuple[EgressStats, ...]
