"""The simulator's platform limits with fake clocks: IP whitelists, method caps over every key,
accounts, key × method caps and daily quotas, their order, and what the stats report of them."""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping
from decimal import Decimal
from pathlib import Path

import pytest

from taogate import ConfigurationError, load_settings
from taogate._settings import Settings, SimSettings
from taogate.providers.top import INFO_GET, UPGRADE_GET
from taogate.testing import FakeClock, SimAccount, SimKey, Simulator
from taogate.testing._sim_limits import DailyQuota, RateWindow
from taogate.testing._sim_state import SimState, TopCall, TopError
from tests.unit.test_sim_state import WALL, clocks, signed

A = SimKey(app_key="11111111", secret="secret-of-a", qps=100)
B = SimKey(app_key="22222222", secret="secret-of-b", qps=100)
TO_MIDNIGHT = 64_000  # WALL is 06:13:20 in Beijing: 17 h 46 min 40 s before midnight
HOME = "127.0.0.2"


def state(
    clock: FakeClock,
    keys: Iterable[SimKey] = (A, B),
    *,
    accounts: Iterable[SimAccount] = (),
    method_qps: Mapping[str, float] | None = None,
    ban_s: float = 10.0,
) -> SimState:
    return SimState(
        keys,
        accounts=accounts,
        method_qps=method_qps,
        ban_s=ban_s,
        method_ban_s=3.0,
        pair_ban_s=2.0,
        max_skew_s=600.0,
        cost_per_call=Decimal("0.01"),
        is_legacy=lambda _: False,
        rng=random.Random(1),
        now=clock(),
    )


def answer(
    sim: SimState,
    clock: FakeClock,
    wall: FakeClock,
    key: SimKey = A,
    *,
    method: str = INFO_GET,
    remote: str | None = HOME,
) -> TopError | TopCall:
    outcome = sim.decide_top(signed(key=key, method=method, wall=wall()), clock(), wall(), remote)
    assert not isinstance(outcome, str)
    return outcome


def refusal(outcome: TopError | TopCall) -> tuple[int, str | None, str | None]:
    assert isinstance(outcome, TopError), outcome
    return outcome.code, outcome.sub_code, outcome.sub_msg


def ban_of(seconds: int) -> str:
    return f"This ban will last for {seconds} more seconds"


API = "accesscontrol.limited-by-api-access-count"
APP = "accesscontrol.limited-by-app-access-count"
APP_API = "accesscontrol.limited-by-app-api-access-count"


# --- the primitives -------------------------------------------------------------------------


def test_a_window_is_checked_and_entered_in_two_steps() -> None:
    window = RateWindow()
    for t in (0.0, 0.1, 0.2):
        assert window.check(t, 2, 5.0) is None  # checked, never entered: always fits
    window.enter(0.3)
    window.enter(0.4)
    assert window.check(0.5, 2, 5.0) == 5.0
    assert window.check(1.0, 2, 5.0) == pytest.approx(4.5)  # banned: the remaining seconds
    assert window.check(5.5, 2, 5.0) is None
    assert window.check(5.5, 2, 0.0) is None  # a ban of 0 s: the refusal alone


def test_the_daily_quota_turns_at_midnight_beijing_time() -> None:
    day = DailyQuota()
    assert day.check(WALL, 2) is None
    day.enter(WALL)
    day.enter(WALL + 1)
    assert day.banned_for(WALL + 1) is None  # spent only once a call is refused
    assert day.check(WALL + 1, 2) == TO_MIDNIGHT - 1
    assert day.banned_for(WALL + 100) == TO_MIDNIGHT - 100
    assert day.today(WALL + TO_MIDNIGHT - 0.5) == 2
    assert day.today(WALL + TO_MIDNIGHT) == 0  # 00:00 in Beijing: a new day
    assert day.banned_for(WALL + TO_MIDNIGHT) is None
    assert day.check(WALL + TO_MIDNIGHT, 2) is None


# --- each limit -----------------------------------------------------------------------------


