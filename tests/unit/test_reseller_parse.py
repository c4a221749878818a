"""The reseller envelope and its error codes."""

from __future__ import annotations

from decimal import Decimal

import orjson
import pytest

from taogate import (
    CredentialInvalid,
    FinalPriceBasis,
    ItemUnreadable,
    RateLimited,
    UpstreamBadRequest,
    UpstreamTransient,
)
from taogate._masking import Redactor
from taogate.providers.reseller import parse_reseller


def test_success_with_promotion_price() -> None:
    body = (
        b'{"item": {"num_iid": "520000000001", "title": "t", "price": 78.9,'
        b' "orginal_price": "102.00", "promotion_price": "68.90", "nick": "shop",'
        b' "detail_url": "https://x", "pic_url": "https://y"},'
        b' "error_code": "0000", "reason": "ok", "request_id": "gw-1"}'
    )
    item = parse_reseller(body, "520000000001")
    assert item is not None
    assert item.zk_final_price == Decimal("78.9")
    assert item.reserve_price == Decimal("102.00")
    assert item.final_price == Decimal("68.90")
    assert item.final_price_basis is FinalPriceBasis.FINAL_PROMOTION_PRICE
    assert item.item_url == "https://x"


def test_success_without_promotion() -> None:
    item = parse_reseller(b'{"item": {"num_iid": "1", "price": "5.00"}, "error_code": "0000"}', "1")
    assert item is not None
    assert item.final_price_basis is FinalPriceBasis.DISCOUNT


def test_not_found() -> None:
    assert parse_reseller(b'{"error_code": "2000", "reason": "item not found"}', "1") is None
    assert parse_reseller(b'{"error_code": "0000", "item": null}', "1") is None


@pytest.mark.parametrize(
    ("body", "cls"),
    [
        (b'{"error_code": "4013", "reason": "This ban will last for 3 more seconds"}', RateLimited),
        (b'{"error_code": "4005", "reason": "key or secret invalid"}', CredentialInvalid),
        (b'{"error_code": "4000", "reason": "missing num_iid"}', UpstreamBadRequest),
        (b'{"error_code": "5000", "reason": "busy"}', UpstreamTransient),
        (b"not json", UpstreamTransient),
        (b"[]", UpstreamTransient),
        (b'{"error_code": "0000", "item": []}', UpstreamTransient),
    ],
)
def test_errors(body: bytes, cls: type[Exception]) -> None:
    with pytest.raises(cls) as info:
        parse_reseller(body, "1", credential="k…y")
    assert type(info.value) is cls


def test_rate_limit_seconds() -> None:
    with pytest.raises(RateLimited) as info:
        parse_reseller(
            b'{"error_code": "4013", "reason": "This ban will last for 3 more seconds"}', "1"
        )
    assert info.value.retry_after == 3


@pytest.mark.parametrize(
    "fields",
    [
        '"price": "1e999999999", "promotion_price": "1"',
        '"price": 1e308',
        '"price": "abc"',
        '"price": "-1"',
        '"price": "5", "promotion_price": "NaN"',
        '"price": {"v": 1}',
        '"price": "5", "title": ["a"]',
    ],
)
def test_an_item_with_an_unreadable_field_is_unreadable(fields: str) -> None:
    body = f'{{"item": {{"num_iid": "1", {fields}}}, "error_code": "0000"}}'.encode()
    with pytest.raises(ItemUnreadable) as info:
        parse_reseller(body, "1", credential="k…y")
    assert info.value.num_iid == "1"
    assert info.value.credential == "k…y"


def test_an_echoed_secret_never_stays_in_the_error() -> None:
    secret = "reseller-secret-0123456789abcdef"
    reason = f"bad num_iid; query was key=123&secret={secret}&num_iid=x " + "z" * 4000
    body = orjson.dumps({"error_code": "4000", "reason": reason, "request_id": secret})
    with pytest.raises(UpstreamBadRequest) as info:
        parse_reseller(body, "1", redact=Redactor([secret]))
    assert secret not in str(info.value)
    assert len(info.value.message) <= 200
