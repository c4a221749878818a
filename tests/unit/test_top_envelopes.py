"""Envelope fixtures for every answer shape and every error class."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import orjson
import pytest

from taogate import (
    CredentialInvalid,
    FinalPriceBasis,
    Item,
    ItemUnreadable,
    ProtocolMismatch,
    RateLimited,
    UpstreamBadRequest,
    UpstreamError,
    UpstreamTransient,
)
from taogate._masking import Redactor
from taogate.providers.top import INFO_GET, UPGRADE_GET, parse_items, response_key
from taogate.testing import items_only

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
    items = items_only(
        parse_items(load("info_get_normal.json"), INFO_GET, ["520000000001", "520000000002"])
    )
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
    items = items_only(parse_items(load("info_get_simplify.json"), INFO_GET, ["520000000001"]))
    assert items["520000000001"].zk_final_price == Decimal("78.90")
    assert items["520000000001"].final_price_basis is FinalPriceBasis.DISCOUNT


def test_absent_ids_are_left_out() -> None:
    items = items_only(parse_items(load("info_get_normal.json"), INFO_GET, ["520000000001", "999"]))
    assert set(items) == {"520000000001"}
    assert parse_items(load("info_get_empty.json"), INFO_GET, ["1", "2"]) == {}


def test_unrequested_ids_in_an_answer_are_ignored() -> None:
    assert set(parse_items(load("info_get_normal.json"), INFO_GET, ["520000000002"])) == {
        "520000000002"
    }


def test_input_num_iid_maps_a_new_id_back_to_the_requested_one() -> None:
    items = items_only(parse_items(load("info_get_new_id.json"), INFO_GET, ["520000000003"]))
    assert items["520000000003"].num_iid == "Xa9bQ3kT"


@pytest.mark.parametrize("name", ["upgrade_get_normal.json", "upgrade_get_simplify.json"])
def test_upgrade_envelopes(name: str) -> None:
    item = items_only(parse_items(load(name), UPGRADE_GET, ["520000000001"]))["520000000001"]
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
    assert items_only(parse_items(body, INFO_GET, ["7"]))["7"].zk_final_price == Decimal("1.50")


# --- hostile answers: each item is read on its own ------------------------------------------


def info_body(*items: dict[str, object]) -> bytes:
    inner = {"results": {"n_tbk_item": list(items)}, "request_id": "r-1"}
    return orjson.dumps({"tbk_item_info_get_response": inner})


def good(num_iid: str, **fields: object) -> dict[str, object]:
    return {"num_iid": num_iid, "title": "t", "zk_final_price": "10.00", **fields}


@pytest.mark.parametrize(
    "fields",
    [
        {"zk_final_price": "1e999999999", "coupon_amount": "1", "coupon_start_fee": "0"},
        {"zk_final_price": "10", "coupon_amount": "1e999999999"},
        {"zk_final_price": "abc"},
        {"zk_final_price": "NaN"},
        {"zk_final_price": "-5.00"},
        {"zk_final_price": "1000000000.01"},
        {"reserve_price": "9" * 100},
        {"zk_final_price": {"amount": 1}},
        {"title": {"zh": "x"}},
    ],
)
def test_an_unreadable_item_fails_its_own_id_only(fields: dict[str, object]) -> None:
    ids = [f"52000000000{i}" for i in range(5)]
    bad = ids[2]
    body = info_body(*(good(i, **(fields if i == bad else {})) for i in ids))
    answer = parse_items(body, INFO_GET, ids, credential="123…678")
    assert set(answer) == set(ids)
    error = answer[bad]
    assert isinstance(error, ItemUnreadable)
    assert error.num_iid == bad
    assert bad in str(error)
    assert error.credential == "123…678"
    assert error.request_id == "r-1"
    for num_iid in ids:
        if num_iid != bad:
            item = answer[num_iid]
            assert isinstance(item, Item)
            assert item.zk_final_price == Decimal("10.00")


def test_an_upgrade_item_with_a_bad_price_fails_alone() -> None:
    def detail(num_iid: str, price: str) -> dict[str, object]:
        return {
            "item_id": num_iid,
            "item_basic_info": {"title": "t"},
            "price_promotion_info": {"zk_final_price": "10", "final_promotion_price": price},
        }

    doc = {
        "tbk_item_info_upgrade_get_response": {
            "results": {"tbk_item_detail": [detail("1", "8.5"), detail("2", "1e999999999")]},
            "request_id": "r",
        }
    }
    answer = parse_items(orjson.dumps(doc), UPGRADE_GET, ["1", "2"])
    assert isinstance(answer["1"], Item)
    assert answer["1"].final_price == Decimal("8.5")
    assert isinstance(answer["2"], ItemUnreadable)
    assert "final_promotion_price" in answer["2"].reason


def test_input_num_iid_maps_a_new_id_back_when_that_id_was_not_asked() -> None:
    body = info_body(good("Xa9bQ3kT", input_num_iid="520000000003"))
    answer = parse_items(body, INFO_GET, ["520000000003"])
    item = answer["520000000003"]
    assert isinstance(item, Item)
    assert item.num_iid == "Xa9bQ3kT"


def test_an_item_is_stored_under_its_own_id_when_that_id_was_asked_too() -> None:
    # B's item claims (through input_num_iid) to answer A; both were asked: it is B's only,
    # and A, named in the answer without an item of its own, is not "not found"
    body = info_body(good("B", input_num_iid="A", zk_final_price="3.00"))
    answer = parse_items(body, INFO_GET, ["A", "B"])
    assert isinstance(answer["B"], Item)
    assert answer["B"].zk_final_price == Decimal("3.00")
    assert isinstance(answer["A"], ItemUnreadable)


def test_an_own_id_wins_over_another_items_input_num_iid() -> None:
    body = info_body(
        good("C", input_num_iid="A", zk_final_price="1.00"),  # a new id for A? A answered too
        good("A", zk_final_price="2.00"),
    )
    answer = parse_items(body, INFO_GET, ["A"])
    assert isinstance(answer["A"], Item)
    assert answer["A"].num_iid == "A"
    assert answer["A"].zk_final_price == Decimal("2.00")


def test_two_different_items_for_one_id_are_not_served() -> None:
    body = info_body(good("A", zk_final_price="1.00"), good("A", zk_final_price="2.00"))
    answer = parse_items(body, INFO_GET, ["A", "B"])
    assert isinstance(answer["A"], ItemUnreadable)
    assert "B" not in answer  # really absent: not found
    same = parse_items(info_body(good("A"), good("A")), INFO_GET, ["A"])
    assert isinstance(same["A"], Item)  # a repeated identical item is harmless


def test_two_new_ids_claiming_one_asked_id_are_not_served() -> None:
    body = info_body(good("X", input_num_iid="A"), good("Y", input_num_iid="A"))
    assert isinstance(parse_items(body, INFO_GET, ["A"])["A"], ItemUnreadable)


@pytest.mark.parametrize("entry", [{"title": "no id"}, "x", 7, {"num_iid": {"a": 1}}])
def test_an_item_that_names_no_id_keeps_the_unanswered_ids_from_not_found(
    entry: object,
) -> None:
    doc = {
        "tbk_item_info_get_response": {
            "results": {"n_tbk_item": [good("A"), entry]},
            "request_id": "r",
        }
    }
    answer = parse_items(orjson.dumps(doc), INFO_GET, ["A", "B"])
    assert isinstance(answer["A"], Item)
    assert isinstance(answer["B"], ItemUnreadable)


def test_an_item_nobody_asked_for_is_ignored() -> None:
    answer = parse_items(info_body(good("A"), good("Z")), INFO_GET, ["A", "B"])
    assert set(answer) == {"A"}


def test_upstream_error_text_is_redacted_and_cut_short() -> None:
    secret = "top-secret-value-0123456789abcdefXYZ"
    doc = {
        "error_response": {
            "code": 41,
            "msg": "Invalid Arguments",
            "sub_code": "isv.invalid-parameter",
            "sub_msg": f"echo app_secret={secret} " + "x" * 5000,
            "request_id": "r" * 5000,
        }
    }
    with pytest.raises(UpstreamBadRequest) as info:
        parse_items(orjson.dumps(doc), INFO_GET, ["1"], redact=Redactor([secret]))
    text = str(info.value)
    assert secret not in text
    assert len(info.value.message) <= 200
    assert info.value.request_id is not None
    assert len(info.value.request_id) <= 200


@pytest.mark.parametrize("code", [1e308, "7" * 5000, {"a": 1}, [7], True, None])
def test_a_hostile_error_code_is_classified_without_crashing(code: object) -> None:
    body = orjson.dumps({"error_response": {"code": code, "msg": "m", "sub_code": "s" * 5000}})
    with pytest.raises(UpstreamTransient) as info:
        parse_items(body, INFO_GET, ["1"])
    assert len(str(info.value)) < 700  # message, code and sub-code cut to 200 each
