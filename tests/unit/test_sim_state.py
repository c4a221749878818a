"""The simulator's decisions with a fake clock: checks, windows, bans, faults, stats, answers."""

from __future__ import annotations

import random
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

import orjson
import pytest

from taogate._errors import ConfigurationError
from taogate._settings import Settings, SimSettings
from taogate.providers.top import INFO_GET, UPGRADE_GET, beijing_timestamp, parse_items, sign
from taogate.testing import FakeClock, ItemKind, SimKey, Simulator, items_only
from taogate.testing._sim_faults import parse_fault
from taogate.testing._sim_keys import KeyState
from taogate.testing._sim_limits import PeakWindow
from taogate.testing._sim_state import SimState, TopCall, TopError, parse_timestamp

WALL = 1_700_000_000.0  # 2023-11-14 22:13:20 UTC, 2023-11-15 06:13:20 in Beijing
KEY = SimKey(app_key="12345678", secret="helloworld", qps=3)


def clocks() -> tuple[FakeClock, FakeClock]:
    """A fake clock at 1000 s and a fake wall clock at ``WALL`` that moves with it."""
    clock = FakeClock(1000.0)
    return clock, FakeClock(WALL - 1000.0, base=clock)


def signed(
    ids: str = "500000000001",
    *,
    method: str = INFO_GET,
    key: SimKey = KEY,
    sign_method: str = "hmac-sha256",
    wall: float = WALL,
    **extra: str,
) -> dict[str, str]:
    params = {
        "method": method,
        "app_key": key.app_key,
        "timestamp": beijing_timestamp(wall),
        "v": "2.0",
        "format": "json",
        "sign_method": sign_method,
        ("item_id" if method == UPGRADE_GET else "num_iids"): ids,
        **extra,
    }
    params["sign"] = sign(params, key.secret, sign_method)
    return params


def new_state(
    clock: FakeClock, *, legacy: frozenset[str] = frozenset(), ban_s: float = 10.0
) -> SimState:
    return SimState(
        [KEY],
        ban_s=ban_s,
        max_skew_s=600.0,
        cost_per_call=Decimal("0.01"),
        is_legacy=legacy.__contains__,
        rng=random.Random(1),
        now=clock(),
    )


def admit(key: KeyState, now: float, ban_s: float) -> float | None:
    """The key's window alone: the call enters it if it fits."""
    wait = key.check_window(now, WALL, ban_s)
    if wait is None:
        key.enter(now, WALL, INFO_GET)
    return wait


def code_of(outcome: object) -> int | None:
    return outcome.code if isinstance(outcome, TopError) else None


# --- the window and the ban ---------------------------------------------------------------


def test_qps_calls_pass_the_next_is_refused_and_bans_the_key() -> None:
    key = KeyState(KEY)
    assert [admit(key, t, 10.0) for t in (0.0, 0.1, 0.2)] == [None, None, None]
    assert admit(key, 0.3, 10.0) == 10.0
    assert key.banned_for(0.3) == 10.0
    assert admit(key, 5.3, 10.0) == pytest.approx(5.0)  # during the ban: the remaining seconds
    assert admit(key, 10.29, 10.0) == pytest.approx(0.01)
    assert admit(key, 10.3, 10.0) is None  # the ban is over and the window empty
    assert (key.code7, key.calls_during_ban) == (3, 2)
    assert list(key.window.times) == [10.3]  # refused calls never entered it


def test_the_window_slides_by_exactly_one_second() -> None:
    key = KeyState(SimKey(app_key="k", secret="s", qps=2))
    assert admit(key, 0.0, 0.0) is None
    assert admit(key, 0.5, 0.0) is None
    assert admit(key, 0.9, 0.0) == 0.0  # a ban of zero seconds still refuses this call
    assert admit(key, 1.0, 0.0) is None  # the call at 0.0 has left the window (t-1, t]
    assert admit(key, 1.2, 0.0) == 0.0


def test_fractional_qps_floors_the_calls_per_second() -> None:
    key = KeyState(SimKey(app_key="k", secret="s", qps=2.5))
    assert [admit(key, t, 1.0) is None for t in (0.0, 0.1, 0.2)] == [True, True, False]


