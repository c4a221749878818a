"""The simulator's item catalog: ids, items and prices that change over time, all from a seed.

Ids come from an affine bijection on the 12-digit range ``500000000000..799999999999`` (so an
id maps back to its index in O(1)); whether an id is absent, legacy or has a coupon, its fields
and its price history all come from hashes of ``(seed, index)``. Price changes form a Poisson
process evaluated lazily, so nothing is stored for an item until its price first changes.
"""

from __future__ import annotations

import math
import random
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum
from typing import Final

__all__ = ["Catalog", "ItemInfo", "ItemKind", "ItemState", "yuan"]

_ID_BASE: Final = 500_000_000_000
_ID_SPAN: Final = 300_000_000_000  # ids 5xxxxxxxxxxx..7xxxxxxxxxxx
_MASK64: Final = (1 << 64) - 1
_GOLDEN: Final = 0x9E3779B97F4A7C15
_PRICE_SALT: Final = 0x5851F42D4C957F2D
_COUPON_SALT: Final = 0x2545F4914F6CDD1D
_CACHE_SIZE: Final = 200_000  # ids whose kind and fields are kept; oldest dropped first
_COUPON_YUAN: Final = (1, 2, 3, 5, 10, 20, 30, 50, 100, 200)

# Word lists for plausible titles and shop names.
_BRANDS: Final = (
    "优衣库", "小米", "安踏", "李宁", "南极人", "三只松鼠", "百草味", "美的", "苏泊尔", "回力",
    "森马", "恒源祥", "良品铺子", "九阳", "罗莱", "太平鸟", "蕉下", "绿联", "公牛", "得力",
)  # fmt: skip
_ADJECTIVES: Final = (
    "新款", "夏季", "加厚", "高腰", "纯棉", "宽松", "韩版", "正品", "大容量", "便携式",
    "家用", "复古", "轻薄", "防水", "静音", "简约", "ins风", "冬季", "速干", "多功能",
)  # fmt: skip
_PRODUCTS: Final = (
    "T恤", "连衣裙", "运动鞋", "保温杯", "数据线", "蓝牙耳机", "双肩包", "电饭煲", "零食大礼包",
    "收纳盒", "牛仔裤", "卫衣", "台灯", "面膜", "四件套", "雨伞", "插线板", "笔记本", "拖鞋",
    "羽绒服",
)  # fmt: skip
_SUFFIXES: Final = ("男女同款", "包邮", "官方正品", "送礼", "学生", "情侣款", "2024新品", "")
_SHOP_WORDS: Final = (
    "小鹿", "阿狸", "糖果", "木子", "晨光", "花间", "知足", "悠然", "橙子", "青木",
)  # fmt: skip
_SHOP_KINDS: Final = ("的小店", "家居", "百货", "精品店", "生活馆", "优选")
_TMALL_KINDS: Final = ("官方旗舰店", "旗舰店", "专营店", "官方店")
_PROVCITIES: Final = ("浙江 杭州", "广东 广州", "上海", "江苏 苏州", "福建 泉州", "北京")


class ItemKind(StrEnum):
    """What the catalog says about an id."""

    PRESENT = "present"
    ABSENT = "absent"  # in the id list but delisted: never returned
    LEGACY = "legacy"  # an old-format id: a call containing it is refused (15 / -4003)
    UNKNOWN = "unknown"  # not a catalog id at all: absent


@dataclass(frozen=True, slots=True, kw_only=True)
class ItemInfo:
    """The fields of a present item that never change; money in fen (integer cents)."""

    num_iid: str
    title: str
    nick: str
    seller_id: int
    user_type: int
    volume: int
    pict_url: str
    small_images: tuple[str, ...]
    item_url: str
    click_url: str
    provcity: str
    base_zk_fen: int
    base_reserve_fen: int
    coupon_amount_fen: int | None
    coupon_start_fee_fen: int | None
    coupon_id: str | None

    @property
    def coupon_info(self) -> str | None:
        """The coupon as Taobao words it: "满X元减Y元"."""
        if self.coupon_amount_fen is None or self.coupon_start_fee_fen is None:
            return None
        return f"满{self.coupon_start_fee_fen // 100}元减{self.coupon_amount_fen // 100}元"


def _money(fen: int) -> Decimal:
    return Decimal(fen).scaleb(-2)


def yuan(fen: int) -> str:
    """Fen as the platform writes money: ``7890`` -> ``"78.90"`` (what ``str(Decimal)`` gives)."""
    return f"{fen // 100}.{fen % 100:02d}"


