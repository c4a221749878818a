"""Degraded mode: settings, the override/schedule logic on a fake wall clock, its effects on a
gateway over the fake provider (no sleeps: the fake clocks move)."""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from taogate import ConfigurationError, Overloaded, Settings, load_settings
from taogate._degrade import (
    DegradeControl,
    DegradeStatus,
    Override,
    Window,
    evaluate,
    format_time,
    parse_time,
)
from taogate._dispatch import Priority
from taogate._errors import DegradeNotShared
from taogate._gateway import Gateway
from taogate._model import Source
from taogate.testing import FakeClock
from taogate.testing._fakes import FakeProvider

T0 = parse_time("2026-11-10T20:00:00+08:00")
IDS = [f"5300000{i:05d}" for i in range(200)]

CONFIG = """
[[credentials]]
app_key = "12345678"
secret = "degrade-test-secret"

[cache]
max_age_s = 600
max_stale_s = 3600
{extra}
"""


def write(tmp_path: Path, extra: str) -> Path:
    path = tmp_path / "taogate.toml"
    path.write_text(CONFIG.format(extra=extra), encoding="utf-8")
    return path


# --- settings ----------------------------------------------------------------------------------


def test_windows_from_toml_offset_datetimes(tmp_path: Path) -> None:
    settings = load_settings(
        write(
            tmp_path,
            """
[degrade]
max_age_s = 3600
reserve_share = 0.25

[[degrade.windows]]
start = 2026-11-11T00:00:00+08:00
end = 2026-11-12T02:00:00+08:00
reason = "双11"
""",
        )
    )
    assert settings.degrade.max_age_s == 3600
    assert settings.degraded_max_age_s == 3600
    assert settings.degrade.reserve_share == 0.25
    (window,) = [Window.from_settings(w) for w in settings.degrade.windows]
    assert window.start == parse_time("2026-11-10T16:00:00Z")
    assert window.end - window.start == 26 * 3600
    assert window.reason == "双11"
    masked = settings.masked()["degrade"]["windows"][0]
    assert masked["start"].startswith("2026-11-11T00:00:00")


def test_default_degraded_max_age_is_all_the_cache_keeps(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, ""))
    assert settings.degrade.max_age_s is None
    assert settings.degraded_max_age_s == 600 + 3600
    assert settings.degrade.windows == []


@pytest.mark.parametrize(
    ("extra", "where", "words"),
    [
        (
            "[[degrade.windows]]\nstart = 2026-11-11T00:00:00\nend = 2026-11-12T00:00:00+08:00",
            "degrade.windows[0].start",
            "UTC offset",
        ),
        (
            "[[degrade.windows]]\nstart = 2026-11-11T00:00:00+08:00\nend = 2026-11-10T16:00:00Z",
            "degrade.windows[0]",
            "must be after start",
        ),
        ("[degrade]\nmax_age_s = 300", "(top level)", "degrade.max_age_s"),
        ("[degrade]\nmax_age_s = 5000", "(top level)", "max_age_s + max_stale_s (4200)"),
        ("[degrade]\nreserve_share = 1.5", "degrade.reserve_share", "less than or equal to 1"),
    ],
)
def test_bad_degrade_settings_name_the_field(
    tmp_path: Path, extra: str, where: str, words: str
) -> None:
    with pytest.raises(ConfigurationError) as err:
        load_settings(write(tmp_path, extra))
    assert str(err.value).split(": ")[1] == where, err.value
    assert words in str(err.value)


def test_windows_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "TAOGATE_DEGRADE__WINDOWS",
        '[{"start": "2026-11-11T00:00:00+08:00", "end": "2026-11-11T06:00:00+08:00"}]',
    )
    (window,) = load_settings(write(tmp_path, "")).degrade.windows
    assert window.end.hour == 6


# --- times -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-11-11T00:00:00+08:00", 1794326400.0),
        ("2026-11-10T16:00:00Z", 1794326400.0),
        ("2026-11-10t16:00:00z", 1794326400.0),
        ("2026-11-10 16:00:00.25Z", 1794326400.25),
        ("2026-11-10T15:00:00-01:00", 1794326400.0),
        ("2016-12-31T23:59:60Z", 1483228799.0),  # a leap second: the second before it
    ],
)
def test_parse_time(text: str, expected: float) -> None:
    assert parse_time(text) == pytest.approx(expected)