def test_max_calls_in_1s_is_exact() -> None:
    rng = random.Random(7)
    times = sorted(rng.uniform(0, 20) for _ in range(400))
    seen = PeakWindow()
    for t in times:
        seen.add(t)
    brute = max(sum(1 for u in times if t - 1.0 < u <= t) for t in times)
    assert seen.peak == brute


# --- the order of checks ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ({"method": ""}, 21),
        ({"method": "taobao.nope"}, 22),
        ({"app_key": ""}, 28),
        ({"app_key": "99999999"}, 29),
        ({"v": ""}, 32),
        ({"v": "1.0"}, 34),
        ({"format": "xml"}, 23),
        ({"timestamp": ""}, 30),
        ({"timestamp": "yesterday"}, 31),
        ({"sign": ""}, 24),
        ({"sign": "0" * 64}, 25),
        ({"sign_method": "sha1"}, 25),
    ],
)
def test_each_check_answers_its_code(change: dict[str, str], code: int) -> None:
    clock, wall = clocks()
    params = {**signed(), **change}
    params = {k: v for k, v in params.items() if v or k == "sign"}
    if not params.get("sign"):
        params.pop("sign", None)
    state = new_state(clock)
    assert code_of(state.decide_top(params, clock(), wall())) == code


def test_errors_are_counted_per_key_or_unattributed() -> None:
    clock, wall = clocks()
    state = new_state(clock)
    state.decide_top({**signed(), "sign": "BAD"}, clock(), wall())
    state.decide_top({**signed(), "app_key": "nobody"}, clock(), wall())
    stats = state.stats.render(clock())
    assert stats["keys"]["12345678"]["errors"] == 1
    assert stats["totals"]["errors"] == 2
    assert stats["totals"]["calls"] == 2


@pytest.mark.parametrize("sign_method", ["md5", "hmac", "hmac-sha256"])
def test_a_signed_call_is_accepted_with_every_sign_method(sign_method: str) -> None:
    clock, wall = clocks()
    outcome = new_state(clock).decide_top(signed(sign_method=sign_method), clock(), wall())
    assert isinstance(outcome, TopCall)
    assert outcome.ids == ["500000000001"]


def test_lower_case_signatures_and_the_md5_default_are_accepted() -> None:
    clock, wall = clocks()
    params = signed(sign_method="md5")
    del params["sign_method"], params["sign"]
    params["sign"] = sign(params, KEY.secret, "md5").lower()
    assert isinstance(new_state(clock).decide_top(params, clock(), wall()), TopCall)


def test_timestamps_are_beijing_time_or_epoch_ms() -> None:
    clock, wall = clocks()
    state = new_state(clock)
    assert parse_timestamp(beijing_timestamp(WALL)) == WALL
    assert parse_timestamp(str(int(WALL * 1000))) == WALL
    assert parse_timestamp("2023-13-01 00:00:00") is None
    utc_text = "2023-11-14 22:13:20"  # the same instant written in UTC: eight hours off
    assert code_of(state.decide_top(signed(timestamp=utc_text), clock(), wall())) == 31
    ms = str(int(WALL * 1000))
    assert isinstance(state.decide_top(signed(timestamp=ms), clock(), wall()), TopCall)
    skewed = signed(wall=WALL - 601)
    assert code_of(state.decide_top(skewed, clock(), wall())) == 31
    assert isinstance(state.decide_top(signed(wall=WALL + 599), clock(), wall()), TopCall)


def test_business_parameters() -> None:
    clock, wall = clocks()
    state = new_state(clock, legacy=frozenset({"600000000000"}))
    ids40 = ",".join(str(500_000_000_000 + i) for i in range(40))
    ids41 = ids40 + ",599999999999"
    ids21 = ",".join(str(500_000_000_000 + i) for i in range(21))
    decide = state.decide_top
    assert code_of(decide(signed(" , "), clock(), wall())) == 40
    assert isinstance(decide(signed(ids40), clock(), wall()), TopCall)
    clock.advance(1)
    refused = decide(signed(ids41), clock(), wall())
    assert isinstance(refused, TopError)
    assert (refused.code, refused.sub_code) == (41, "isv.invalid-parameter")
    assert code_of(decide(signed(ids21, method=UPGRADE_GET), clock(), wall())) == 41
    clock.advance(1)
    old = decide(signed("500000000001,600000000000"), clock(), wall())
    assert isinstance(old, TopError)
    assert (old.code, old.sub_code, old.sub_msg) == (15, "-4003", "请使用升级后的新商品ID")
    call = decide(signed("500000000002, 500000000001,500000000002"), clock(), wall())
    assert isinstance(call, TopCall)
    assert call.ids == ["500000000002", "500000000001"]
    assert not call.simplify


