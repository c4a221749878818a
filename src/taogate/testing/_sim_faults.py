"""The simulator's fault injection: outages, slow answers, code 15 bursts, malformed bodies,
revoked keys and a ban of the API method on every key (``method_ban``: the platform's own cap
on an API, ``limited-by-api-access-count``), each running until the clock passes its end
(``/_sim/faults``)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

__all__ = ["FAULT_KINDS", "Fault", "Faults", "parse_fault"]

FAULT_KINDS: Final = ("outage", "slow", "code15", "malformed", "revoke", "method_ban")
_FAULT_FIELDS: Final = frozenset({"kind", "duration_s", "app_key", "extra_latency_ms", "ratio"})
DEFAULT_EXTRA_LATENCY_MS: Final = 1000.0


@dataclass(frozen=True, slots=True, kw_only=True)
class Fault:
    """One injected fault, active from ``started`` until ``until`` (clock times)."""

    kind: str
    started: float
    until: float
    app_key: str | None = None
    extra_latency_ms: float = 0.0
    ratio: float = 1.0

    def render(self, now: float) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind, "remaining_s": max(0.0, self.until - now)}
        if self.kind == "revoke":
            out["app_key"] = self.app_key
        elif self.kind == "slow":
            out["extra_latency_ms"] = self.extra_latency_ms
        elif self.kind == "code15":
            out["ratio"] = self.ratio
        return out


def _number(doc: Mapping[str, Any], name: str, default: float | None) -> float:
    value = doc.get(name, default)
    if value is None:
        raise ValueError(f"{name} is required")
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number")
    return float(value)


def parse_fault(doc: object, now: float, known_keys: Iterable[str]) -> Fault:
    """The fault a ``POST /_sim/faults`` body asks for; ``ValueError`` names what is wrong."""
    if not isinstance(doc, dict):
        raise ValueError("the body must be a JSON object")
    unknown = sorted(set(doc) - _FAULT_FIELDS)
    if unknown:
        raise ValueError(f"unknown field(s): {', '.join(map(str, unknown))}")
    kind = doc.get("kind")
    if kind not in FAULT_KINDS:
        raise ValueError(f"kind must be one of {', '.join(FAULT_KINDS)}")
    duration = _number(doc, "duration_s", None)
    if duration < 0:
        raise ValueError("duration_s must be >= 0 (0 ends the faults of that kind)")
    app_key = doc.get("app_key")
    if kind == "revoke":
        if not isinstance(app_key, str) or app_key not in set(known_keys):
            raise ValueError("revoke needs app_key, one of the simulator's keys")
    elif app_key is not None:
        raise ValueError("app_key applies to revoke only")
    extra = _number(doc, "extra_latency_ms", DEFAULT_EXTRA_LATENCY_MS)
    ratio = _number(doc, "ratio", 1.0)
    if extra < 0:
        raise ValueError("extra_latency_ms must be >= 0")
    if not 0 <= ratio <= 1:
        raise ValueError("ratio must be in [0, 1]")
    return Fault(
        kind=kind,
        started=now,
        until=now + duration,
        app_key=app_key,
        extra_latency_ms=extra if kind == "slow" else 0.0,
        ratio=ratio if kind == "code15" else 1.0,
    )


class Faults:
    """The active faults; each ends by itself when the clock passes its ``until``."""

    def __init__(self) -> None:
        self._faults: list[Fault] = []

    def add(self, fault: Fault) -> None:
        """Start ``fault``; one of duration 0 ends the running faults of its kind (and key)."""
        if fault.until > fault.started:
            self._faults.append(fault)
        else:
            self._faults = [
                f for f in self._faults if (f.kind, f.app_key) != (fault.kind, fault.app_key)
            ]

    def clear(self) -> None:
        self._faults.clear()

    def active(self, now: float) -> list[Fault]:
        """The faults still running at ``now``; ended ones are dropped."""
        if self._faults:
            self._faults = [f for f in self._faults if f.until > now]
        return list(self._faults)

    def __bool__(self) -> bool:
        return bool(self._faults)

    def has(self, kind: str, now: float) -> bool:
        return bool(self._faults) and any(f.kind == kind for f in self.active(now))

    def banned_for(self, kind: str, now: float) -> float:
        """Seconds left of the longest running fault of ``kind`` (0: none runs)."""
        if not self._faults:
            return 0.0
        return max((f.until - now for f in self.active(now) if f.kind == kind), default=0.0)

    def revoked(self, app_key: str, now: float) -> bool:
        return bool(self._faults) and any(
            f.kind == "revoke" and f.app_key == app_key for f in self.active(now)
        )

    def code15_ratio(self, now: float) -> float:
        """The share of calls refused with code 15 (the largest of overlapping faults)."""
        if not self._faults:
            return 0.0
        return max((f.ratio for f in self.active(now) if f.kind == "code15"), default=0.0)

    def extra_latency_s(self, now: float) -> float:
        """The added latency of every ``slow`` fault running (they add up)."""
        if not self._faults:
            return 0.0
        return sum(f.extra_latency_ms for f in self.active(now) if f.kind == "slow") / 1000.0
