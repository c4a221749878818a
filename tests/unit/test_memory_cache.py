"""The L1 tier on a fake clock: bounds, LRU order, freshness and retention."""

from __future__ import annotations

from decimal import Decimal

import pytest

from taogate import FinalPriceBasis, Item
from taogate.cache.memory import MemoryCache, approx_size
from taogate.testing import FakeClock


def item(num_iid: str, title: str = "t") -> Item:
    price = Decimal("9.90")
    return Item(
        num_iid=num_iid,
        title=title,
        shop="s",
        reserve_price=price,
        zk_final_price=price,
        final_price=price,
        final_price_basis=FinalPriceBasis.DISCOUNT,
    )


def test_entries_bound_evicts_least_recently_used() -> None:
    cache = MemoryCache(max_entries=3, max_bytes=10**9, clock=FakeClock(50.0))
    for i in "abc":
        cache.put(i, item(i), fresh_s=10, keep_s=20)
    cache.get_many(["a"])  # a is now the most recent
    cache.put("d", item("d"), fresh_s=10, keep_s=20)
    assert set(cache.get_many("abcd")) == {"a", "c", "d"}
    assert cache.evictions == 1


def test_bytes_bound() -> None:
    one = approx_size("a", item("a", "x" * 1000))
    cache = MemoryCache(max_entries=100, max_bytes=one * 2 + 10, clock=FakeClock(50.0))
    for i in "abcd":
        cache.put(i, item(i, "x" * 1000), fresh_s=10, keep_s=20)
    assert len(cache) == 2
    assert cache.bytes <= cache.max_bytes
    assert set(cache.get_many("abcd")) == {"c", "d"}


def test_bytes_follow_replacement_and_invalidation() -> None:
    cache = MemoryCache(max_entries=10, max_bytes=10**9, clock=FakeClock(50.0))
    cache.put("a", item("a", "x" * 500), fresh_s=1, keep_s=1)
    big = cache.bytes
    cache.put("a", item("a"), fresh_s=1, keep_s=1)
    assert cache.bytes < big
    assert cache.invalidate(["a", "zz"]) == 1
    assert cache.bytes == 0
    assert len(cache) == 0


def test_entries_live_until_keep_until() -> None:
    clock = FakeClock(50.0)
    cache = MemoryCache(max_entries=10, max_bytes=10**9, clock=clock)
    entry = cache.put("a", item("a"), fresh_s=10, keep_s=30)
    assert entry.fresh_until == 60.0
    assert entry.keep_until == 80.0
    clock.advance(29.0)  # now 79.0
    got = cache.get_many(["a"])["a"]
    assert got.age(clock.now) == pytest.approx(29.0)
    clock.advance(1.0)  # now 80.0: keep_until
    assert cache.get_many(["a"]) == {}
    assert len(cache) == 0


def test_not_found_entries_are_cached() -> None:
    cache = MemoryCache(max_entries=10, max_bytes=10**9, clock=FakeClock(50.0))
    cache.put("gone", None, fresh_s=5, keep_s=5)
    assert cache.get_many(["gone"])["gone"].item is None
    assert cache.peek("gone") is not None


def test_invalid_bounds() -> None:
    with pytest.raises(ValueError, match="positive"):
        MemoryCache(max_entries=0, max_bytes=1, clock=FakeClock(50.0))
