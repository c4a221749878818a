"""The cache tiers behind one freshness policy: L1 in memory, then L2 in Redis when replicas share.

An answer is stored fresh for ``max_age_s`` (``negative_ttl_s`` for "not found"), shortened by
a random share of up to ``jitter`` so that entries written together do not expire together,
and kept ``max_stale_s`` longer so it can be served, flagged stale, when the upstream cannot
answer. A lookup may ask for a shorter ``max_age`` and a different ``max_stale`` than the
defaults; it can never get an entry past its stored freshness as fresh — except in degraded
mode (``widened``), where a found item is fresh for the lookup's ``max_age`` alone, as long as
the cache keeps it ("not found" answers keep their own short freshness). One rule,
:func:`is_fresh`, decides this for both tiers.

:meth:`TieredCache.lookup` reads L1, then L2 for what L1 missed (filling L1 with what it
finds); :meth:`TieredCache.store` writes an upstream answer through both. Invalidations from
other replicas reach L1 through the L2 tier, built with ``on_invalidate=l1.invalidate``.
L2 is any :class:`SharedTier` (the Redis one is ``taogate.cache.redis.RedisTier``).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from taogate._model import Item
from taogate.cache.memory import CacheEntry, MemoryCache

__all__ = ["CacheStats", "CacheView", "SharedTier", "TieredCache", "is_fresh"]


class SharedTier(Protocol):
    """The second tier: entries every replica sees. Its reads may fail (then they miss), its
    writes happen in the background, and it counts the entries it could not decode."""

    #: entries that could not be decoded (each was a miss)
    corrupt: int

    async def get(self, ids: Sequence[str]) -> dict[str, CacheEntry]:
        """The entries it holds among ``ids``; what it cannot read now is missing."""
        ...

    def put_later(self, entries: Mapping[str, CacheEntry]) -> None:
        """Write ``entries`` soon, without waiting."""
        ...

    async def invalidate(self, ids: Iterable[str]) -> bool:
        """Forget ``ids`` here and in every replica's L1; whether every replica was told."""
        ...

    async def aclose(self) -> None:
        """End the background writes (within a bound)."""
        ...


def is_fresh(entry: CacheEntry, now: float, *, max_age_s: float, widened: bool = False) -> bool:
    """Whether ``entry`` may be served as fresh to a lookup that takes ``max_age_s``."""
    if now - entry.fetched_at > max_age_s:
        return False
    if now < entry.fresh_until:
        return True
    # degraded: a found item kept by the cache counts as fresh for the lookup's max_age
    return widened and entry.item is not None and now < entry.keep_until


@dataclass(slots=True)
class CacheView:
    """One lookup's view of the cache: fresh entries (by tier), stale fallbacks, the misses."""

    fresh: dict[str, CacheEntry] = field(default_factory=dict)
    #: fresh entries found in L2 (and now in L1 too)
    from_l2: dict[str, CacheEntry] = field(default_factory=dict)
    stale: dict[str, CacheEntry] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True, kw_only=True)
class CacheStats:
    """The tiers at one moment: what L1 holds and has evicted, what L2 answered and dropped."""

    l1_entries: int
    #: approximate bytes L1 holds
    l1_bytes: int
    #: entries L1 evicted by its bounds
    l1_evictions: int
    #: lookups answered fresh from L2
    l2_hits: int
    #: L2 entries that could not be decoded (each a miss, deleted); 0 without L2
    l2_corrupt: int