def test_parse_time_extremes_do_not_overflow() -> None:
    assert parse_time("0001-01-01T00:00:00+23:59") < 0
    assert parse_time("9999-12-31T23:59:59-23:59") > parse_time("9999-12-31T23:59:59Z")
    assert format_time(parse_time("9999-12-31T23:59:59-23:59")) is not None


@pytest.mark.parametrize(
    "text", ["2026-11-11T00:00:00", "2026-11-11", "tomorrow", "2026-02-30T00:00:00Z", ""]
)
def test_parse_time_refuses(text: str) -> None:
    with pytest.raises(ValueError, match=r"RFC 3339|day is out of range"):
        parse_time(text)


def test_times_are_shown_in_beijing_time() -> None:
    assert format_time(parse_time("2026-11-10T16:00:00Z")) == "2026-11-11T00:00:00+08:00"
    assert format_time(None) is None


# --- the state ---------------------------------------------------------------------------------

SALE = Window(T0 + 3600, T0 + 7200, "双11")


def test_no_override_no_window_is_off_for_good() -> None:
    status, until = evaluate(None, [], T0)
    assert status == DegradeStatus(on=False)
    assert until == math.inf


def test_schedule_turns_on_and_off_at_the_window() -> None:
    status, change = evaluate(None, [SALE], T0)
    assert not status.on
    assert change == SALE.start
    status, change = evaluate(None, [SALE], SALE.start)
    assert status == DegradeStatus(on=True, source="schedule", reason="双11", until=SALE.end)
    assert change == SALE.end
    status, change = evaluate(None, [SALE], SALE.end)
    assert not status.on
    assert change == math.inf


def test_overlapping_and_touching_windows_are_one_stretch() -> None:
    windows = [Window(0, 10, "a"), Window(5, 20, "b"), Window(20, 30, "c"), Window(40, 50)]
    status, change = evaluate(None, windows, 7)
    assert status.on
    assert status.reason == "b"
    assert status.until == 30
    assert change == 30
    status, change = evaluate(None, windows, 35)
    assert not status.on
    assert change == 40


def test_an_override_decides_until_it_ends() -> None:
    on = Override(mode="on", until=T0 + 60, reason="flash sale", by="ops")
    status, change = evaluate(on, [], T0)
    assert status == DegradeStatus(
        on=True, source="manual", reason="flash sale", until=T0 + 60, by="ops"
    )
    assert change == T0 + 60
    assert evaluate(on, [], T0 + 60)[0] == DegradeStatus(on=False)
    # "off" beats the schedule while it holds; then the schedule decides again
    off = Override(mode="off", until=SALE.start + 60)
    assert evaluate(off, [SALE], SALE.start)[0].source == "manual"
    assert not evaluate(off, [SALE], SALE.start)[0].on
    assert evaluate(off, [SALE], SALE.start + 60)[0].source == "schedule"
    forever = Override(mode="on")
    assert evaluate(forever, [], T0)[1] == math.inf


def test_override_json_round_trip_and_malformed_values() -> None:
    override = Override(mode="on", until=T0 + 1.5, reason="r", by="ops", at=T0)
    assert Override.from_json(override.to_json()) == override
    assert Override.from_json(b'{"mode": "off"}') == Override(mode="off")
    for raw in (b"nope", b"[]", b'{"mode": "maybe"}', b'{"mode": "on", "until": "x"}'):
        with pytest.raises(ValueError, match="not"):
            Override.from_json(raw)
    with pytest.raises(ValueError, match="at is not a finite number"):
        Override.from_json(b'{"mode": "on", "at": "x"}')
    assert override.to_dict()["until"] == format_time(T0 + 1.5)


def control(wall: FakeClock, **degrade: Any) -> DegradeControl:
    settings = Settings(
        credentials=[{"app_key": "1", "secret": "x"}],
        degrade={"windows": [], **degrade},
    )
    return DegradeControl(settings, clock=FakeClock(), wall_clock=wall)