def test_a_key_is_refused_from_an_address_outside_its_whitelist() -> None:
    clock, wall = clocks()
    fenced = SimKey(app_key="33333333", secret="secret-of-c", whitelist=(HOME,))
    sim = state(clock, [fenced])
    assert refusal(answer(sim, clock, wall, fenced, remote="127.0.0.1")) == (
        11,
        "isv.permission-ip-whitelist-limit",
        "ip 127.0.0.1 is not in the app's whitelist",
    )
    assert refusal(answer(sim, clock, wall, fenced, remote=None))[0] == 11  # unknown source
    assert isinstance(answer(sim, clock, wall, fenced, remote=HOME), TopCall)
    stats = sim.stats.render(clock(), wall())
    row = stats["keys"]["33333333"]
    assert (row["calls"], row["code11"], row["errors"], row["ok"]) == (3, 2, 2, 0)
    assert row["max_calls_in_1s"] == 1  # refused calls never reached the rate limits
    assert stats["ips"]["127.0.0.1"]["code11"] == 1
    assert stats["ips"]["unknown"]["code11"] == 1
    assert stats["totals"]["code11"] == 2


def test_any_address_is_served_without_a_whitelist() -> None:
    clock, wall = clocks()
    sim = state(clock, [A])
    for remote in ("127.0.0.1", "::1", "10.1.2.3", None):
        assert isinstance(answer(sim, clock, wall, remote=remote), TopCall)


def test_a_method_cap_bans_the_method_for_every_key() -> None:
    clock, wall = clocks()
    sim = state(clock, method_qps={INFO_GET: 3})
    for key in (A, B, A):
        assert isinstance(answer(sim, clock, wall, key), TopCall)
    assert refusal(answer(sim, clock, wall, B)) == (7, API, ban_of(3))
    clock.advance(1.2)  # the window is empty again, but the ban runs for 3 s
    assert refusal(answer(sim, clock, wall, A)) == (7, API, ban_of(2))  # ceil(1.8)
    assert isinstance(answer(sim, clock, wall, A, method=UPGRADE_GET), TopCall)  # no cap
    clock.advance(1.8)
    assert isinstance(answer(sim, clock, wall, B), TopCall)
    stats = sim.stats.render(clock(), wall())
    method = stats["methods"][INFO_GET]
    assert (method["calls"], method["ok"], method["code7"]) == (6, 0, 2)  # ok: served (answers)
    assert method["max_calls_in_1s"] == 4
    assert stats["methods"][UPGRADE_GET]["calls"] == 1
    assert (stats["keys"][A.app_key]["code7"], stats["keys"][A.app_key]["code7_api"]) == (1, 1)
    assert stats["keys"][B.app_key]["code7_api"] == 1
    assert stats["keys"][A.app_key]["calls_during_ban"] == 0  # the key itself was never banned


def test_an_account_caps_its_keys_together_without_a_ban() -> None:
    clock, wall = clocks()
    a, b = (SimKey(app_key=k.app_key, secret=k.secret, qps=100, account="shop") for k in (A, B))
    sim = state(clock, [a, b], accounts=[SimAccount("shop", 3)])
    for key in (a, b, a):
        assert isinstance(answer(sim, clock, wall, key), TopCall)
    assert refusal(answer(sim, clock, wall, b)) == (
        15,
        "9100",
        "account call frequency exceeded",
    )
    refused = answer(sim, clock, wall, a)
    assert isinstance(refused, TopError)
    assert refused.msg == "Remote service error"
    clock.advance(1.0)  # no ban: the next second is open, refused calls took no place in it
    for key in (b, a, b):
        assert isinstance(answer(sim, clock, wall, key), TopCall)
    stats = sim.stats.render(clock(), wall())
    assert stats["accounts"]["shop"] == {
        "calls": 8,
        "ok": 0,
        "code15_9100": 2,
        "max_calls_in_1s": 5,
    }
    assert stats["keys"][b.app_key]["code15_9100"] == 1
    assert stats["keys"][b.app_key]["errors"] == 1
    assert stats["totals"]["code15_9100"] == 2


