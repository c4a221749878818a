"""The L1 tier: a bounded in-process cache of items (and of "not found" answers).

Bounded by entries and by approximate bytes, evicting the least recently used entry first (the
measurements behind that choice are in docs/decisions/006-l1-eviction.md). An entry records
when it was fetched, until when it is fresh, and until when it may still be served stale; it is
dropped once that last time has passed. Every time reads an injected clock.
"""

from __future__ import annotations

import sys
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from decimal import Decimal

from taogate._model import Item

__all__ = ["CacheEntry", "MemoryCache", "approx_size"]

_DECIMAL_SIZE = sys.getsizeof(Decimal("12345.67"))
_ENTRY_OVERHEAD = 320  # entry object, OrderedDict node, key string, the Item's own slots


def approx_size(num_iid: str, item: Item | None) -> int:
    """Approximate bytes an entry holds: strings and decimals measured, fixed costs estimated."""
    size = _ENTRY_OVERHEAD + sys.getsizeof(num_iid)
    if item is None:
        return size
    for value in (item.title, item.shop, item.pict_url, item.item_url, item.seller_id):
        if value is not None:
            size += sys.getsizeof(value)
    for money in (
        item.reserve_price,
        item.zk_final_price,
        item.final_price,
        item.coupon_amount,
        item.coupon_start_fee,
    ):
        if money is not None:
            size += _DECIMAL_SIZE
    return size


@dataclass(frozen=True, slots=True)
class CacheEntry:
    """One cached answer: ``item`` is ``None`` for "the upstream says it does not exist"."""

    item: Item | None
    fetched_at: float
    fresh_until: float
    keep_until: float
    size: int

    def age(self, now: float) -> float:
        return max(0.0, now - self.fetched_at)


class MemoryCache:
    """An LRU map of item id to :class:`CacheEntry`, bounded by entries and bytes."""

    def __init__(self, *, max_entries: int, max_bytes: int, clock: Callable[[], float]) -> None:
        if max_entries < 1 or max_bytes < 1:
            raise ValueError("max_entries and max_bytes must be positive")
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._clock = clock
        self._data: OrderedDict[str, CacheEntry] = OrderedDict()
        self._bytes = 0
        self.evictions = 0

    def __len__(self) -> int:
        return len(self._data)

    @property
    def bytes(self) -> int:
        """Approximate bytes held now."""
        return self._bytes

    def get_many(self, ids: Iterable[str]) -> dict[str, CacheEntry]:
        """The live entries among ``ids`` (each marked recently used); expired ones are dropped."""
        now = self._clock()
        data = self._data
        out: dict[str, CacheEntry] = {}
        for num_iid in ids:
            entry = data.get(num_iid)
            if entry is None:
                continue
            if entry.keep_until <= now:
                self._remove(num_iid)
                continue
            data.move_to_end(num_iid)
            out[num_iid] = entry
        return out

    def get(self, num_iid: str, now: float) -> CacheEntry | None:
        """The live entry for one id (marked recently used), or ``None``."""
        entry = self._data.get(num_iid)
        if entry is None:
            return None
        if entry.keep_until <= now:
            self._remove(num_iid)
            return None
        self._data.move_to_end(num_iid)
        return entry

    def peek(self, num_iid: str) -> CacheEntry | None:
        """The entry for ``num_iid`` without touching its recency (for tests and tools)."""
        return self._data.get(num_iid)

    def put(
        self,
        num_iid: str,
        item: Item | None,
        *,
        fresh_s: float,
        keep_s: float,
        fetched_at: float | None = None,
    ) -> CacheEntry:
        """Store an answer fresh for ``fresh_s`` and kept (servable stale) for ``keep_s``."""
        now = self._clock() if fetched_at is None else fetched_at
        entry = CacheEntry(
            item=item,
            fetched_at=now,
            fresh_until=now + fresh_s,
            keep_until=now + max(fresh_s, keep_s),
            size=approx_size(num_iid, item),
        )
        old = self._data.pop(num_iid, None)
        if old is not None:
            self._bytes -= old.size
        self._data[num_iid] = entry
        self._bytes += entry.size
        while len(self._data) > self.max_entries or (
            self._bytes > self.max_bytes and len(self._data) > 1
        ):
            _, evicted = self._data.popitem(last=False)
            self._bytes -= evicted.size
            self.evictions += 1
        return entry

    def invalidate(self, ids: Iterable[str]) -> int:
        """Drop ``ids``; returns how many were present."""
        return sum(self._remove(num_iid) for num_iid in ids)

    def clear(self) -> None:
        self._data.clear()
        self._bytes = 0

    def _remove(self, num_iid: str) -> bool:
        entry = self._data.pop(num_iid, None)
        if entry is None:
            return False
        self._bytes -= entry.size
        return True
