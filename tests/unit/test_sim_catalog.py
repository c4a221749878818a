"""The simulator's catalog: deterministic ids and items, shares, prices that follow the clock."""

from __future__ import annotations

from decimal import Decimal

import pytest

from taogate.testing import Catalog, FakeClock, ItemKind


def make(size: int = 2000, seed: int = 1, **kw: float) -> tuple[Catalog, FakeClock]:
    clock = FakeClock(1000.0)
    wall = FakeClock(1_700_000_000.0)
    return Catalog(size, seed, clock=clock, wall_clock=wall, **kw), clock


def test_ids_are_deterministic_distinct_and_realistic() -> None:
    a, _ = make(seed=1)
    b, _ = make(seed=1)
    c, _ = make(seed=2)
    ids = a.ids()
    assert ids == b.ids()
    assert ids != c.ids()
    assert len(set(ids)) == len(ids) == 2000
    for num_iid in ids:
        assert len(num_iid) == 12
        assert num_iid.isdigit()
        assert num_iid[0] in "567"
    assert [a.id_at(i) for i in range(10)] == ids[:10]
    assert all(a.index_of(num_iid) == i for i, num_iid in enumerate(ids))


def test_a_million_ids_are_cheap_and_distinct() -> None:
    catalog, _ = make(size=1_000_000)
    ids = catalog.ids()
    assert len(set(ids)) == 1_000_000
    assert catalog.id_at(999_999) == ids[-1]
    with pytest.raises(IndexError):
        catalog.id_at(1_000_000)


def test_ids_outside_the_catalog_are_unknown_and_absent() -> None:
    catalog, _ = make(size=10)
    outside = next(
        str(n) for n in range(500_000_000_000, 500_000_001_000) if catalog.index_of(str(n)) is None
    )
    for num_iid in (outside, "123", "abc", "", "0" * 12, "９" * 12):
        assert catalog.kind(num_iid) is ItemKind.UNKNOWN
        assert catalog.current(num_iid) is None
        assert catalog.info(num_iid) is None


def test_shares_of_absent_legacy_and_coupon_items() -> None:
    catalog, _ = make(size=20_000, absent_ratio=0.1, legacy_ratio=0.05, coupon_ratio=0.4)
    kinds = [catalog.kind(i) for i in catalog.ids()]
    assert kinds.count(ItemKind.ABSENT) / 20_000 == pytest.approx(0.1, abs=0.015)
    assert kinds.count(ItemKind.LEGACY) / 20_000 == pytest.approx(0.05, abs=0.01)
    present = [i for i, k in zip(catalog.ids(), kinds, strict=True) if k is ItemKind.PRESENT]
    states = [catalog.current(i) for i in present]
    with_coupon = [s for s in states if s is not None and s.coupon_amount is not None]
    assert len(with_coupon) / len(present) == pytest.approx(0.4, abs=0.02)
    legacy = kinds.index(ItemKind.LEGACY)
    assert catalog.is_legacy(catalog.ids()[legacy])
    assert catalog.current(catalog.ids()[legacy]) is None


def test_item_fields_are_plausible_and_prices_exact() -> None:
    catalog, _ = make(coupon_ratio=0.5)
    seen_coupon_applied = seen_coupon_refused = 0
    for num_iid in catalog.ids()[:500]:
        state = catalog.current(num_iid)
        if state is None:
            continue
        info = state.info
        assert info.num_iid == num_iid == state.num_iid
        assert info.title
        assert info.nick
        assert info.pict_url.startswith("https://")
        assert num_iid in info.item_url
        assert info.user_type in (0, 1)
        assert info.volume >= 0
        for price in (state.reserve_price, state.zk_final_price, state.final_price):
            assert isinstance(price, Decimal)
            assert price.as_tuple().exponent == -2
            assert price > 0
        assert state.reserve_price >= state.zk_final_price
        if state.coupon_amount is None:
            assert state.final_price == state.zk_final_price
            assert state.final_price_basis == "discount"
            continue
        assert state.coupon_start_fee is not None
        assert 0 < state.coupon_amount < state.coupon_start_fee
        assert info.coupon_info == (
            f"满{int(state.coupon_start_fee)}元减{int(state.coupon_amount)}元"
        )
        if state.zk_final_price >= state.coupon_start_fee:
            seen_coupon_applied += 1
            assert state.final_price == state.zk_final_price - state.coupon_amount
            assert state.final_price_basis == "coupon"
        else:  # the threshold edge: a coupon the price does not reach does not apply
            seen_coupon_refused += 1
            assert state.final_price == state.zk_final_price
            assert state.final_price_basis == "discount"
    assert seen_coupon_applied > 0
    assert seen_coupon_refused > 0