class TieredCache:
    """L1 (and L2, with Redis) behind one freshness policy."""

    def __init__(
        self,
        l1: MemoryCache,
        l2: SharedTier | None = None,
        *,
        max_age_s: float,
        max_stale_s: float,
        negative_ttl_s: float,
        jitter: float,
        clock: Callable[[], float],
        rng: random.Random | None = None,
    ) -> None:
        self.l1 = l1
        self.l2 = l2
        self.max_age_s = max_age_s
        self.max_stale_s = max_stale_s
        self.negative_ttl_s = negative_ttl_s
        self.jitter = jitter
        self._clock = clock
        self._rng = rng or random.Random()
        #: lookups answered fresh from L2
        self.l2_hits = 0

    def stats(self) -> CacheStats:
        """The tiers' counters and sizes now."""
        return CacheStats(
            l1_entries=len(self.l1),
            l1_bytes=self.l1.bytes,
            l1_evictions=self.l1.evictions,
            l2_hits=self.l2_hits,
            l2_corrupt=0 if self.l2 is None else self.l2.corrupt,
        )

    def lookup_l1(
        self,
        ids: Sequence[str],
        *,
        max_age_s: float,
        max_stale_s: float | None,
        widened: bool = False,
    ) -> CacheView:
        """Split ``ids`` by L1 alone into fresh hits, stale fallbacks and misses (stale ones
        miss too).

        ``max_stale_s = None`` means no stale fallback at all (``allow_stale=False``);
        ``widened``: degraded mode (see the module's docstring).
        """
        now = self._clock()
        entries = self.l1.get_many(ids)
        view = CacheView()
        for num_iid in ids:
            entry = entries.get(num_iid)
            if entry is None:
                view.missing.append(num_iid)
                continue
            if is_fresh(entry, now, max_age_s=max_age_s, widened=widened):
                view.fresh[num_iid] = entry
                continue
            view.missing.append(num_iid)
            if max_stale_s is not None and now - entry.fetched_at <= max_age_s + max_stale_s:
                view.stale[num_iid] = entry
        return view

    async def lookup(
        self,
        ids: Sequence[str],
        *,
        max_age_s: float,
        max_stale_s: float | None,
        widened: bool = False,
    ) -> CacheView:
        """:meth:`lookup_l1`, then L2 for what L1 missed: fresh L2 answers fill L1 and are
        served; older ones L1 lacks are kept in L1 as stale fallbacks."""
        view = self.lookup_l1(ids, max_age_s=max_age_s, max_stale_s=max_stale_s, widened=widened)
        if view.missing and self.l2 is not None:
            await self._from_l2(view, max_age_s=max_age_s, widened=widened)
        return view

    async def _from_l2(self, view: CacheView, *, max_age_s: float, widened: bool) -> None:
        assert self.l2 is not None
        found = await self.l2.get(view.missing)
        if not found:
            return
        now = self._clock()
        still: list[str] = []
        for num_iid in view.missing:
            e = found.get(num_iid)
            if e is None:
                still.append(num_iid)
                continue
            if is_fresh(e, now, max_age_s=max_age_s, widened=widened):
                view.from_l2[num_iid] = self._fill(num_iid, e, e.fresh_until)
                self.l2_hits += 1
                continue
            still.append(num_iid)
            if num_iid not in view.stale and now < e.keep_until:
                view.stale[num_iid] = self._fill(num_iid, e, e.fetched_at)
        view.missing = still

    def _fill(self, num_iid: str, e: CacheEntry, fresh_until: float) -> CacheEntry:
        """Put an L2 answer into L1, fresh until ``fresh_until`` (its fetch time: stale only)."""
        return self.l1.put(
            num_iid,
            e.item,
            fresh_s=fresh_until - e.fetched_at,
            keep_s=e.keep_until - e.fetched_at,
            fetched_at=e.fetched_at,
        )

    def fresh(
        self, num_iid: str, *, max_age_s: float, now: float, widened: bool = False
    ) -> CacheEntry | None:
        """The L1 entry for one id if it is fresh for ``max_age_s`` (the hit path of one lookup)."""
        entry = self.l1.get(num_iid, now)
        if entry is None or not is_fresh(entry, now, max_age_s=max_age_s, widened=widened):
            return None
        return entry

    def store(self, ids: Iterable[str], items: Mapping[str, Item]) -> None:
        """Write an upstream answer: found items and, for the other ids, "not found"; into L1
        now and into L2 in the background."""
        now = self._clock()
        written: dict[str, CacheEntry] = {}
        for num_iid in ids:
            item = items.get(num_iid)
            ttl = self.max_age_s if item is not None else self.negative_ttl_s
            fresh = ttl * (1.0 - self.jitter * self._rng.random())
            written[num_iid] = self.l1.put(
                num_iid, item, fresh_s=fresh, keep_s=fresh + self.max_stale_s, fetched_at=now
            )
        if self.l2 is not None:
            self.l2.put_later(written)

    async def invalidate(self, ids: Sequence[str]) -> tuple[int, bool]:
        """Forget ``ids`` in L1, in L2 and in every replica's L1: how many L1 held here, and
        whether the other replicas were reached (always, without L2)."""
        count = self.l1.invalidate(ids)
        everywhere = self.l2 is None or await self.l2.invalidate(ids)
        return count, everywhere

    async def aclose(self) -> None:
        if self.l2 is not None:
            await self.l2.aclose()