def test_a_key_outside_any_account_is_not_counted_in_one() -> None:
    clock, wall = clocks()
    a = SimKey(app_key=A.app_key, secret=A.secret, account="shop")
    sim = state(clock, [a, B], accounts=[SimAccount("shop", 1)])
    assert isinstance(answer(sim, clock, wall, a), TopCall)
    for _ in range(5):
        assert isinstance(answer(sim, clock, wall, B), TopCall)
    assert sim.stats.render(clock())["accounts"]["shop"]["calls"] == 1


def test_a_key_method_cap_bans_that_pair_only() -> None:
    clock, wall = clocks()
    capped = SimKey(app_key=A.app_key, secret=A.secret, qps=100, method_qps={INFO_GET: 2})
    sim = state(clock, [capped, B])
    for _ in range(2):
        assert isinstance(answer(sim, clock, wall, capped), TopCall)
    assert refusal(answer(sim, clock, wall, capped)) == (7, APP_API, ban_of(2))
    clock.advance(1.5)
    assert refusal(answer(sim, clock, wall, capped)) == (7, APP_API, ban_of(1))  # ceil(0.5)
    assert isinstance(answer(sim, clock, wall, capped, method=UPGRADE_GET), TopCall)
    assert isinstance(answer(sim, clock, wall, B), TopCall)  # another key on the same method
    clock.advance(0.5)
    assert isinstance(answer(sim, clock, wall, capped), TopCall)
    row = sim.stats.render(clock())["keys"][A.app_key]
    assert (row["code7"], row["code7_app_api"], row["code7_api"], row["banned_for_s"]) == (
        2,
        2,
        0,
        0.0,
    )


def test_a_spent_daily_quota_bans_the_key_until_midnight_beijing_time() -> None:
    clock, wall = clocks()
    limited = SimKey(app_key=A.app_key, secret=A.secret, qps=100, daily_quota=3)
    sim = state(clock, [limited, B])
    for _ in range(3):
        assert isinstance(answer(sim, clock, wall, limited), TopCall)
    assert refusal(answer(sim, clock, wall, limited)) == (7, APP, ban_of(TO_MIDNIGHT))
    clock.advance(3600.25)
    assert refusal(answer(sim, clock, wall, limited)) == (7, APP, ban_of(TO_MIDNIGHT - 3600))
    assert isinstance(answer(sim, clock, wall, B), TopCall)  # another key's day is its own
    row = sim.stats.render(clock(), wall())["keys"][A.app_key]
    assert (row["calls_today"], row["code7"], row["calls_during_ban"]) == (3, 2, 1)
    assert row["banned_for_s"] == pytest.approx(TO_MIDNIGHT - 3600.25)
    clock.advance(TO_MIDNIGHT - 3600.25)  # 00:00 in Beijing
    assert sim.stats.render(clock(), wall())["keys"][A.app_key]["calls_today"] == 0
    for _ in range(3):
        assert isinstance(answer(sim, clock, wall, limited), TopCall)
    assert refusal(answer(sim, clock, wall, limited)) == (7, APP, ban_of(86_400))
    assert sim.stats.render(clock(), wall())["totals"]["calls_today"] == 3  # B's was yesterday


def test_a_daily_quota_of_zero_refuses_every_call() -> None:
    clock, wall = clocks()
    none_left = SimKey(app_key=A.app_key, secret=A.secret, daily_quota=0)
    assert refusal(answer(state(clock, [none_left]), clock, wall, none_left))[1] == APP


def test_the_daily_quota_counts_accepted_calls_only() -> None:
    clock, wall = clocks()
    limited = SimKey(app_key=A.app_key, secret=A.secret, qps=2, daily_quota=3)
    sim = state(clock, [limited], ban_s=0.0)
    codes = []
    for _ in range(3):  # 2 accepted, the third refused by the key's window (no ban)
        codes.append(answer(sim, clock, wall, limited))
    clock.advance(1)
    codes.append(answer(sim, clock, wall, limited))  # the third accepted call
    assert [isinstance(c, TopCall) for c in codes] == [True, True, False, True]
    assert refusal(answer(sim, clock, wall, limited))[2] == ban_of(TO_MIDNIGHT - 1)


