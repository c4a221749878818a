"""A limit on failed authentications per source address, in a table of bounded size.

Each source may fail ``per_minute`` times in a burst and then at that rate (a GCRA limit); a
failure past it is answered 429 with ``Retry-After`` instead of 401. IPv6 sources count per /64
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
from taogate.quota.gcra import Gcra

__all__ = ["FailedAuthLimit", "source_key"]

DEFAULT_MAX_SOURCES = 10_000


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
        self._gcra = Gcra(rate=per_minute / 60.0, burst=per_minute)
        self._clock = clock
        self._max_sources = max_sources
        #: source -> GCRA tat, least recently failed first
        self._tats: OrderedDict[str, float] = OrderedDict()

    def __len__(self) -> int:
        return len(self._tats)

    def record(self, host: str | None) -> None:
        """Count one failed authentication from ``host``; raise a 429 problem past the limit."""
        key = source_key(host)
        now = self._clock()
        decision = self._gcra.check(self._tats.get(key, now), now)
        if not decision.allowed:
            self._tats.move_to_end(key)
            retry = max(1, math.ceil(decision.retry_after))
            raise Problem(
                "too-many-auth-failures",
                "too many failed authentications from this address; retry later",
                headers={"Retry-After": str(retry)},
                retry_after=retry,
            )
        self._tats[key] = decision.tat
        self._tats.move_to_end(key)
        while len(self._tats) > self._max_sources:
            self._tats.popitem(last=False)