def test_same_seed_same_prices_different_seed_different_prices() -> None:
    a, clock_a = make(price_changes_per_hour=60)
    b, clock_b = make(price_changes_per_hour=60)
    c, _ = make(seed=9, price_changes_per_hour=60)
    ids = a.ids()[:50]
    clock_a.advance(600)
    clock_b.advance(600)
    prices_a = [a.current(i) for i in ids]
    assert prices_a == [b.current(i) for i in ids]
    assert [s.zk_final_price if s else None for s in prices_a] != [
        s.zk_final_price if s else None for s in (c.current(i) for i in c.ids()[:50])
    ]


def test_prices_change_with_the_clock_only() -> None:
    catalog, clock = make(price_changes_per_hour=3600)  # one change a second on average
    num_iid = next(i for i in catalog.ids() if catalog.kind(i) is ItemKind.PRESENT)
    first = catalog.current(num_iid)
    assert first is not None
    assert first.changes == 0
    assert first.last_changed == catalog.started
    assert catalog.current(num_iid) is not None
    assert catalog.current(num_iid) == first  # no time passed: nothing changed
    clock.advance(200)
    later = catalog.current(num_iid)
    assert later is not None
    assert 130 <= later.changes <= 270  # Poisson(200)
    assert catalog.started < later.last_changed <= clock.now
    assert later.last_changed_wall == pytest.approx(
        catalog.started_wall + (later.last_changed - catalog.started)
    )
    base = first.info.base_zk_fen
    assert base * 0.8 - 5 <= later.zk_final_price * 100 <= base * 1.2 + 5
    assert later.reserve_price >= later.zk_final_price


def test_the_price_history_does_not_depend_on_when_it_is_read() -> None:
    often, clock_often = make(price_changes_per_hour=360)
    once, clock_once = make(price_changes_per_hour=360)
    ids = often.ids()[:30]
    for _ in range(60):
        clock_often.advance(10)
        for num_iid in ids:
            often.current(num_iid)
    clock_once.advance(600)
    assert [often.current(i) for i in ids] == [once.current(i) for i in ids]
    assert often.touched > 0


def test_no_changes_at_rate_zero_and_restart_forgets_changes() -> None:
    still, clock = make(price_changes_per_hour=0)
    ids = still.ids()[:20]
    before = [still.current(i) for i in ids]
    clock.advance(10**7)
    assert [still.current(i) for i in ids] == before
    assert still.touched == 0

    moving, clock = make(price_changes_per_hour=3600)
    num_iid = next(i for i in moving.ids() if moving.kind(i) is ItemKind.PRESENT)
    clock.advance(100)
    assert moving.version(num_iid)
    moving.restart()
    restarted = moving.current(num_iid)
    assert restarted is not None
    assert restarted.changes == 0
    assert restarted.last_changed == clock.now
    assert restarted.zk_final_price * 100 == restarted.info.base_zk_fen


def test_invalid_parameters_are_refused() -> None:
    with pytest.raises(ValueError, match="size"):
        Catalog(0)
    with pytest.raises(ValueError, match="absent_ratio"):
        Catalog(10, absent_ratio=1.5)
    with pytest.raises(ValueError, match="legacy_ratio"):
        Catalog(10, absent_ratio=0.6, legacy_ratio=0.6)
    with pytest.raises(ValueError, match="price_changes_per_hour"):
        Catalog(10, price_changes_per_hour=-1)