# --- the order of checks --------------------------------------------------------------------


def test_the_whitelist_is_checked_before_a_method_ban() -> None:
    clock, wall = clocks()
    fenced = SimKey(app_key=A.app_key, secret=A.secret, whitelist=(HOME,))
    sim = state(clock, [fenced, B], method_qps={INFO_GET: 1})
    assert isinstance(answer(sim, clock, wall, B), TopCall)
    assert refusal(answer(sim, clock, wall, B))[1] == API  # the method is banned now
    assert refusal(answer(sim, clock, wall, fenced, remote="127.0.0.3"))[0] == 11
    assert refusal(answer(sim, clock, wall, fenced))[1] == API
    assert sim.stats.render(clock())["methods"][INFO_GET]["calls"] == 3  # the 11 never reached it


def test_a_method_ban_comes_before_the_account_and_takes_no_place_in_it() -> None:
    clock, wall = clocks()
    a = SimKey(app_key=A.app_key, secret=A.secret, account="shop")
    sim = state(clock, [a, B], accounts=[SimAccount("shop", 2)], method_qps={INFO_GET: 1})
    assert isinstance(answer(sim, clock, wall, a), TopCall)
    for _ in range(3):
        assert refusal(answer(sim, clock, wall, a))[1] == API
    clock.advance(3)
    assert isinstance(answer(sim, clock, wall, a, method=UPGRADE_GET), TopCall)
    assert isinstance(answer(sim, clock, wall, a), TopCall)
    shop = sim.stats.render(clock())["accounts"]["shop"]
    assert (shop["calls"], shop["code15_9100"]) == (3, 0)


def test_the_account_comes_before_the_key_and_a_refused_call_enters_neither() -> None:
    clock, wall = clocks()
    a = SimKey(app_key=A.app_key, secret=A.secret, qps=2, account="shop")
    b = SimKey(app_key=B.app_key, secret=B.secret, qps=100, account="shop")
    sim = state(clock, [a, b], accounts=[SimAccount("shop", 3)])
    assert isinstance(answer(sim, clock, wall, a), TopCall)
    assert isinstance(answer(sim, clock, wall, b), TopCall)
    assert isinstance(answer(sim, clock, wall, b), TopCall)
    # a's own window has room for one more, but the account's second is full: 15, not 7,
    # and the call is not in a's window either
    assert refusal(answer(sim, clock, wall, a))[0] == 15
    assert list(sim.keys[A.app_key].window.times) == [clock()]
    clock.advance(1)
    assert isinstance(answer(sim, clock, wall, a), TopCall)
    assert isinstance(answer(sim, clock, wall, a), TopCall)
    # now a's window is full: the key's code 7, and the account's window stays at two
    assert refusal(answer(sim, clock, wall, a))[1] == APP
    assert isinstance(answer(sim, clock, wall, b), TopCall)


def test_the_key_window_comes_before_the_pair_and_the_day() -> None:
    clock, wall = clocks()
    key = SimKey(
        app_key=A.app_key,
        secret=A.secret,
        qps=1,
        method_qps={INFO_GET: 1},
        daily_quota=1,
    )
    sim = state(clock, [key], ban_s=0.0)
    assert isinstance(answer(sim, clock, wall, key), TopCall)
    # over the key's window, the pair's and the day's at once: the key's window answers
    assert refusal(answer(sim, clock, wall, key)) == (7, APP, ban_of(0))
    clock.advance(1)
    # the key's window and the pair's are open again, but the day is spent
    assert refusal(answer(sim, clock, wall, key)) == (7, APP, ban_of(TO_MIDNIGHT - 1))
    row = sim.stats.render(clock(), wall())["keys"][A.app_key]
    assert (row["code7_app_api"], row["calls_today"]) == (0, 1)


