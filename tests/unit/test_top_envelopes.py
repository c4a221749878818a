"""Envelope fixtures for every answer shape and every error class."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from taogate import (
    CredentialInvalid,
    FinalPriceBasis,
    ProtocolMismatch,
    RateLimited,
    UpstreamBadRequest,
    UpstreamError,
    UpstreamTransient,
)
from taogate.providers.top import INFO_GET, UPGRADE_GET, parse_items, response_key

FIXTURES = Path(__file__).parent.parent / "fixtures" / "top"


def load(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def test_response_key() -> None:
    assert response_key("taobao.tbk.item.info.get") == "tbk_item_info_get_response"
    assert response_key("taobao.time.get") == "time_get_response"
    assert (
        response_key("alibaba.aliqin.fc.sms.num.send") == "alibaba_aliqin_fc_sms_num_send_response"
    )


def test_info_get_normal_envelope() -> None:
    items = parse_items(load("info_get_normal.json"), INFO_GET, ["520000000001", "520000000002"])
    first = items["520000000001"]
    assert first.num_iid == "520000000001"  # a JSON number upstream, a string here
    assert first.title == "春季新款长裤"
    assert first.shop == "某某旗舰店"
    assert first.reserve_price == Decimal("102.00")
    assert first.zk_final_price == Decimal("78.9")
    # coupon 10 off from 59: 78.9 meets the threshold
    assert first.final_price == Decimal("68.9")
    assert first.final_price_basis is FinalPriceBasis.COUPON
    assert first.seller_id == "2200000001"
    assert first.volume == 1503
    second = items["520000000002"]
    # a 20-off coupon from 99 does not apply to a 39.00 price
    assert second.final_price == Decimal("39.00")
    assert second.final_price_basis is FinalPriceBasis.DISCOUNT
    assert second.volume == 12


def test_info_get_simplify_envelope() -> None:
    items = parse_items(load("info_get_simplify.json"), INFO_GET, ["520000000001"])
    assert items["520000000001"].zk_final_price == Decimal("78.90")
    assert items["520000000001"].final_price_basis is FinalPriceBasis.DISCOUNT


def test_absent_ids_are_left_out() -> None:
    items = parse_items(load("info_get_normal.json"), INFO_GET, ["520000000001", "999"])
    assert set(items) == {"520000000001"}
    assert parse_items(load("info_get_empty.json"), INFO_GET, ["1", "2"]) == {}


def test_unrequested_ids_in_an_answer_are_ignored() -> None:
    assert set(parse_items(load("info_get_normal.json"), INFO_GET, ["520000000002"])) == {
        "520000000002"
    }


def test_input_num_iid_maps_a_new_id_back_to_the_requested_one() -> None:
    items = parse_items(load("info_get_new_id.json"), INFO_GET, ["520000000003"])
    assert items["520000000003"].num_iid == "Xa9bQ3kT"


@pytest.mark.parametrize("name", ["upgrade_get_normal.json", "upgrade_get_simplify.json"])
def test_upgrade_envelopes(name: str) -> None:
    item = parse_items(load(name), UPGRADE_GET, ["520000000001"])["520000000001"]
    assert item.shop == "某某旗舰店"
    assert item.final_price == Decimal("68.90")
    assert item.final_price_basis is FinalPriceBasis.FINAL_PROMOTION_PRICE
    assert item.reserve_price == Decimal("102.00")


@pytest.mark.parametrize(
    ("name", "cls"),
    [
        ("error_rate_limited.json", RateLimited),
        ("error_invalid_signature.json", CredentialInvalid),
        ("error_invalid_app_key.json", CredentialInvalid),
        ("error_invalid_arguments.json", UpstreamBadRequest),
        ("error_old_item_id.json", UpstreamBadRequest),
        ("error_remote_service.json", UpstreamTransient),
        ("error_service_unavailable.json", UpstreamTransient),
        ("error_invalid_timestamp.json", ProtocolMismatch),
    ],
)
def test_error_envelopes_raise_their_class(name: str, cls: type[UpstreamError]) -> None:
    with pytest.raises(cls) as info:
        parse_items(load(name), INFO_GET, ["1", "2"], credential="123…678")
    assert type(info.value) is cls
    assert info.value.credential == "123…678"
    assert info.value.request_id is not None


def test_rate_limit_carries_the_ban_seconds_and_scope() -> None:
    with pytest.raises(RateLimited) as info:
        parse_items(load("error_rate_limited.json"), INFO_GET, ["1"])
    assert info.value.retry_after == 31062
    assert info.value.scope == "app"
    assert info.value.code == 7
    assert "retry_after=31062s" in str(info.value)


def test_bad_request_names_the_ids_of_the_call() -> None:
    with pytest.raises(UpstreamBadRequest) as info:
        parse_items(load("error_old_item_id.json"), INFO_GET, ["1", "2"])
    assert info.value.ids == ("1", "2")


@pytest.mark.parametrize(
    "body",
    [
        load("malformed_truncated.txt"),
        b"<html>502 Bad Gateway</html>",
        b"[1, 2]",
        b'{"error_response": "oops"}',
        b'{"something_else": {}}',
        b'{"tbk_item_info_get_response": {"results": {"n_tbk_item": [{"title": "no id"}]}}}',
        b'{"tbk_item_info_get_response": {"results": {"n_tbk_item": "x"}, "request_id": "r"}}',
    ],
)
def test_malformed_bodies_are_transient(body: bytes) -> None:
    with pytest.raises(UpstreamTransient, match="malformed"):
        parse_items(body, INFO_GET, ["1"])


def test_lone_element_in_xml_mirrored_json_is_a_list_of_one() -> None:
    body = (
        b'{"tbk_item_info_get_response": {"results": {"n_tbk_item": '
        b'{"num_iid": "7", "zk_final_price": "1.50"}}, "request_id": "r"}}'
    )
    assert parse_items(body, INFO_GET, ["7"])["7"].zk_final_price == Decimal("1.50")