def test_control_follows_the_wall_clock() -> None:
    wall = FakeClock(T0)
    windows = [{"start": "2026-11-10T21:00:00+08:00", "end": "2026-11-10T22:00:00+08:00"}]
    c = control(wall, windows=windows)
    assert not c.active
    wall.advance(3600)  # T0 + 3600
    assert c.active
    assert c.status().source == "schedule"
    wall.advance(3600)  # T0 + 7200
    assert not c.active


async def test_set_logs_once_per_change_and_wakes_waiters(
    caplog: pytest.LogCaptureFixture,
) -> None:
    wall = FakeClock(T0)
    c = control(wall)
    caplog.set_level(logging.INFO, logger="taogate.degrade")
    status = await c.set("on", until=T0 + 30, reason="flash sale", by="ops")
    assert status.on
    assert status.until == T0 + 30
    assert c.override is not None
    assert c.override.by == "ops"
    waiter = asyncio.create_task(c.wait_normal())
    await asyncio.sleep(0)
    assert not waiter.done()
    c.apply(c.override, cause="poll")  # the same override again: nothing to tell
    await c.set("auto", by="ops")
    await asyncio.wait_for(waiter, timeout=1.0)
    messages = [r.getMessage() for r in caplog.records]
    assert messages == [
        "degrade override on until 2026-11-10T20:00:30+08:00 by ops",
        "degraded mode on (manual by ops: flash sale; until 2026-11-10T20:00:30+08:00)",
        "degrade override auto by ops",
        "degraded mode off (auto, no window now)",
    ]
    assert c.changes == 2


async def test_an_ended_override_is_dropped() -> None:
    wall = FakeClock(T0)
    c = control(wall)
    c.apply(Override(mode="on", until=T0 - 1), cause="poll")
    assert c.override is None
    assert not c.active


async def test_a_store_that_fails_changes_nothing() -> None:
    class Broken:
        async def write(self, override: Override | None) -> None:
            raise DegradeNotShared("Redis is out of reach")

        def subscribe(self, on_read: Callable[[Override | None, str], object]) -> None:
            """Nothing is ever read."""

    settings = Settings(credentials=[{"app_key": "1", "secret": "x"}])
    c = DegradeControl(settings, clock=FakeClock(), wall_clock=FakeClock(T0), store=Broken())
    with pytest.raises(DegradeNotShared):
        await c.set("on", by="ops")
    assert not c.active
    assert c.override is None


def test_reserve_paces_non_interactive_ids() -> None:
    c = control(FakeClock(T0), reserve_share=0.5)
    # 10 calls/s, 40 ids a call, half kept: 200 non-interactive ids a second
    assert c.hold(100, calls_per_s=10, max_batch=40, now=0.0, deadline=10.0) == 0.0
    assert c.hold(100, calls_per_s=10, max_batch=40, now=0.0, deadline=10.0) == 0.5
    assert c.hold(40, calls_per_s=10, max_batch=40, now=0.25, deadline=10.0) == 0.75
    assert c.held_ids == 140
    with pytest.raises(Overloaded) as err:
        c.hold(40, calls_per_s=10, max_batch=40, now=0.25, deadline=0.5)
    assert err.value.retry_after == pytest.approx(0.95)
    assert c.refused_ids == 40
    assert c.hold(40, calls_per_s=10, max_batch=40, now=5.0, deadline=10.0) == 0.0


def test_a_full_reserve_refuses_every_non_interactive_id() -> None:
    c = control(FakeClock(T0), reserve_share=1.0)
    with pytest.raises(Overloaded) as err:
        c.hold(1, calls_per_s=10, max_batch=40, now=0.0, deadline=10.0)
    assert err.value.retry_after is None


# --- effects on a gateway ----------------------------------------------------------------------


def gw_settings(**degrade: Any) -> Settings:
    return Settings(
        credentials=[
            {"app_key": f"1000000{k}", "secret": f"secret-{k}", "qps": 100} for k in (0, 1)
        ],
        limits={"safety_factor": 1.0, "batch_window_ms": 1.0},
        cache={"max_age_s": 60.0, "max_stale_s": 600.0, "negative_ttl_s": 10.0, "ttl_jitter": 0.0},
        degrade={"max_age_s": 300.0, **degrade},
    )


@pytest.fixture
async def gateway() -> AsyncIterator[Callable[..., Any]]:
    opened: list[Gateway] = []

    def open_gw(provider: FakeProvider, settings: Settings | None = None, **kw: Any) -> Gateway:
        gw = Gateway(settings or gw_settings(), provider=provider, **kw)
        opened.append(gw)
        return gw

    yield open_gw
    for gw in opened:
        await gw.aclose()


