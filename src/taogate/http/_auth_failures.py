"""A limit on failed authentications per source address, in a table of bounded size.

Each source may fail ``per_minute`` times in a burst and then at that rate (a token bucket of
``per_minute`` refilled over a minute); a failure past it is answered 429 with ``Retry-After``
instead of 401. IPv6 sources count per /64
(what one host or site is usually given), so that one attacker's addresses share one limit.

The table keeps the sources that failed most recently, at most ``max_sources``: many sources
cannot grow it without bound; a source pushed out of it starts again with a fresh limit.
"""

from __future__ import annotations

import ipaddress
import math
from collections import OrderedDict
from collections.abc import Callable

from taogate.http._problems import Problem

__all__ = ["FailedAuthLimit", "source_key"]

DEFAULT_MAX_SOURCES = 10_000
#: float rounding never costs a source one of its attempts
_EPSILON = 1e-9


def source_key(host: str | None) -> str:
    """The address a failure counts against: ``host``, or its /64 network for IPv6."""
    if not host:
        return "unknown"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:  # a unix socket path or a name: counted as it is
        return host
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


class FailedAuthLimit:
    """Failed authentications per source: ``record`` one, or raise the 429 for it."""

    def __init__(
        self,
        per_minute: int,
        *,
        clock: Callable[[], float],
        max_sources: int = DEFAULT_MAX_SOURCES,
    ) -> None:
        if per_minute < 1 or max_sources < 1:
            raise ValueError("per_minute and max_sources must be at least 1")
        self._capacity = float(per_minute)
        self._rate = per_minute / 60.0
        self._clock = clock
        self._max_sources = max_sources
        #: source -> (attempts left, when counted), least recently failed first
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def record(self, host: str | None) -> None:
        """Count one failed authentication from ``host``; raise a 429 problem past the limit."""
        key = source_key(host)
        now = self._clock()
        left, counted = self._buckets.get(key, (self._capacity, now))
        left = min(self._capacity, left + max(0.0, now - counted) * self._rate)
        if left < 1.0 - _EPSILON:
            self._buckets[key] = (left, now)
            self._buckets.move_to_end(key)
            retry = max(1, math.ceil((1.0 - left) / self._rate - _EPSILON))
            raise Problem(
                "too-many-auth-failures",
                "too many failed authentications from this address; retry later",
                headers={"Retry-After": str(retry)},
                retry_after=retry,
            )
        self._buckets[key] = (left - 1.0, now)
        self._buckets.move_to_end(key)
        while len(self._buckets) > self._max_sources:
            self._buckets.popitem(last=False)
