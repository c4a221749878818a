"""Client tokens: digests compared with every token, failed attempts limited per source."""

from __future__ import annotations

import hmac

import pytest

from taogate._settings import ClientSettings
from taogate.http._auth import Clients
from taogate.http._auth_failures import FailedAuthLimit, source_key
from taogate.http._problems import Problem
from taogate.testing import FakeClock

TOKENS = [f"client-token-{i:02d}-abcdefghijklmnopqrstuvwxyz" for i in range(5)]


def clients(clock: FakeClock, per_minute: int = 20) -> Clients:
    configured = [ClientSettings(name=f"c{i}", token=t) for i, t in enumerate(TOKENS)]
    return Clients(configured, clock=clock, failures_per_minute=per_minute)


def test_each_token_names_its_client() -> None:
    known = clients(FakeClock(1000.0))
    for i, token in enumerate(TOKENS):
        assert known.authenticate(f"Bearer {token}", "10.0.0.1").name == f"c{i}"
    for wrong in ("Bearer " + TOKENS[0][:-1], "Bearer " + TOKENS[0] + "x", "Basic abc", ""):
        with pytest.raises(Problem) as caught:
            known.authenticate(wrong or None, "10.0.0.2")
        assert caught.value.status == 401


def test_every_configured_digest_is_compared(monkeypatch: pytest.MonkeyPatch) -> None:
    """No early exit: a match on the first token costs as many comparisons as no match."""
    known = clients(FakeClock(1000.0))
    compared: list[bytes] = []
    real = hmac.compare_digest

    def counting(a: bytes, b: bytes) -> bool:
        compared.append(b)
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", counting)
    known.authenticate(f"Bearer {TOKENS[0]}", "10.0.0.1")
    assert len(compared) == len(TOKENS)
    compared.clear()
    with pytest.raises(Problem):
        known.authenticate("Bearer " + "z" * 40, "10.0.0.1")
    assert len(compared) == len(TOKENS)
    assert all(len(d) == 32 for d in compared)  # SHA-256 digests, never the tokens


def test_failed_attempts_past_the_limit_are_answered_429_until_the_rate_allows() -> None:
    clock = FakeClock(1000.0)
    known = clients(clock, per_minute=3)
    for _ in range(3):
        with pytest.raises(Problem) as caught:
            known.authenticate("Bearer wrong", "192.0.2.7")
        assert caught.value.status == 401
    with pytest.raises(Problem) as caught:
        known.authenticate(None, "192.0.2.7")
    assert caught.value.slug == "too-many-auth-failures"
    retry = int(caught.value.headers["Retry-After"])
    assert retry == 20  # one attempt every 60/3 s
    # another address has its own limit; the limited address's valid token still passes
    with pytest.raises(Problem) as caught:
        known.authenticate("Bearer wrong", "192.0.2.8")
    assert caught.value.status == 401
    assert known.authenticate(f"Bearer {TOKENS[1]}", "192.0.2.7").name == "c1"
    clock.advance(retry - 1)
    with pytest.raises(Problem) as caught:
        known.authenticate("Bearer wrong", "192.0.2.7")
    assert caught.value.status == 429
    clock.advance(1)
    with pytest.raises(Problem) as caught:
        known.authenticate("Bearer wrong", "192.0.2.7")
    assert caught.value.status == 401
    with pytest.raises(Problem) as caught:
        known.authenticate("Bearer wrong", "192.0.2.7")
    assert caught.value.status == 429


def test_the_table_of_sources_is_bounded() -> None:
    clock = FakeClock(1000.0)
    limit = FailedAuthLimit(1, clock=clock, max_sources=8)
    for i in range(1000):
        limit.record(f"198.51.{i // 256}.{i % 256}")
    assert len(limit) == 8
    # the most recent sources are the ones kept
    with pytest.raises(Problem):
        limit.record("198.51.3.231")


def test_ipv6_sources_count_per_64() -> None:
    assert source_key("2001:db8:1:2:aaaa::1") == source_key("2001:db8:1:2:bbbb::9")
    assert source_key("2001:db8:1:2::1") != source_key("2001:db8:1:3::1")
    assert source_key("::ffff:192.0.2.1") == "192.0.2.1"
    assert source_key("192.0.2.1") == "192.0.2.1"
    assert source_key(None) == "unknown"
    limit = FailedAuthLimit(1, clock=FakeClock(1000.0))
    limit.record("2001:db8:1:2::1")
    with pytest.raises(Problem):
        limit.record("2001:db8:1:2::ffff")


def test_an_open_service_has_nothing_to_fail() -> None:
    open_ = Clients([], clock=FakeClock(1000.0), failures_per_minute=1)
    for _ in range(3):
        assert open_.authenticate(None, "192.0.2.1").name == "anonymous"
