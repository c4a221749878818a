"""Every code of TOP-PROTOCOL.md §4 lands in the error class DESIGN.md gives it."""

from __future__ import annotations

import pytest

from taogate import (
    CredentialInvalid,
    IpNotWhitelisted,
    ProtocolMismatch,
    RateLimited,
    UpstreamBadRequest,
    UpstreamError,
    UpstreamTransient,
)
from taogate.providers.top import classify_error

BY_CODE: dict[int, type[UpstreamError]] = {
    3: UpstreamTransient,  # upload fail: not a lookup failure we can blame on ids
    4: RateLimited,
    5: RateLimited,
    6: RateLimited,
    7: RateLimited,
    8: RateLimited,
    9: ProtocolMismatch,
    10: UpstreamTransient,
    11: CredentialInvalid,
    12: CredentialInvalid,
    13: CredentialInvalid,
    15: UpstreamTransient,
    21: ProtocolMismatch,
    22: ProtocolMismatch,
    23: ProtocolMismatch,
    24: ProtocolMismatch,
    25: CredentialInvalid,
    26: ProtocolMismatch,
    27: CredentialInvalid,
    28: ProtocolMismatch,
    29: CredentialInvalid,
    30: ProtocolMismatch,
    31: ProtocolMismatch,
    32: ProtocolMismatch,
    33: ProtocolMismatch,
    34: ProtocolMismatch,
    40: UpstreamBadRequest,
    41: UpstreamBadRequest,
    42: ProtocolMismatch,
    43: UpstreamBadRequest,
    44: ProtocolMismatch,
    47: ProtocolMismatch,
    50: UpstreamBadRequest,
    53: ProtocolMismatch,
    999: UpstreamTransient,  # unknown: retried within budget, never a silent success
}


@pytest.mark.parametrize(("code", "cls"), sorted(BY_CODE.items()))
def test_code_without_sub_code(code: int, cls: type[UpstreamError]) -> None:
    error = classify_error({"code": code, "msg": "m"})
    assert type(error) is cls
    assert error.code == code


@pytest.mark.parametrize(
    ("code", "sub_code", "cls"),
    [
        (15, "isp.remote-service-error", UpstreamTransient),
        (15, "isv.item-not-exist", UpstreamBadRequest),
        (15, "-4003", UpstreamBadRequest),
        (10, "isp.unknown-error", UpstreamTransient),
        (50, "isp.top-remote-connection-timeout", UpstreamTransient),
        (41, "isv.invalid-parameter", UpstreamBadRequest),
        (7, "accesscontrol.limited-by-api-access-count", RateLimited),
        (7, "isp.call-limited", RateLimited),
        (15, "isp.call-limited", RateLimited),
        (27, "invalid-sessionkey", CredentialInvalid),
        (15, "9100", RateLimited),
        (11, "isv.permission-ip-whitelist-limit", IpNotWhitelisted),
        (11, "isv.permission-api-package-limit", CredentialInvalid),
        (29, "isv.appkey-not-exists", CredentialInvalid),
    ],
)
def test_sub_code_refines_the_class(code: int, sub_code: str, cls: type[UpstreamError]) -> None:
    assert type(classify_error({"code": code, "sub_code": sub_code})) is cls


@pytest.mark.parametrize(
    ("sub_code", "sub_msg", "retry_after", "scope"),
    [
        (
            "accesscontrol.limited-by-app-access-count",
            "This ban will last for 2 more seconds",
            2,
            "app",
        ),
        (
            "accesscontrol.limited-by-api-access-count",
            "This ban will last for 1 more seconds",
            1,
            "api",
        ),
        (
            "accesscontrol.limited-by-app-api-access-count",
            "This ban will last for 31062 more seconds",
            31062,
            "app_api",
        ),
        (
            "accesscontrol.limited-by-dynamic-access-count",
            "This ban will last for 3 more seconds",
            3,
            "app_api",
        ),
        ("accesscontrol.limited-by-dynamic-access-count", "", 1.0, "app_api"),
    ],
)
def test_rate_limit_ban_and_scope(
    sub_code: str, sub_msg: str, retry_after: float, scope: str
) -> None:
    error = classify_error(
        {"code": 7, "msg": "App Call Limited", "sub_code": sub_code, "sub_msg": sub_msg}
    )
    assert isinstance(error, RateLimited)
    assert error.retry_after == retry_after
    assert error.scope == scope


def test_code_given_as_a_string() -> None:
    assert (
        type(classify_error({"code": "7", "sub_msg": "This ban will last for 5 more seconds"}))
        is RateLimited
    )
    assert type(classify_error({"code": "not-a-number"})) is UpstreamTransient


def test_account_over_its_rate_pauses_the_account_for_a_second() -> None:
    """Code 15 / 9100 is the promoter account's limit, not a transient fault: it is never
    retried at once."""
    error = classify_error(
        {"code": 15, "msg": "Remote service error", "sub_code": "9100", "sub_msg": "too fast"}
    )
    assert isinstance(error, RateLimited)
    assert error.scope == "account"
    assert error.retry_after == 1.0
    assert error.sub_code == "9100"


def test_ip_whitelist_is_not_a_bad_credential() -> None:
    error = classify_error(
        {
            "code": 11,
            "msg": "Insufficient ISV Permissions",
            "sub_code": "isv.permission-ip-whitelist-limit",
            "sub_msg": "ip 127.0.0.2 is not in the whitelist",
        },
        credential="12***78",
    )
    assert type(error) is IpNotWhitelisted
    assert not isinstance(error, CredentialInvalid)
    assert error.code == 11
    assert error.credential == "12***78"