@dataclass(frozen=True, slots=True, kw_only=True)
class ItemState:
    """An item's prices at one instant; the API and the truth endpoint both render this.

    Prices are kept in fen (cheap to make on the hot path) and read as ``Decimal`` properties.
    """

    info: ItemInfo
    reserve_fen: int
    zk_fen: int
    final_fen: int
    #: ``coupon`` when the coupon's threshold is met (zk_final_price >= coupon_start_fee).
    final_price_basis: str
    #: Monotonic clock time of the last change (the catalog's start for an unchanged item).
    last_changed: float
    last_changed_wall: float
    changes: int

    @property
    def num_iid(self) -> str:
        return self.info.num_iid

    @property
    def reserve_price(self) -> Decimal:
        return _money(self.reserve_fen)

    @property
    def zk_final_price(self) -> Decimal:
        return _money(self.zk_fen)

    @property
    def final_price(self) -> Decimal:
        return _money(self.final_fen)

    @property
    def coupon_amount(self) -> Decimal | None:
        fen = self.info.coupon_amount_fen
        return None if fen is None else _money(fen)

    @property
    def coupon_start_fee(self) -> Decimal | None:
        fen = self.info.coupon_start_fee_fen
        return None if fen is None else _money(fen)


class _Track:
    """The price process of an item that has changed at least once since the restart."""

    __slots__ = ("base_fen", "changes", "h", "last_changed", "next_change", "zk_fen")

    def __init__(self, h: int, base_fen: int, first_change: float) -> None:
        self.h = h
        self.base_fen = base_fen
        self.changes = 0
        self.zk_fen = base_fen
        self.last_changed = 0.0
        self.next_change = first_change