def test_the_pair_comes_before_the_day_and_its_refusal_spends_nothing() -> None:
    clock, wall = clocks()
    key = SimKey(app_key=A.app_key, secret=A.secret, method_qps={INFO_GET: 1}, daily_quota=2)
    sim = state(clock, [key])
    assert isinstance(answer(sim, clock, wall, key), TopCall)
    assert refusal(answer(sim, clock, wall, key))[1] == APP_API
    assert isinstance(answer(sim, clock, wall, key, method=UPGRADE_GET), TopCall)
    assert refusal(answer(sim, clock, wall, key, method=UPGRADE_GET))[2] == ban_of(TO_MIDNIGHT)
    assert sim.stats.render(clock(), wall())["keys"][A.app_key]["calls_today"] == 2


# --- stats ------------------------------------------------------------------------------------


def test_peaks_per_account_and_method_are_exact() -> None:
    rng = random.Random(11)
    times = sorted(rng.uniform(0, 10) for _ in range(300))
    clock, wall = clocks()
    a = SimKey(app_key=A.app_key, secret=A.secret, qps=10**6, account="shop")
    b = SimKey(app_key=B.app_key, secret=B.secret, qps=10**6)
    sim = state(clock, [a, b], accounts=[SimAccount("shop", 10**6)])
    start = clock()
    on_a: list[float] = []
    for i, t in enumerate(times):
        clock.advance(start + t - clock())
        key = a if i % 3 else b
        if key is a:
            on_a.append(t)
        answer(sim, clock, wall, key, method=INFO_GET if i % 2 else UPGRADE_GET)

    def brute(seen: list[float]) -> int:
        return max(sum(1 for u in seen if t - 1.0 < u <= t) for t in seen)

    stats = sim.stats.render(clock())
    assert stats["accounts"]["shop"]["max_calls_in_1s"] == brute(on_a)
    info = [t for i, t in enumerate(times) if i % 2]
    assert stats["methods"][INFO_GET]["max_calls_in_1s"] == brute(info)
    assert stats["totals"]["max_calls_in_1s"] == brute(times)


def test_reset_clears_accounts_methods_days_and_sources() -> None:
    clock, wall = clocks()
    a = SimKey(app_key=A.app_key, secret=A.secret, account="shop", daily_quota=1)
    sim = state(clock, [a], accounts=[SimAccount("shop", 5)], method_qps={INFO_GET: 1})
    sim.stats.seen_from("127.0.0.1", clock())
    answer(sim, clock, wall, a)
    answer(sim, clock, wall, a)  # the method is banned
    sim.reset(clock())
    stats = sim.stats.render(clock(), wall())
    assert stats["accounts"]["shop"]["calls"] == 0
    assert stats["methods"][INFO_GET]["calls"] == 0
    assert stats["methods"][INFO_GET]["banned_for_s"] == 0.0
    assert stats["keys"][A.app_key]["calls_today"] == 0
    assert stats["ips"] == {}
    assert isinstance(answer(sim, clock, wall, a), TopCall)  # the day and the ban forgotten


# --- the reseller route -----------------------------------------------------------------------


def test_the_reseller_route_checks_the_whitelist_and_the_day() -> None:
    clock, wall = clocks()
    key = SimKey(app_key=A.app_key, secret=A.secret, whitelist=(HOME,), daily_quota=1)
    sim = state(clock, [key])
    query = {"key": A.app_key, "secret": A.secret, "num_iid": "500000000001"}
    fenced = sim.decide_reseller(query, clock(), wall(), "127.0.0.1")
    assert getattr(fenced, "error_code", None) == "4003"
    assert getattr(sim.decide_reseller(query, clock(), wall(), HOME), "num_iid", None)
    spent = sim.decide_reseller(query, clock(), wall(), HOME)
    assert getattr(spent, "error_code", None) == "4013"
    assert ban_of(TO_MIDNIGHT) in getattr(spent, "reason", "")
    assert "已超量" in getattr(spent, "reason", "")