def test_code_7_then_a_ban_with_the_remaining_seconds() -> None:
    clock, wall = clocks()
    state = new_state(clock, ban_s=10.0)
    for _ in range(3):
        assert isinstance(state.decide_top(signed(), clock(), wall()), TopCall)
    limited = state.decide_top(signed(), clock(), wall())
    assert isinstance(limited, TopError)
    assert (limited.code, limited.sub_code) == (7, "accesscontrol.limited-by-app-access-count")
    assert limited.sub_msg == "This ban will last for 10 more seconds"
    clock.advance(2.5)
    during = state.decide_top(signed(), clock(), wall())
    assert isinstance(during, TopError)
    assert during.sub_msg == "This ban will last for 8 more seconds"  # ceil(7.5)
    clock.advance(7.5)
    assert isinstance(state.decide_top(signed(), clock(), wall()), TopCall)
    row = state.stats.render(clock())["keys"]["12345678"]
    assert (row["calls"], row["code7"], row["calls_during_ban"], row["max_calls_in_1s"]) == (
        6,
        2,
        1,
        4,
    )


# --- faults -------------------------------------------------------------------------------


def test_faults_apply_for_their_duration_only() -> None:
    clock, wall = clocks()
    state = new_state(clock)
    state.add_fault({"kind": "revoke", "duration_s": 5, "app_key": "12345678"}, clock())
    assert code_of(state.decide_top(signed(), clock(), wall())) == 29
    clock.advance(5)
    assert isinstance(state.decide_top(signed(), clock(), wall()), TopCall)
    state.add_fault({"kind": "outage", "duration_s": 1}, clock())
    clock.advance(0.5)
    assert state.decide_top(signed(), clock(), wall()) == "outage"
    clock.advance(0.5)
    state.add_fault({"kind": "code15", "duration_s": 1}, clock())
    remote = state.decide_top(signed(), clock(), wall())
    assert isinstance(remote, TopError)
    assert (remote.code, remote.sub_code) == (15, "isp.remote-service-error")
    clock.advance(1)
    state.add_fault({"kind": "malformed", "duration_s": 1}, clock())
    assert state.decide_top(signed(), clock(), wall()) == "malformed"
    state.add_fault({"kind": "slow", "duration_s": 2, "extra_latency_ms": 250}, clock())
    assert state.faults.extra_latency_s(clock()) == 0.25
    assert [f.kind for f in state.faults.active(clock())] == ["malformed", "slow"]
    clock.advance(2)
    assert state.faults.active(clock()) == []
    assert state.faults.extra_latency_s(clock()) == 0.0


def test_a_fault_of_duration_zero_ends_the_running_faults_of_its_kind() -> None:
    clock, wall = clocks()
    state = new_state(clock)
    state.add_fault({"kind": "malformed", "duration_s": 60}, clock())
    state.add_fault({"kind": "slow", "duration_s": 60, "extra_latency_ms": 5}, clock())
    state.add_fault({"kind": "malformed", "duration_s": 0}, clock())
    assert [f.kind for f in state.faults.active(clock())] == ["slow"]
    assert isinstance(state.decide_top(signed(), clock(), wall()), TopCall)