async def test_degraded_lookups_take_older_answers_from_the_cache(
    gateway: Callable[..., Gateway],
) -> None:
    provider = FakeProvider.with_ids(IDS)
    clock = FakeClock(base=asyncio.get_running_loop().time)
    async with gateway(provider, clock=clock) as gw:
        await gw.get_many(IDS[:3])
        await gw.get("999999999")  # not found: cached for negative_ttl_s (10 s)
        clock.advance(120.0)  # past max_age_s (60), within the degraded 300
        await gw.degrade.set("on", reason="test")
        one = await gw.get(IDS[0])
        many = await gw.get_many(IDS[1:3])
        assert one.source is Source.L1
        assert not one.stale
        assert one.age_s == pytest.approx(120.0, abs=1.0)  # the true age
        assert all(lk.source is Source.L1 and not lk.stale for lk in many.values())
        assert gw.refreshes == 0  # no refresh-ahead while degraded
        # the caller's own max_age wins
        assert (await gw.get(IDS[1], max_age_s=30.0)).source is Source.UPSTREAM
        # "not found" keeps its own short freshness
        assert (await gw.get("999999999")).source is Source.UPSTREAM
        clock.advance(200.0)  # 320 s old: past the degraded max_age too
        assert (await gw.get(IDS[2])).source is Source.UPSTREAM
        calls_while_degraded = len(provider.calls)
        await gw.degrade.set("auto")
        clock.advance(61.0)
        assert (await gw.get(IDS[1])).source is Source.UPSTREAM  # normal again
        snap = gw.snapshot()
    assert provider.ids_fetched[:4] == [*IDS[:3], "999999999"]
    assert calls_while_degraded == 2 + 3  # the explicit max_age, "not found", the 320 s one
    assert snap["degraded"] == {"on": False, "source": None, "reason": None, "until": None}
    assert snap["degrade"]["changes"] == 2


async def test_degraded_stops_refresh_ahead(gateway: Callable[..., Gateway]) -> None:
    provider = FakeProvider.with_ids(IDS)
    clock = FakeClock(base=asyncio.get_running_loop().time)
    async with gateway(provider, clock=clock) as gw:
        await gw.get(IDS[0])
        await gw.degrade.set("on")
        clock.advance(55.0)  # in the last 20 % of its freshness
        await gw.get(IDS[0])
        await gw.get_many([IDS[0]])
        assert gw.refreshes == 0
        await gw.degrade.set("off")  # off by hand: refresh-ahead is back
        await gw.get(IDS[0])
        await gw.dispatcher.wait_idle()
        assert gw.refreshes == 1


async def test_degraded_holds_non_interactive_lookups_to_their_share(
    gateway: Callable[..., Gateway],
) -> None:
    provider = FakeProvider.with_ids(IDS)
    settings = gw_settings(reserve_share=1.0)
    async with gateway(provider, settings) as gw:
        await gw.degrade.set("on")
        bulk = await gw.get_many(IDS[:5], priority=Priority.BULK)
        assert all(isinstance(lk.error, Overloaded) for lk in bulk.values())
        interactive = await gw.get_many(IDS[:5])
        assert all(lk.error is None for lk in interactive.values())
        assert gw.degrade.refused_ids == 5
    assert provider.ids_fetched == IDS[:5]


async def test_degraded_paces_non_interactive_lookups(gateway: Callable[..., Gateway]) -> None:
    provider = FakeProvider.with_ids(IDS)
    # 2 keys × 100 calls/s × 40 ids, 90 % kept: 800 bulk ids a second
    async with gateway(provider, gw_settings(reserve_share=0.9)) as gw:
        await gw.degrade.set("on")
        await gw.get_many(IDS[:80], priority=Priority.BULK)  # admitted at once
        loop = asyncio.get_running_loop()
        started = loop.time()
        second = await gw.get_many(IDS[80:120], priority=Priority.BULK)  # waits 0.1 s
        waited = loop.time() - started
    assert all(lk.error is None for lk in second.values())
    assert waited >= 0.09
    assert gw.degrade.held_ids == 40
