"""The item model: one answer per id, money as ``Decimal``."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from enum import StrEnum
from typing import Any

__all__ = [
    "MAX_PRICE",
    "FinalPriceBasis",
    "Item",
    "Lookup",
    "Source",
    "compute_final_price",
    "parse_money",
]


class FinalPriceBasis(StrEnum):
    """How ``Item.final_price`` (the price a buyer pays) was obtained."""

    #: ``final_promotion_price`` from ``taobao.tbk.item.info.upgrade.get`` (or a reseller's
    #: promotion price): the platform's own figure after coupons and promotions.
    FINAL_PROMOTION_PRICE = "final_promotion_price"
    #: ``zk_final_price − coupon_amount``: a coupon was given and the price meets its threshold.
    COUPON = "coupon"
    #: no coupon information (or a threshold the price does not meet): ``zk_final_price``.
    DISCOUNT = "discount"


#: The highest price taogate accepts from an upstream, in yuan.
MAX_PRICE = Decimal(10) ** 9
_CENT = Decimal("0.01")
_MAX_MONEY_TEXT = 40  # characters: far more than any real price, far less than a bomb


def parse_money(value: Any) -> Decimal | None:
    """An upstream money field as an exact ``Decimal`` in yuan; ``None`` when absent.

    Strings are taken as they are. A float (the reseller sends some prices as JSON numbers) is
    read through its shortest ``repr``, which is the literal the JSON carried for any price of
    fewer than 16 significant digits. A price is rounded (half up) to at most two decimal
    places and written without an exponent. Raises ``ValueError`` naming what is wrong for
    anything that is not a number from 0 to :data:`MAX_PRICE` (text, ``NaN``, a negative
    number, ``1e999999999``): such a value must fail its item, never the arithmetic after it.
    """
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ValueError(f"not a number ({type(value).__name__})")
    text = repr(value) if isinstance(value, float) else str(value).strip()
    if len(text) > _MAX_MONEY_TEXT:
        raise ValueError(f"not a price ({len(text)} characters)")
    try:
        money = Decimal(text)
    except InvalidOperation:
        raise ValueError(f"not a number ({text[:20]!r})") from None
    if not money.is_finite():
        raise ValueError(f"not a finite number ({text[:20]!r})")
    if money < 0 or money > MAX_PRICE + 1:  # comparisons are exact whatever the exponent
        raise ValueError(f"out of bounds 0..{MAX_PRICE:f} ({text[:20]!r})")
    exponent = money.as_tuple().exponent
    assert isinstance(exponent, int)  # finite
    if exponent < -2:
        money = money.quantize(_CENT, rounding=ROUND_HALF_UP)
    elif exponent > 0:
        money = money.quantize(Decimal(1))  # "1E+2" is shown as "100"
    if money > MAX_PRICE:
        raise ValueError(f"out of bounds 0..{MAX_PRICE:f} ({text[:20]!r})")
    if not money:
        money = abs(money)  # "-0" is 0
    return money


def compute_final_price(
    zk_final_price: Decimal | None,
    *,
    final_promotion_price: Decimal | None = None,
    coupon_amount: Decimal | None = None,
    coupon_start_fee: Decimal | None = None,
) -> tuple[Decimal | None, FinalPriceBasis]:
    """The buyer's price and its basis, by DESIGN.md "The item and its prices".

    A coupon applies only when the discounted price meets its threshold (``coupon_start_fee``,
    the 满X of "满X元减Y元"); clients that forget the threshold show prices nobody can pay.
    """
    if final_promotion_price is not None:
        return final_promotion_price, FinalPriceBasis.FINAL_PROMOTION_PRICE
    if (
        zk_final_price is not None
        and coupon_amount is not None
        and coupon_amount > 0
        and zk_final_price >= (coupon_start_fee or Decimal(0))
        and coupon_amount <= zk_final_price
    ):
        return zk_final_price - coupon_amount, FinalPriceBasis.COUPON
    return zk_final_price, FinalPriceBasis.DISCOUNT


@dataclass(frozen=True, slots=True, kw_only=True)
class Item:
    """One item as the upstream described it, with exact prices.

    ``num_iid`` is a string: new item ids may be opaque. ``shop`` is the seller's nick or shop
    title. Optional fields are ``None`` when the upstream method does not give them.
    """

    num_iid: str
    title: str
    shop: str
    reserve_price: Decimal | None
    zk_final_price: Decimal | None
    final_price: Decimal | None
    final_price_basis: FinalPriceBasis
    coupon_amount: Decimal | None = None
    coupon_start_fee: Decimal | None = None
    pict_url: str | None = None
    item_url: str | None = None
    seller_id: str | None = None
    user_type: int | None = None
    volume: int | None = None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Item:
        """The inverse of :meth:`to_dict` (money back to ``Decimal``)."""
        money = (
            "reserve_price",
            "zk_final_price",
            "final_price",
            "coupon_amount",
            "coupon_start_fee",
        )
        values = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        for name in money:
            if values.get(name) is not None:
                values[name] = Decimal(values[name])
        values["final_price_basis"] = FinalPriceBasis(values["final_price_basis"])
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict: money as exact decimal strings, absent fields left out."""
        out: dict[str, Any] = {}
        for name in self.__slots__:
            value = getattr(self, name)
            if value is None:
                continue
            out[name] = str(value) if isinstance(value, Decimal) else value
        return out


class Source(StrEnum):
    """Where an answer came from."""

    L1 = "l1"
    L2 = "l2"
    UPSTREAM = "upstream"


@dataclass(frozen=True, slots=True, kw_only=True)
class Lookup:
    """The answer for one id: the item (``None``: it does not exist) or the error.

    ``stale`` answers are older than the lookup's ``max_age`` and were served because the
    upstream could not answer; ``age_s`` says how old any answer is.
    """

    num_iid: str
    item: Item | None = None
    source: Source | None = None
    stale: bool = False
    age_s: float = 0.0
    error: Exception | None = None

    @property
    def found(self) -> bool:
        return self.item is not None

    def to_dict(self) -> dict[str, Any]:
        """The JSON answer: ``{"item": {...}, "source": "l1", "stale": false, "age_s": 1.2}``."""
        return {
            "item": None if self.item is None else self.item.to_dict(),
            "source": None if self.source is None else str(self.source),
            "stale": self.stale,
            "age_s": round(self.age_s, 3),
        }
