"""The signing vectors of TOP-PROTOCOL.md §2, and what a call sends."""

from __future__ import annotations

import hashlib
from decimal import Decimal

import pytest

from taogate import Credential
from taogate.providers.top import INFO_GET, UPGRADE_GET, TopProvider, beijing_timestamp, sign

VECTOR_PARAMS = {
    "app_key": "12345678",
    "format": "json",
    "method": "taobao.tbk.item.info.get",
    "num_iids": "123,456",
    "timestamp": "2024-01-01 12:00:00",
    "v": "2.0",
}


@pytest.mark.parametrize(
    ("sign_method", "expected"),
    [
        ("md5", "6373F16B5F71E531091B3767746D8EAD"),
        ("hmac", "72F93DFB9EF7F00E47DFDCBA1F9D904B"),
        ("hmac-sha256", "00A1195D78E3259E179A2CEB6314AF37B94E5FCEFAB9FB528A4201F258CA56DB"),
    ],
)
def test_signing_vectors(sign_method: str, expected: str) -> None:
    params = {**VECTOR_PARAMS, "sign_method": sign_method}
    assert sign(params, "helloworld", sign_method) == expected


def test_sign_ignores_an_existing_sign_parameter() -> None:
    params = {**VECTOR_PARAMS, "sign_method": "md5"}
    assert sign({**params, "sign": "OLD"}, "helloworld", "md5") == sign(params, "helloworld", "md5")


def test_sign_is_raw_utf8_not_url_encoded() -> None:
    params = {"method": "x", "q": "价格 a&b=c"}
    text = "methodxq价格 a&b=c"
    want = hashlib.md5(f"s{text}s".encode(), usedforsecurity=False).hexdigest().upper()
    assert sign(params, "s", "md5") == want


def test_sign_rejects_unknown_method() -> None:
    with pytest.raises(ValueError, match="sign_method"):
        sign(VECTOR_PARAMS, "helloworld", "sha1")


@pytest.mark.parametrize(
    ("epoch", "expected"),
    [
        (0, "1970-01-01 08:00:00"),
        (1704081600, "2024-01-01 12:00:00"),  # 04:00 UTC is noon in Beijing
        (1704124800, "2024-01-02 00:00:00"),  # 16:00 UTC: already tomorrow in Beijing
    ],
)
def test_timestamp_is_beijing_time_whatever_the_host_zone(
    monkeypatch: pytest.MonkeyPatch, epoch: int, expected: str
) -> None:
    import time

    for zone in ("UTC", "America/Los_Angeles", "Asia/Shanghai"):
        monkeypatch.setenv("TZ", zone)
        time.tzset()
        assert beijing_timestamp(epoch) == expected
    monkeypatch.delenv("TZ")
    time.tzset()


def _provider(**kw: object) -> TopProvider:
    return TopProvider(url="http://127.0.0.1:9/router/rest", wall_clock=lambda: 1704081600.0, **kw)  # type: ignore[arg-type]


CRED = Credential(app_key="12345678", secret="helloworld", cost_per_call=Decimal("0.01"))


def test_build_params_reproduces_the_vector() -> None:
    params = _provider(sign_method="md5").build_params(["123", "456"], CRED)
    assert params == {
        **VECTOR_PARAMS,
        "sign_method": "md5",
        "sign": "6373F16B5F71E531091B3767746D8EAD",
    }


def test_build_params_for_the_upgrade_method_and_simplify() -> None:
    provider = _provider(method=UPGRADE_GET, simplify=True, params={"platform": "2", "ip": " "})
    params = provider.build_params(["1", "2"], CRED)
    assert params["item_id"] == "1,2"
    assert "num_iids" not in params
    assert params["simplify"] == "true"
    assert params["platform"] == "2"
    assert "ip" not in params  # empty values are neither sent nor signed
    assert provider.max_batch == 20
    assert params["sign"] == sign(params, "helloworld", "hmac-sha256")


def test_max_batch_follows_the_method() -> None:
    assert _provider(method=INFO_GET).max_batch == 40
    with pytest.raises(ValueError, match="unsupported method"):
        _provider(method="taobao.item.get")
