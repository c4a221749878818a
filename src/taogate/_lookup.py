"""What one lookup asks of the cache and the upstream: a policy, validated once.

``Gateway.get``, ``get_one`` and ``get_many`` take a :class:`LookupPolicy`, or its fields as
keyword arguments (:class:`LookupOptions`); either way they are checked here, once, before the
lookup reads the cache.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import TypedDict

from taogate._dispatch import Priority
from taogate._errors import InvalidRequest

__all__ = ["DEFAULT_POLICY", "LookupOptions", "LookupPolicy"]


class LookupOptions(TypedDict, total=False):
    """:class:`LookupPolicy`'s fields, as keyword arguments of the gateway's lookups."""

    max_age_s: float | None
    max_stale_s: float | None
    allow_stale: bool
    priority: Priority
    deadline_s: float | None


@dataclass(frozen=True, slots=True, kw_only=True)
class LookupPolicy:
    """How fresh an answer must be, how stale one may be served, how long to wait, how urgent.

    ``None`` takes the configured default (``[cache] max_age_s`` and ``max_stale_s``, widened in
    degraded mode; ``[limits] deadline_s``). ``allow_stale=False``: no stale answer at all.
    """

    max_age_s: float | None = None
    max_stale_s: float | None = None
    allow_stale: bool = True
    priority: Priority = Priority.INTERACTIVE
    deadline_s: float | None = None

    def __post_init__(self) -> None:
        for name in ("max_age_s", "max_stale_s", "deadline_s"):
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and value >= 0):
                raise InvalidRequest(f"{name} must be a finite number of seconds >= 0")
        if not isinstance(self.priority, Priority):
            raise InvalidRequest(f"priority must be a Priority, not {self.priority!r}")

    @classmethod
    def of(cls, policy: LookupPolicy | None, options: LookupOptions) -> LookupPolicy:
        """``policy`` (default: the defaults) with ``options`` laid over it."""
        base = policy or DEFAULT_POLICY
        # the hit path passes no options most of the time, or the defaults: no new policy then
        for name, value in options.items():  # a plain loop: this runs on every HTTP hit
            if value != getattr(base, name):
                return replace(base, **options)
        return base


#: the policy of a lookup that asks for nothing of its own
DEFAULT_POLICY = LookupPolicy()
