"""Masking, id policy, the item model and the public surface."""

from __future__ import annotations

from decimal import Decimal

import pytest

import taogate
from taogate import (
    BatchTooLarge,
    Credential,
    FinalPriceBasis,
    IdPolicy,
    InvalidItemId,
    InvalidRequest,
    Item,
    mask_id,
    mask_secret,
)
from taogate._masking import Redactor, mask_url
from taogate._model import compute_final_price, parse_money


def test_exported_members_are_sorted_and_real() -> None:
    assert taogate.__all__ == sorted(taogate.__all__)
    for name in taogate.__all__:
        assert hasattr(taogate, name), name
    public = {n for n in dir(taogate) if not n.startswith("_")}
    modules = {
        "bench",
        "cache",
        "cli",
        "http",
        "jobs",
        "metrics",
        "providers",
        "quota",
        "replicas",
        "testing",
    }
    assert public - modules <= set(taogate.__all__)


def test_testing_exports_are_sorted_and_real() -> None:
    import taogate.testing

    assert taogate.testing.__all__ == sorted(taogate.testing.__all__)
    for name in taogate.testing.__all__:
        assert hasattr(taogate.testing, name), name
    public = {n for n in dir(taogate.testing) if not n.startswith("_")}
    assert public <= set(taogate.testing.__all__) | {"annotations"}


def test_masking() -> None:
    assert mask_id("12345678") == "123…678"
    assert mask_secret("helloworld") != mask_secret("helloworle")
    assert "hello" not in mask_secret("helloworld")
    assert mask_secret("") == "<empty>"
    assert mask_id("abc").startswith("…")
    assert mask_url("redis://u:p@h:1/0") == "redis://***@h:1/0"
    assert (
        mask_url("http://x/item_get/?key=k&secret=s&num_iid=1")
        == "http://x/item_get/?key=***&secret=***&num_iid=1"
    )


def test_credential_repr_hides_the_secret() -> None:
    cred = Credential(app_key="12345678", secret="helloworld")
    assert "helloworld" not in repr(cred)
    assert "12345678" not in repr(cred)
    assert cred.masked == "123…678"


@pytest.mark.parametrize("good", ["520000000001", "Xa9bQ3kT", "a_b-c", "1" * 20])
def test_valid_ids(good: str) -> None:
    assert IdPolicy().check(good) == good


@pytest.mark.parametrize("bad", ["", "1" * 21, "12 3", "1,2", "../x", "价格", "1\n"])
def test_invalid_ids(bad: str) -> None:
    with pytest.raises(InvalidItemId):
        IdPolicy().check(bad)


def test_non_string_id_is_refused() -> None:
    with pytest.raises(InvalidItemId):
        IdPolicy().check(123)  # type: ignore[arg-type]


def test_batches_are_deduplicated_and_bounded() -> None:
    policy = IdPolicy()
    assert policy.check_batch(["1", "2", "1"], 2) == ["1", "2"]
    with pytest.raises(BatchTooLarge):
        policy.check_batch([str(i) for i in range(41)], 40)
    with pytest.raises(InvalidRequest):
        policy.check_batch([], 40)
    assert IdPolicy(pattern=r"\d{12}").check("520000000001") == "520000000001"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("78.90", Decimal("78.90")),
        (78.9, Decimal("78.9")),
        (5, Decimal(5)),
        ("", None),
        (None, None),
        ("12.345", Decimal("12.35")),  # rounded half up to cents
        ("1e-999999999", Decimal("0.00")),
        ("1e2", Decimal("100")),  # never shown with an exponent
        ("1000000000", Decimal("1000000000")),
        ("-0", Decimal("0")),
    ],
)
def test_parse_money(raw: object, expected: Decimal | None) -> None:
    value = parse_money(raw)
    assert value == expected
    if value is not None:
        assert "E" not in str(value)
        assert str(value).lstrip("-") == str(value)


