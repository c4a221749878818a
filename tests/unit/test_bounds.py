"""Structures kept per request, per call or per secret stay bounded, however many come.

The dispatcher's record of interactive calls is covered in test_dispatch.py
(``test_interactive_record_stays_bounded_without_readers``).
"""

from __future__ import annotations

import io
import logging

from prometheus_client import generate_latest

from taogate._breaker import CircuitBreaker, RetryBudget
from taogate._logging import MAX_ROTATED_SECRETS, JsonFormatter, RedactSecrets
from taogate.http._metrics import METHODS, Metrics


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