def test_code15_hits_about_its_ratio_of_calls() -> None:
    clock, wall = clocks()
    state = new_state(clock)
    state.keys["12345678"].key = SimKey(app_key="12345678", secret="helloworld", qps=10**6)
    state.add_fault({"kind": "code15", "duration_s": 60, "ratio": 0.25}, clock())
    codes = [code_of(state.decide_top(signed(), clock(), wall())) for _ in range(2000)]
    assert codes.count(15) / 2000 == pytest.approx(0.25, abs=0.04)


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ([], "JSON object"),
        ({"kind": "fire", "duration_s": 1}, "kind"),
        ({"kind": "outage"}, "duration_s is required"),
        ({"kind": "outage", "duration_s": "1"}, "duration_s must be"),
        ({"kind": "outage", "duration_s": -1}, "duration_s must be >= 0"),
        ({"kind": "revoke", "duration_s": 1}, "app_key"),
        ({"kind": "revoke", "duration_s": 1, "app_key": "nobody"}, "app_key"),
        ({"kind": "outage", "duration_s": 1, "app_key": "12345678"}, "revoke only"),
        ({"kind": "slow", "duration_s": 1, "extra_latency_ms": -1}, "extra_latency_ms"),
        ({"kind": "code15", "duration_s": 1, "ratio": 2}, "ratio"),
        ({"kind": "outage", "duration_s": 1, "colour": "red"}, "unknown field"),
        ({"kind": "outage", "duration_s": True}, "duration_s must be"),
    ],
)
def test_bad_fault_descriptions_are_refused(doc: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_fault(doc, 0.0, ["12345678"])


# --- whole answers, no network ------------------------------------------------------------


def make_sim(clock: FakeClock, wall: FakeClock, **settings: Any) -> Simulator:
    cfg = SimSettings(latency_ms=(0, 0), price_changes_per_hour=3600, coupon_ratio=0.6, **settings)
    big = SimKey(app_key="12345678", secret="helloworld", qps=10**6)
    return Simulator([big], settings=cfg, clock=clock, wall_clock=wall, seed=3)


def body(answer: tuple[Any, float]) -> Any:
    response, delay = answer
    assert delay == 0.0
    assert response.status == 200
    return orjson.loads(response.body)


def rows(sim: Simulator, ids: list[str]) -> dict[str, dict[str, Any]]:
    """The truth for ids known to be present."""
    out = {}
    for num_iid, row in sim.truth(ids).items():
        assert row is not None
        out[num_iid] = row
    return out


def present_ids(sim: Simulator, n: int) -> list[str]:
    return [i for i in sim.catalog.ids() if sim.catalog.kind(i) is ItemKind.PRESENT][:n]


def test_api_answers_agree_with_the_truth_as_prices_change() -> None:
    clock, wall = clocks()
    sim = make_sim(clock, wall)
    ids = present_ids(sim, 40)
    for _ in range(3):
        clock.advance(30)
        doc = body(sim.answer_top(signed(",".join(ids), wall=wall())))
        items = items_only(parse_items(orjson.dumps(doc), INFO_GET, ids))
        truth = rows(sim, ids)
        assert set(items) == set(ids)
        for num_iid, item in items.items():
            row = truth[num_iid]
            assert str(item.zk_final_price) == row["zk_final_price"]
            assert str(item.reserve_price) == row["reserve_price"]
            assert str(item.final_price) == row["final_price"]
            assert item.final_price_basis.value == row["final_price_basis"]
        assert any(row["changes"] > 0 for row in truth.values())


def test_upgrade_and_simplify_shapes() -> None:
    clock, wall = clocks()
    sim = make_sim(clock, wall)
    ids = present_ids(sim, 20)
    normal = body(sim.answer_top(signed(",".join(ids), method=UPGRADE_GET)))
    details = normal["tbk_item_info_upgrade_get_response"]["results"]["tbk_item_detail"]
    simple = body(sim.answer_top(signed(",".join(ids), method=UPGRADE_GET, simplify="true")))
    assert isinstance(simple["results"], list)
    assert simple["request_id"]
    truth = rows(sim, ids)
    saw_coupon = False
    for detail, flat in zip(details, simple["results"], strict=True):
        price = detail["price_promotion_info"]
        assert price["final_promotion_price"] == truth[detail["item_id"]]["final_price"]
        path = price["final_promotion_path_list"]["final_promotion_path_map_data"]
        assert flat["price_promotion_info"]["final_promotion_path_list"] == path
        if path:
            saw_coupon = True
            fee = Decimal(path[0]["promotion_fee"])
            assert Decimal(price["zk_final_price"]) - fee == Decimal(price["final_promotion_price"])
    assert saw_coupon
    info = body(sim.answer_top(signed(",".join(ids[:3]), simplify="true")))
    assert [i["num_iid"] for i in info["results"]] == ids[:3]


def test_absent_ids_are_left_out_and_counted() -> None:
    clock, wall = clocks()
    sim = make_sim(clock, wall, absent_ratio=0.5)
    absent = next(i for i in sim.catalog.ids() if sim.catalog.kind(i) is ItemKind.ABSENT)
    present = present_ids(sim, 1)[0]
    doc = body(sim.answer_top(signed(f"{absent},{present},599999999999")))
    items = doc["tbk_item_info_get_response"]["results"]["n_tbk_item"]
    assert [i["input_num_iid"] for i in items] == [present]
    row = sim.stats()["keys"]["12345678"]
    assert (row["ok"], row["items_requested"], row["items_returned"]) == (1, 3, 1)
    assert row["items_per_ok_call"] == 3.0
    assert row["cost"] == "0.01"
    assert sim.truth([absent]) == {absent: None}


def test_reseller_answers() -> None:
    clock, wall = clocks()
    sim = make_sim(clock, wall)
    num_iid = present_ids(sim, 1)[0]
    query: Mapping[str, str] = {"key": "12345678", "secret": "helloworld", "num_iid": num_iid}
    doc = body(sim.answer_reseller({**query, "is_promotion": "1"}))
    truth = rows(sim, [num_iid])[num_iid]
    assert doc["error_code"] == "0000"
    assert Decimal(repr(doc["item"]["price"])) == Decimal(truth["zk_final_price"])
    assert doc["item"]["orginal_price"] == truth["reserve_price"]
    assert doc["item"]["promotion_price"] == truth["final_price"]
    assert "promotion_price" not in body(sim.answer_reseller(query))["item"]
    assert body(sim.answer_reseller({**query, "secret": "x"}))["error_code"] == "4005"
    assert body(sim.answer_reseller({**query, "key": "x"}))["error_code"] == "4005"
    assert body(sim.answer_reseller({**query, "num_iid": ""}))["error_code"] == "4000"
    assert body(sim.answer_reseller({**query, "num_iid": "1"}))["error_code"] == "2000"


def test_reset_clears_everything() -> None:
    clock, wall = clocks()
    sim = make_sim(clock, wall)
    ids = present_ids(sim, 5)
    body(sim.answer_top(signed(",".join(ids))))
    clock.advance(100)
    assert sim.set_fault("slow", 10, extra_latency_ms=100)["extra_latency_ms"] == 100
    assert sim.faults()
    sim.reset()
    assert sim.faults() == []
    assert sim.stats()["totals"]["calls"] == 0
    assert all(row["changes"] == 0 for row in rows(sim, ids).values())
    with pytest.raises(ValueError, match="kind"):
        sim.set_fault("meteor", 1)


def test_from_settings_takes_credentials_and_the_qps_override(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SIM_TEST_SECRET", "s3cret")
    creds = [
        {"app_key": "k1", "secret_env": "SIM_TEST_SECRET", "qps": 5},
        {"app_key": "k2", "secret": "inline", "qps": 7},
    ]
    sim = Simulator.from_settings(Settings(credentials=creds), port=0)
    keys = {k: s.key for k, s in sim.state.keys.items()}
    assert keys["k1"] == SimKey(app_key="k1", secret="s3cret", qps=5)
    assert keys["k2"].qps == 7
    sim = Simulator.from_settings(Settings(credentials=creds, sim={"qps": 2}))
    assert {s.key.qps for s in sim.state.keys.values()} == {2}
    with pytest.raises(ConfigurationError, match="credentials"):
        Simulator.from_settings(Settings())


def test_sim_key_repr_masks_the_secret() -> None:
    assert "helloworld" not in repr(KEY)
    assert "12345678" in repr(KEY)
    with pytest.raises(ValueError, match="qps"):
        SimKey(app_key="k", secret="s", qps=0)