@pytest.mark.parametrize(
    "raw",
    ["abc", "NaN", "Infinity", True, "-0.01", "1e999999999", "1000000000.01", "9" * 60, {}, []],
)
def test_parse_money_refuses_what_is_not_a_price(raw: object) -> None:
    with pytest.raises(ValueError, match=r"not a|out of bounds"):
        parse_money(raw)


def test_final_price_rules() -> None:
    d = Decimal
    assert compute_final_price(d("78.9"), final_promotion_price=d("60")) == (
        d("60"),
        FinalPriceBasis.FINAL_PROMOTION_PRICE,
    )
    assert compute_final_price(d("78.9"), coupon_amount=d("10"), coupon_start_fee=d("59")) == (
        d("68.9"),
        FinalPriceBasis.COUPON,
    )
    assert compute_final_price(d("59"), coupon_amount=d("10"), coupon_start_fee=d("59")) == (
        d("49"),
        FinalPriceBasis.COUPON,
    )
    assert compute_final_price(d("58.99"), coupon_amount=d("10"), coupon_start_fee=d("59")) == (
        d("58.99"),
        FinalPriceBasis.DISCOUNT,
    )
    assert compute_final_price(d("5"), coupon_amount=d("10")) == (d("5"), FinalPriceBasis.DISCOUNT)
    assert compute_final_price(None) == (None, FinalPriceBasis.DISCOUNT)


def test_item_to_dict_uses_exact_strings() -> None:
    item = Item(
        num_iid="1",
        title="t",
        shop="s",
        reserve_price=Decimal("10.00"),
        zk_final_price=Decimal("9.90"),
        final_price=Decimal("9.90"),
        final_price_basis=FinalPriceBasis.DISCOUNT,
        volume=3,
    )
    out = item.to_dict()
    assert out["zk_final_price"] == "9.90"
    assert out["final_price_basis"] == "discount"
    assert "coupon_amount" not in out
    assert out["volume"] == 3


def test_import_opens_nothing_and_leaves_integrations_out() -> None:
    import subprocess
    import sys

    code = (
        "import sys, taogate; "
        "print(sorted(m for m in sys.modules if m in ('redis', 'prometheus_client', "
        "'taogate.replicas', 'taogate._redis', 'taogate.jobs', 'taogate.http', 'starlette')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


SECRET = "a-credential-secret/with+odd=chars&0123456789"
TOKEN = "client-token-0123456789abcdefghijklmnop"


def test_redactor_takes_every_secret_out_in_every_form_then_cuts() -> None:
    from urllib.parse import quote, quote_plus

    redact = Redactor([SECRET, TOKEN, "abc"])  # too short to redact: ordinary text
    text = f"echo ?key=1&secret={quote(SECRET, safe='')} s2={quote_plus(SECRET)} {SECRET} {TOKEN}"
    out = redact(text)
    for form in (SECRET, quote(SECRET, safe=""), quote_plus(SECRET), TOKEN):
        assert form not in out
    assert mask_secret(SECRET) in out
    assert redact("abc") == "abc"
    long = redact("x" * 190 + SECRET + "y" * 1000)
    assert len(long) == 200
    assert SECRET[:8] not in long  # replaced before the cut: no prefix left at the edge
    assert redact("short") == "short"
    redact.add("rotated-secret-0123456789")
    assert "rotated-secret-0123456789" not in redact("x rotated-secret-0123456789 y")


def test_settings_redact_credentials_tokens_and_passwords() -> None:
    settings = taogate.Settings(
        credentials=[{"app_key": "12345678", "secret": SECRET}],
        server={"clients": [{"name": "site", "token": TOKEN}]},
        redis={"url": "redis://:redis-password-0123456789@127.0.0.1:1/0"},
        egress=[{"name": "p", "proxy": "http://u:proxy-password-0123456789@127.0.0.1:3128"}],
    )
    text = f"{SECRET} {TOKEN} redis-password-0123456789 proxy-password-0123456789"
    out = settings.redactor()(text)
    for secret in (SECRET, TOKEN, "redis-password-0123456789", "proxy-password-0123456789"):
        assert secret not in out
