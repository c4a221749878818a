"""The freshness policy over the cache tiers: what is fresh, what may be served stale.

An answer is stored fresh for ``max_age_s`` (``negative_ttl_s`` for "not found"), shortened by
a random share of up to ``jitter`` so that entries written together do not expire together,
and kept ``max_stale_s`` longer so it can be served, flagged stale, when the upstream cannot
answer. A lookup may ask for a shorter ``max_age`` and a different ``max_stale`` than the
defaults; it can never get an entry past its stored freshness as fresh — except in degraded
mode (``widened``), where a found item is fresh for the lookup's ``max_age`` alone, as long as
the cache keeps it ("not found" answers keep their own short freshness).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from taogate._model import Item
from taogate.cache.memory import CacheEntry, MemoryCache

__all__ = ["CacheView", "TieredCache"]


@dataclass(slots=True)
class CacheView:
    """One lookup's view of the cache: fresh entries, stale fallbacks, and the misses."""

    fresh: dict[str, CacheEntry] = field(default_factory=dict)
    stale: dict[str, CacheEntry] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)


class TieredCache:
    """L1 (and later L2) behind one freshness policy."""

    def __init__(
        self,
        l1: MemoryCache,
        *,
        max_age_s: float,
        max_stale_s: float,
        negative_ttl_s: float,
        jitter: float,
        clock: Callable[[], float],
        rng: random.Random | None = None,
    ) -> None:
        self.l1 = l1
        self.max_age_s = max_age_s
        self.max_stale_s = max_stale_s
        self.negative_ttl_s = negative_ttl_s
        self.jitter = jitter
        self._clock = clock
        self._rng = rng or random.Random()

    def lookup(
        self,
        ids: Sequence[str],
        *,
        max_age_s: float,
        max_stale_s: float | None,
        widened: bool = False,
    ) -> CacheView:
        """Split ``ids`` into fresh hits, stale fallbacks and misses (stale ones miss too).

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
            age = now - entry.fetched_at
            if age <= max_age_s and (
                now < entry.fresh_until or (widened and entry.item is not None)
            ):
                view.fresh[num_iid] = entry
                continue
            view.missing.append(num_iid)
            if max_stale_s is not None and age <= max_age_s + max_stale_s:
                view.stale[num_iid] = entry
        return view

    def fresh(
        self, num_iid: str, *, max_age_s: float, now: float, widened: bool = False
    ) -> CacheEntry | None:
        """The entry for one id if it is fresh for ``max_age_s`` (the hit path of one lookup)."""
        entry = self.l1.get(num_iid, now)
        if entry is None or now - entry.fetched_at > max_age_s:
            return None
        if now >= entry.fresh_until and not (widened and entry.item is not None):
            return None
        return entry

    def store(self, ids: Iterable[str], items: Mapping[str, Item]) -> None:
        """Write an upstream answer: found items and, for the other ids, "not found"."""
        now = self._clock()
        for num_iid in ids:
            item = items.get(num_iid)
            ttl = self.max_age_s if item is not None else self.negative_ttl_s
            fresh = ttl * (1.0 - self.jitter * self._rng.random())
            self.l1.put(
                num_iid, item, fresh_s=fresh, keep_s=fresh + self.max_stale_s, fetched_at=now
            )

    def invalidate(self, ids: Iterable[str]) -> int:
        return self.l1.invalidate(ids)
