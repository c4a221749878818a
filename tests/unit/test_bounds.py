"""Structures kept per request, per call or per secret stay bounded, however many come.

The dispatcher's record of interactive calls is covered in test_dispatch.py
(``test_interactive_record_stays_bounded_without_readers``).
"""

from __future__ import annotations

import io
import logging
import tracemalloc

from prometheus_client import generate_latest

from taogate._breaker import CircuitBreaker, RetryBudget
from taogate._gateway import Gateway
from taogate._logging import MAX_ROTATED_SECRETS, JsonFormatter, RedactSecrets
from taogate._model import Lookup
from taogate._settings import Settings
from taogate.http._edge_cache import MEMO_ITEMS, ItemCaching
from taogate.http._metrics import METHODS, Metrics
from taogate.providers.base import Credential
from taogate.quota import CredentialPool, PoolPolicy
from taogate.testing._fakes import FakeProvider, make_item


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_request_metrics_keep_a_bounded_label_set_whatever_methods_clients_send() -> None:
    metrics = Metrics()
    for i in range(2_000):
        metrics.observe("unmatched", f"X-METHOD-{i}", 405, 0.001)
        metrics.observe("/v1/items/{num_iid}", "GET", 200, 0.001)
    assert len(metrics._children) == 2
    text = generate_latest(metrics.registry).decode()
    assert "X-METHOD" not in text
    assert 'method="other"' in text
    assert 'method="GET"' in text
    assert "GET" in METHODS


def test_log_redaction_keeps_the_configured_and_the_latest_rotated_secrets() -> None:
    configured = "configured-secret-0123456789abcdef"
    redactor = RedactSecrets([configured])
    rotated = [f"rotated-secret-{i:06d}-0123456789abcdef" for i in range(1_000)]
    for secret in rotated:
        redactor.add(secret)
    redactor.add(rotated[-1])  # seen again: no duplicate
    redactor.add(configured)
    assert len(redactor._secrets) == 1 + MAX_ROTATED_SECRETS
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(redactor)
    logger = logging.getLogger("taogate.test.bounds")
    logger.addHandler(handler)
    try:
        logger.warning("leak %s %s %s", configured, rotated[-1], rotated[-MAX_ROTATED_SECRETS])
    finally:
        logger.removeHandler(handler)
    text = stream.getvalue()
    assert "leak" in text
    for secret in (configured, rotated[-1], rotated[-MAX_ROTATED_SECRETS]):
        assert secret not in text


def test_breaker_window_and_retry_budget_buckets_stay_bounded() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(clock=clock)
    budget = RetryBudget(clock=clock, ttl_s=10.0, buckets=10)
    for _ in range(20_000):
        breaker.record(failed=False, duration_s=0.1)
        budget.deposit()
        budget.try_withdraw()
        clock.now += 0.37
    assert len(breaker._outcomes) == breaker.policy.window
    assert len(budget._counts) <= 10


def test_the_pools_send_windows_keep_one_second_of_calls() -> None:
    clock = FakeClock()
    key = Credential(app_key="10000001", secret="bounds-secret-0123456789abcdef0123", qps=10.0)
    pool = CredentialPool([key], PoolPolicy(safety_factor=1.0), clock=clock)
    granted = 0
    while granted < 5_000:
        lease = pool.try_acquire()
        if lease is None:
            clock.now += 0.01
            continue
        pool.on_success(lease)
        granted += 1
    (state,) = pool._states
    assert len(state.key.sent) <= 10
    assert len(state.egress.scope.sent) <= state.egress.egress.max_qps


def test_the_edge_caches_memos_stay_bounded() -> None:
    settings = Settings(credentials=[{"app_key": "10000001", "secret": "x" * 32, "qps": 10.0}])
    seconds = iter(range(10**9))
    caching = ItemCaching(settings, wall_clock=lambda: float(next(seconds)))
    for i in range(MEMO_ITEMS + 3_000):
        caching.item_json(make_item(f"{1000000 + i}"))
    assert len(caching._items) <= MEMO_ITEMS
    for i in range(20_000):
        lookup = Lookup(num_iid="1", item=None, age_s=float(i % 700))
        caching.cache_control(lookup, max_age_s=float(i))
        caching.last_modified(lookup)
    assert len(caching._cache_control) <= 4096
    assert len(caching._dates) <= 4096


def test_the_item_memo_keeps_no_more_items_than_l1_holds() -> None:
    settings = Settings(
        credentials=[{"app_key": "10000001", "secret": "x" * 32, "qps": 10.0}],
        cache={"l1_max_entries": 100},
    )
    caching = ItemCaching(settings)
    for i in range(1_000):
        caching.item_json(make_item(f"{1000000 + i}"))
    assert len(caching._items) == 100


async def test_provenance_keeps_no_more_ids_than_l1_holds() -> None:
    ids = [f"52000{i:05d}" for i in range(400)]
    settings = Settings(
        credentials=[{"app_key": "10000001", "secret": "x" * 32, "qps": 1000.0}],
        cache={"l1_max_entries": 50},
    )
    async with Gateway(settings, provider=FakeProvider.with_ids(ids)) as gw:
        for i in range(0, len(ids), 40):
            await gw.get_many(ids[i : i + 40])
        assert len(gw.dispatcher._sender._provenance) == 50
        assert gw.dispatcher.fetched_by(ids[-1]) is not None
        assert gw.dispatcher.fetched_by(ids[0]) is None


def test_a_memoized_item_json_costs_about_its_length() -> None:
    """orjson's bytes keep a buffer of 4 KiB or more; the memo keeps compact copies."""
    caching = ItemCaching(Settings(credentials=[{"app_key": "1", "secret": "x" * 32}]))
    items = [make_item(f"{1000000 + i}") for i in range(1_000)]
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        for item in items:
            caching.item_json(item)
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    grown = sum(d.size_diff for d in after.compare_to(before, "filename"))
    length = len(caching.item_json(items[0])[0])
    assert grown / len(items) < length + 600  # the bytes, the tag, the tuple, the dict slot