# --- construction and settings -------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"whitelist": ("localhost",)}, "not an IP address"),
        ({"whitelist": "127.0.0.1"}, "not one string"),
        ({"daily_quota": -1}, "daily_quota"),
        ({"daily_quota": 2.5}, "daily_quota"),
        ({"method_qps": {"taobao.nope": 1}}, "unknown method"),
        ({"method_qps": {INFO_GET: 0}}, "> 0"),
        ({"account": ""}, "account"),
    ],
)
def test_bad_sim_keys_are_refused(fields: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SimKey(app_key="k", secret="s", **fields)  # type: ignore[arg-type]


def test_sim_keys_stay_frozen_and_hashable() -> None:
    caps = {INFO_GET: 5.0}
    key = SimKey(app_key="k", secret="s", method_qps=caps, whitelist=("::0001",))
    caps[INFO_GET] = 1.0  # the key keeps its own copy
    assert key.method_qps == {INFO_GET: 5.0}
    assert key.whitelist == ("::1",)
    with pytest.raises(TypeError):
        key.method_qps[INFO_GET] = 2.0  # type: ignore[index]
    assert hash(key) == hash(SimKey(app_key="k", secret="s", whitelist=("::1",)))
    assert "method_qps={'taobao.tbk.item.info.get': 5.0}" in repr(key)
    assert "'s'" not in repr(key)


def test_accounts_must_exist_and_be_named_once() -> None:
    clock, _ = clocks()
    orphan = SimKey(app_key="k", secret="s", account="nobody")
    with pytest.raises(ValueError, match="unknown account 'nobody'"):
        state(clock, [orphan])
    with pytest.raises(ValueError, match="listed twice"):
        state(clock, [A], accounts=[SimAccount("x", 1), SimAccount("x", 2)])
    with pytest.raises(ValueError, match="qps"):
        SimAccount("x", 0)
    with pytest.raises(ValueError, match="unknown account"):
        Simulator([orphan], port=0)


def test_from_settings_applies_the_per_key_limits() -> None:
    creds = [
        {"app_key": "k1", "secret": "secret-one", "qps": 5},
        {"app_key": "k2", "secret": "secret-two", "qps": 7},
    ]
    sim_section = {
        "method_qps": {INFO_GET: 50},
        "method_ban_s": 4.5,
        "pair_ban_s": 1.5,
        "keys": {"k1": {"whitelist": [HOME], "daily_quota": 1000, "method_qps": {UPGRADE_GET: 2}}},
    }
    sim = Simulator.from_settings(Settings(credentials=creds, sim=sim_section))
    k1, k2 = (sim.state.keys[k].key for k in ("k1", "k2"))
    assert k1 == SimKey(
        app_key="k1",
        secret="secret-one",
        qps=5,
        whitelist=(HOME,),
        daily_quota=1000,
        method_qps={UPGRADE_GET: 2},
    )
    assert k2 == SimKey(app_key="k2", secret="secret-two", qps=7)
    assert sim.state.stats.methods[INFO_GET].qps == 50
    assert (sim.state.method_ban_s, sim.state.pair_ban_s) == (4.5, 1.5)
    with pytest.raises(ConfigurationError, match="unknown method") as info:
        Simulator.from_settings(Settings(credentials=creds, sim={"method_qps": {"x.y": 1}}))
    assert info.value.field == "sim.method_qps"
    bad_key = {"keys": {"k2": {"method_qps": {"x.y": 1}}}}
    with pytest.raises(ConfigurationError, match=r'sim.keys."…\w+": method_qps: unknown'):
        Simulator.from_settings(Settings(credentials=creds, sim=bad_key))


def test_a_method_cap_given_to_the_simulator_replaces_the_settings() -> None:
    clock, wall = clocks()
    sim = Simulator(
        [A],
        settings=SimSettings(method_qps={INFO_GET: 1}),
        method_qps={UPGRADE_GET: 2},
        clock=clock,
        wall_clock=wall,
    )
    assert {m: s.qps for m, s in sim.state.stats.methods.items()} == {UPGRADE_GET: 2}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ('[sim.keys."12345678"]\nwhitelist = ["nowhere"]\n', "sim.keys.12345678.whitelist"),
        ('[sim.keys."12345678"]\ndaily_quota = -1\n', "sim.keys.12345678.daily_quota"),
        ("[sim]\nmethod_qps = {m = 0}\n", "sim.method_qps"),
        ("[sim]\nmethod_ban_s = -1\n", "sim.method_ban_s"),
        ("[sim]\npair_ban_s = -1\n", "sim.pair_ban_s"),
        ('[sim.keys."12345678"]\ncolour = 1\n', "sim.keys.12345678.colour"),
    ],
)
def test_bad_sim_limits_in_a_file_name_their_field(tmp_path: Path, body: str, field: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text('[[credentials]]\napp_key = "12345678"\nsecret = "s"\n' + body)
    with pytest.raises(ConfigurationError) as info:
        load_settings(path)
    assert info.value.field == field


def test_sim_keys_must_name_a_credential(tmp_path: Path) -> None:
    path = tmp_path / "stray.toml"
    path.write_text(
        '[[credentials]]\napp_key = "12345678"\nsecret = "s"\n'
        '[sim.keys."87654321"]\ndaily_quota = 5\n'
    )
    with pytest.raises(ConfigurationError, match=r"\[sim.keys\] names 876…321"):
        load_settings(path)
    path.write_text(
        '[[credentials]]\napp_key = "12345678"\nsecret = "s"\n'
        '[sim]\nmethod_qps = {"taobao.tbk.item.info.get" = 50}\n'
        '[sim.keys."12345678"]\nwhitelist = ["127.0.0.2"]\n'
    )
    settings = load_settings(path)
    assert settings.sim.method_qps == {INFO_GET: 50}
    assert settings.sim.keys["12345678"].whitelist == ("127.0.0.2",)


def test_a_method_ban_fault_bans_every_key_for_its_seconds() -> None:
    clock, wall = clocks()
    sim = state(clock)
    sim.add_fault({"kind": "method_ban", "duration_s": 3}, clock())
    assert refusal(answer(sim, clock, wall, A)) == (7, API, ban_of(3))
    clock.advance(1.5)
    assert refusal(answer(sim, clock, wall, B)) == (7, API, ban_of(2))  # ceil(1.5)
    clock.advance(1.5)
    assert isinstance(answer(sim, clock, wall, A), TopCall)  # over by itself
    stats = sim.stats.render(clock(), wall())
    assert stats["methods"][INFO_GET]["code7"] == 2
    assert stats["keys"][B.app_key]["code7_api"] == 1


def test_from_settings_puts_the_keys_in_their_accounts() -> None:
    settings = Settings(
        accounts=[{"name": "main", "qps": 2}],
        credentials=[
            {"app_key": "k1", "secret": "secret-one", "account": "main"},
            {"app_key": "k2", "secret": "secret-two"},
        ],
    )
    sim = Simulator.from_settings(settings)
    assert sim.state.keys["k1"].key.account == "main"
    assert sim.state.keys["k2"].key.account is None
    assert sim.state.stats.render(0.0, WALL)["accounts"]["main"]["calls"] == 0


def test_a_whitelist_matches_an_address_however_the_peer_spells_it() -> None:
    clock, wall = clocks()
    picky = SimKey(app_key="33333333", secret="secret-of-c", qps=100, whitelist=(HOME,))
    sim = state(clock, (picky,))
    assert isinstance(answer(sim, clock, wall, picky, remote=f"::ffff:{HOME}"), TopCall)
    assert refusal(answer(sim, clock, wall, picky, remote="::1"))[0] == 11
    assert refusal(answer(sim, clock, wall, picky, remote=None))[0] == 11