def _splitmix64(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def _unit(h: int) -> float:
    """A uniform float in (0, 1) from 64 hash bits."""
    return ((h >> 11) + 0.5) / float(1 << 53)


def _change(h: int, k: int) -> tuple[float, float]:
    """Two uniforms for an item's ``k``-th step: the gap to the next change and the price."""
    g = _splitmix64((h + k * _GOLDEN) & _MASK64)
    return _unit(g), _unit(_splitmix64(g))


def _base_prices(h: int) -> tuple[int, int]:
    """An item's base discount price and list price in fen: log-uniform 9.90..1999.00."""
    d = _splitmix64(_splitmix64(h ^ _PRICE_SALT))
    u_price = ((d >> 40) + 0.5) / (1 << 24)
    u_depth = (((d >> 10) & 0xFFFFFF) + 0.5) / (1 << 24)
    ending, deep = (d >> 36) & 0xF, (d >> 34) & 0x3
    zk = int(990 * math.exp(u_price * math.log(199_900 / 990)))
    if ending < 6:
        zk = zk // 100 * 100 + 90
    elif ending < 9:
        zk = zk // 100 * 100 + 99
    elif ending < 12:
        zk = max(100, zk // 100 * 100)
    reserve = zk if deep == 0 else int(zk * (1.05 + 0.75 * u_depth)) // 100 * 100 + 100
    return zk, max(reserve, zk)


class Catalog:
    """``size`` deterministic item ids and their items; prices change as the clock advances.

    The ``k``-th price change of an item draws from a hash of ``(seed, id, k)``, a counter-based
    generator: nothing is stored for an item until its first change, then four numbers (a
    ``random.Random`` per item would hold 5 KB of state). The same seed and the same clock
    readings give the same prices, whatever order the items are asked in.
    """

    def __init__(
        self,
        size: int = 100_000,
        seed: int = 1,
        absent_ratio: float = 0.02,
        coupon_ratio: float = 0.3,
        legacy_ratio: float = 0.0,
        price_changes_per_hour: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        if not 1 <= size <= _ID_SPAN:
            raise ValueError(f"size must be in 1..{_ID_SPAN}")
        for name, ratio in (("absent_ratio", absent_ratio), ("coupon_ratio", coupon_ratio)):
            if not 0 <= ratio <= 1:
                raise ValueError(f"{name} must be in [0, 1]")
        if not 0 <= legacy_ratio <= 1 - absent_ratio:
            raise ValueError("legacy_ratio must be in [0, 1 - absent_ratio]")
        if price_changes_per_hour < 0:
            raise ValueError("price_changes_per_hour must be >= 0")
        self.size = size
        self.seed = seed
        self.absent_ratio = absent_ratio
        self.coupon_ratio = coupon_ratio
        self.legacy_ratio = legacy_ratio
        self.price_changes_per_hour = price_changes_per_hour
        self._rate_per_s = price_changes_per_hour / 3600.0
        self._clock = clock
        self._wall_clock = wall_clock
        setup = random.Random(f"taogate-catalog:{seed}")
        mult = setup.randrange(_ID_SPAN // 3, _ID_SPAN)
        while math.gcd(mult, _ID_SPAN) != 1:
            mult += 1
        self._mult = mult
        self._mult_inv = pow(mult, -1, _ID_SPAN)
        self._offset = setup.randrange(_ID_SPAN)
        self._hash_key = setup.getrandbits(64)
        self._ids: list[str] | None = None
        self._tracks: dict[str, _Track] = {}
        self._infos: OrderedDict[str, ItemInfo] = OrderedDict()
        self._kinds: OrderedDict[str, tuple[ItemKind, int, float]] = OrderedDict()
        self.started = 0.0
        self.started_wall = 0.0
        self.restart()

    def restart(self) -> None:
        """Forget every price change: the catalog starts again at the clock's current time."""
        self._tracks.clear()
        self.started = self._clock()
        self.started_wall = self._wall_clock()

    @property
    def touched(self) -> int:
        """How many items hold state (changed at least once since the last restart)."""
        return len(self._tracks)

    # --- ids ------------------------------------------------------------------------------

    def id_at(self, index: int) -> str:
        """The id at ``index`` (0 <= index < size)."""
        if not 0 <= index < self.size:
            raise IndexError(index)
        return str(_ID_BASE + (self._mult * index + self._offset) % _ID_SPAN)

    def ids(self) -> list[str]:
        """Every catalog id (absent and legacy ones included), in index order."""
        if self._ids is None:
            base, mult, off, span = _ID_BASE, self._mult, self._offset, _ID_SPAN
            self._ids = [str(base + (mult * i + off) % span) for i in range(self.size)]
        return list(self._ids)

    def index_of(self, num_iid: str) -> int | None:
        """The catalog index of ``num_iid``, or ``None`` if it is not a catalog id."""
        if len(num_iid) != 12 or not num_iid.isascii() or not num_iid.isdigit():
            return None
        value = int(num_iid) - _ID_BASE
        if not 0 <= value < _ID_SPAN:
            return None
        index = ((value - self._offset) * self._mult_inv) % _ID_SPAN
        return index if index < self.size else None

    def _lookup(self, num_iid: str) -> tuple[ItemKind, int, float]:
        """``(kind, hash, first gap)`` of an id, cached (bounded): the hot path's first step."""
        hit = self._kinds.get(num_iid)
        if hit is None:
            index = self.index_of(num_iid)
            if index is None:
                hit = (ItemKind.UNKNOWN, 0, math.inf)
            else:
                h = _splitmix64(self._hash_key ^ index)
                u = _unit(h)
                kind = ItemKind.PRESENT
                if u < self.absent_ratio:
                    kind = ItemKind.ABSENT
                elif u < self.absent_ratio + self.legacy_ratio:
                    kind = ItemKind.LEGACY
                gap = math.inf
                if self._rate_per_s > 0:
                    gap = -math.log(_change(h, 0)[0]) / self._rate_per_s
                hit = (kind, h, gap)
            if len(self._kinds) >= _CACHE_SIZE:
                self._kinds.popitem(last=False)
            self._kinds[num_iid] = hit
        return hit

    def kind(self, num_iid: str) -> ItemKind:
        """Whether ``num_iid`` is present, absent, legacy or not a catalog id."""
        return self._lookup(num_iid)[0]

    def is_legacy(self, num_iid: str) -> bool:
        """True for an old-format id (the API refuses a batch containing one)."""
        return self._lookup(num_iid)[0] is ItemKind.LEGACY

    # --- items ----------------------------------------------------------------------------

    def info(self, num_iid: str) -> ItemInfo | None:
        """The unchanging fields of a present item; ``None`` for any other id."""
        info = self._infos.get(num_iid)
        if info is None:
            kind, h, _ = self._lookup(num_iid)
            if kind is not ItemKind.PRESENT:
                return None
            coupon = _unit(_splitmix64(h ^ _COUPON_SALT)) < self.coupon_ratio
            info = _make_info(num_iid, h, coupon)
            if len(self._infos) >= _CACHE_SIZE:
                self._infos.popitem(last=False)
            self._infos[num_iid] = info
        return info

    def version(self, num_iid: str, now: float | None = None) -> int | None:
        """How many times the item's price changed by ``now``; ``None`` if it is absent.

        The wire form of an item depends on this number only, so it is a cache key.
        """
        if now is None:
            now = self._clock()
        track = self._tracks.get(num_iid)
        if track is None:
            kind, h, gap = self._lookup(num_iid)
            if kind is not ItemKind.PRESENT:
                return None
            if now < self.started + gap:
                return 0
            track = _Track(h, _base_prices(h)[0], self.started + gap)
            self._tracks[num_iid] = track
        if now >= track.next_change:
            when, k, h, base = track.next_change, track.changes, track.h, track.base_fen
            while when <= now:
                k += 1
                u_gap, u_price = _change(h, k)
                track.zk_fen = max(10, round(base * (0.8 + 0.4 * u_price) / 10) * 10)
                track.last_changed = when
                when -= math.log(u_gap) / self._rate_per_s
            track.changes, track.next_change = k, when
        return track.changes

    def current(self, num_iid: str, now: float | None = None) -> ItemState | None:
        """The item's prices at monotonic time ``now`` (default: the clock); ``None`` if absent."""
        changes = self.version(num_iid, now)
        info = self.info(num_iid)
        if changes is None or info is None:
            return None
        track = self._tracks.get(num_iid)
        zk, when = info.base_zk_fen, self.started
        if track is not None and changes:
            zk, when = track.zk_fen, track.last_changed
        reserve = max(info.base_reserve_fen, zk)
        final, basis = zk, "discount"
        amount, threshold = info.coupon_amount_fen, info.coupon_start_fee_fen
        if amount is not None and threshold is not None and zk >= threshold:
            final, basis = zk - amount, "coupon"
        return ItemState(
            info=info,
            reserve_fen=reserve,
            zk_fen=zk,
            final_fen=final,
            final_price_basis=basis,
            last_changed=when,
            last_changed_wall=self.started_wall + (when - self.started),
            changes=changes,
        )


def _make_info(num_iid: str, h: int, has_coupon: bool) -> ItemInfo:
    """An item's unchanging fields, all cut from hashes of ``h`` (no generator: it is cheaper)."""
    a = _splitmix64(h)
    b = _splitmix64(a)
    c = _splitmix64(b)
    d = _splitmix64(c)
    pool = (a << 128) | (b << 64) | c  # small choices are cut from this, one divmod each
    pool, brand_at = divmod(pool, len(_BRANDS))
    pool, first = divmod(pool, len(_ADJECTIVES))
    pool, step = divmod(pool, len(_ADJECTIVES) - 1)
    pool, product = divmod(pool, len(_PRODUCTS))
    pool, suffix = divmod(pool, len(_SUFFIXES))
    pool, kind_at = divmod(pool, 10 * len(_SHOP_KINDS))
    pool, word1 = divmod(pool, len(_SHOP_WORDS))
    pool, word2 = divmod(pool, len(_SHOP_WORDS))
    pool, where = divmod(pool, len(_PROVCITIES))
    pool, n_images = divmod(pool, 4)
    pool, coupon_style = divmod(pool, 10)
    pool, coupon_at = divmod(pool, 1024)
    seller_id = 100_000_000 + pool % 2_900_000_000
    brand = _BRANDS[brand_at]
    second = (first + 1 + step) % len(_ADJECTIVES)
    title = (
        f"{brand}{_ADJECTIVES[first]}{_ADJECTIVES[second]}{_PRODUCTS[product]}{_SUFFIXES[suffix]}"
    )
    user_type = 1 if kind_at % 10 < 4 else 0
    if user_type == 1:
        nick = f"{brand}{_TMALL_KINDS[kind_at % len(_TMALL_KINDS)]}"
    else:
        nick = f"{_SHOP_WORDS[word1]}{_SHOP_WORDS[word2]}{_SHOP_KINDS[kind_at // 10]}"
    images = [
        f"https://img.alicdn.com/imgextra/i{1 + k}/{seller_id}/O1CN01{_splitmix64(d + k):016x}"
        f"_!!{seller_id}.jpg"
        for k in range(1 + n_images)
    ]
    host = "detail.tmall.com" if user_type == 1 else "item.taobao.com"
    u_volume = ((d >> 11) + 0.5) / (1 << 53)
    volume = min(int(8 * u_volume**-0.9) - 8, 500_000)  # Pareto-like: most items sell little
    zk, reserve = _base_prices(h)
    amount = threshold = None
    coupon_id = None
    if has_coupon:
        # Coupons stay below 40% of the base price, so the lowest price (-20%) still pays > 0.
        amounts = [y for y in _COUPON_YUAN if y * 100 <= 0.4 * zk]
        amount = 100 * amounts[coupon_at % len(amounts)]
        if coupon_style < 7:  # a threshold every price of the item meets
            threshold = max(2 * amount, int(zk * 0.7) // 1000 * 1000)
        else:  # above the base price: the coupon applies only after a rise, if ever
            above = 1.0 + 0.3 * (coupon_at / 1024)
            threshold = max(2 * amount, (int(zk * above) // 1000 + 1) * 1000)
        coupon_id = f"{a:016x}{d:016x}"
    return ItemInfo(
        num_iid=num_iid,
        title=title,
        nick=nick,
        seller_id=seller_id,
        user_type=user_type,
        volume=max(volume, 0),
        pict_url=images[0],
        small_images=tuple(images[1:]),
        item_url=f"https://{host}/item.htm?id={num_iid}",
        click_url=f"https://s.click.taobao.com/t?e=m%3D2%26s%3D{b:016x}{c:08x}",
        provcity=_PROVCITIES[where],
        base_zk_fen=zk,
        base_reserve_fen=reserve,
        coupon_amount_fen=amount,
        coupon_start_fee_fen=threshold,
        coupon_id=coupon_id,
    )
