"""Prometheus metrics of a gateway, named ``taogate_*``, with bounded labels.

:class:`GatewayCollector` reads :meth:`Gateway.stats` at scrape time, so lookups pay nothing
for it. Register it in a registry of your own; importing taogate registers nothing::

    from prometheus_client import CollectorRegistry, generate_latest
    from taogate.metrics import GatewayCollector

    registry = CollectorRegistry()
    registry.register(GatewayCollector(gateway))
    text = generate_latest(registry)  # on the gateway's event loop, as a handler would

The HTTP service (``taogate serve``) registers the same collector beside its own request
metrics. Credential labels are masked app keys, never secrets. Money is an exact decimal in
``taogate keys``; here, as Prometheus needs, a float.
"""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from typing import TYPE_CHECKING

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from taogate._breaker import BreakerState
from taogate._dispatch import WAIT_BUCKETS, Priority
from taogate.quota import CredentialStatus

if TYPE_CHECKING:
    from taogate._gateway import Gateway
    from taogate._gateway_stats import GatewayStats

__all__ = ["GatewayCollector"]

#: where a malformed Redis value can be found (taogate.replicas.MALFORMED_SOURCES; not
#: imported from there, which would load redis-py for a gateway without it)
MALFORMED_SOURCES = ("degrade", "heartbeat", "invalidation", "jobs", "limits")
#: upper bounds of the ids-per-call histogram's buckets
BATCH_BUCKETS = (1, 5, 10, 20, 30, 39, 40)
_BREAKER_VALUE = {BreakerState.CLOSED: 0, BreakerState.HALF_OPEN: 1, BreakerState.OPEN: 2}


def _f(value: object) -> float:
    return float(Decimal(str(value))) if value is not None else 0.0


class GatewayCollector(Collector):
    """Every ``taogate_*`` metric of ``gateway`` but the HTTP service's own (requests, their
    latency, shed requests); nothing before the gateway starts or after it stops."""

    def __init__(self, gateway: Gateway) -> None:
        self._gw = gateway

    def collect(self) -> Iterator[Metric]:
        gw = self._gw
        if not gw.started:  # scraped before start or after stop: nothing to tell
            return
        stats = gw.stats()
        yield from _lookups(stats)
        yield from _replicas(stats)
        yield from _degrade(stats)
        yield from _cache(stats)
        yield from _upstream(stats)
        yield from _queue(stats)
        yield from _breaker(stats)
        yield from _pool(stats)
        yield from _secret_files(stats)


def _lookups(stats: GatewayStats) -> Iterator[Metric]:
    lookups = CounterMetricFamily(
        "taogate_lookups", "Item lookups answered, by outcome.", labels=("outcome",)
    )
    hits = stats.l1_hits
    lookups.add_metric(("l1_hit",), hits)
    lookups.add_metric(("miss",), stats.lookups - hits)
    lookups.add_metric(("stale",), stats.stale_served)
    yield lookups
    cache_hits = CounterMetricFamily(
        "taogate_cache_hits", "Fresh answers from a cache tier.", labels=("tier",)
    )
    cache_hits.add_metric(("l1",), hits)
    cache_hits.add_metric(("l2",), stats.cache.l2_hits)
    yield cache_hits


def _replicas(stats: GatewayStats) -> Iterator[Metric]:
    redis = stats.replicas
    mode = GaugeMetricFamily(
        "taogate_mode",
        "1 for the replica's mode: single (no Redis), shared, local.",
        labels=("mode",),
    )
    current = "single" if redis is None else redis.mode
    for m in ("single", "shared", "local"):
        mode.add_metric((m,), 1.0 if m == current else 0.0)
    yield mode
    yield GaugeMetricFamily(
        "taogate_replicas_live",
        "Live replicas as the heartbeat last counted them.",
        value=1 if redis is None else redis.live_replicas,
    )
    yield CounterMetricFamily(
        "taogate_mode_changes",
        "Switches between shared and local mode.",
        value=0 if redis is None else redis.mode_changes,
    )
    yield CounterMetricFamily(
        "taogate_l2_corrupt",
        "L2 entries that could not be decoded: each was a miss and was deleted.",
        value=0 if redis is None else stats.cache.l2_corrupt,
    )
    malformed = CounterMetricFamily(
        "taogate_redis_malformed",
        "Other malformed values read from Redis (ignored), by where they were found.",
        labels=("source",),
    )
    for name in MALFORMED_SOURCES:
        malformed.add_metric((name,), 0 if redis is None else redis.malformed[name])
    yield malformed


def _degrade(stats: GatewayStats) -> Iterator[Metric]:
    degrade = stats.degrade
    status = degrade.status
    yield GaugeMetricFamily(
        "taogate_degraded", "1 while degraded mode is on.", value=1.0 if status.on else 0.0
    )
    source = GaugeMetricFamily(
        "taogate_degraded_source",
        "1 for what decides degraded mode now: manual (an override), schedule, none.",
        labels=("source",),
    )
    for name in ("manual", "schedule", "none"):
        source.add_metric((name,), 1.0 if (status.source or "none") == name else 0.0)
    yield source
    yield CounterMetricFamily(
        "taogate_degraded_changes",
        "Changes of degraded mode this replica saw.",
        value=degrade.changes,
    )
    reserve = CounterMetricFamily(
        "taogate_degraded_reserve_ids",
        "Non-interactive ids the degraded-mode reserve held back (waited) or refused.",
        labels=("outcome",),
    )
    reserve.add_metric(("held",), degrade.held_ids)
    reserve.add_metric(("refused",), degrade.refused_ids)
    yield reserve


def _cache(stats: GatewayStats) -> Iterator[Metric]:
    cache = stats.cache
    yield CounterMetricFamily(
        "taogate_stale_answers",
        "Answers served stale because the upstream could not answer.",
        value=stats.stale_served,
    )
    yield CounterMetricFamily(
        "taogate_refresh_ahead", "Ids refreshed ahead of expiry.", value=stats.refresh_ahead
    )
    yield GaugeMetricFamily("taogate_l1_entries", "Entries in L1.", value=cache.l1_entries)
    yield GaugeMetricFamily("taogate_l1_bytes", "Approximate bytes in L1.", value=cache.l1_bytes)
    yield CounterMetricFamily(
        "taogate_l1_evictions",
        "Entries evicted from L1 by its bounds.",
        value=cache.l1_evictions,
    )


def _upstream(stats: GatewayStats) -> Iterator[Metric]:
    d = stats.dispatcher.counts
    calls = CounterMetricFamily(
        "taogate_upstream_calls", "Upstream calls, by outcome.", labels=("outcome",)
    )
    failed = d.rate_limited + d.credential_invalid + d.ip_refused + d.transient
    calls.add_metric(("ok",), d.calls_ok)
    calls.add_metric(("rate_limited",), d.rate_limited)
    calls.add_metric(("credential_invalid",), d.credential_invalid)
    calls.add_metric(("ip_refused",), d.ip_refused)
    calls.add_metric(("transient",), d.transient)
    calls.add_metric(("other",), max(0, d.calls - d.calls_ok - failed))
    yield calls
    yield CounterMetricFamily("taogate_upstream_ids", "Ids sent upstream.", value=d.ids_sent)
    for name, counts, text in (
        (
            "taogate_upstream_calls_by_priority",
            d.calls_by_priority,
            "Upstream calls, by the most urgent priority they carried.",
        ),
        (
            "taogate_upstream_ids_by_priority",
            d.ids_by_priority,
            "Ids sent upstream, by their own priority.",
        ),
    ):
        by_priority = CounterMetricFamily(name, text, labels=("priority",))
        for p in Priority:
            by_priority.add_metric((p.name.lower(),), counts.get(p.name.lower(), 0))
        yield by_priority
    yield CounterMetricFamily(
        "taogate_upstream_items_found", "Items the upstream returned.", value=d.items_found
    )
    sizes = d.batch_sizes
    buckets = [(str(b), sum(n for size, n in sizes.items() if size <= b)) for b in BATCH_BUCKETS]
    buckets.append(("+Inf", sum(sizes.values())))
    yield HistogramMetricFamily(
        "taogate_upstream_items_per_call",
        "Ids carried by each upstream call.",
        buckets=buckets,
        sum_value=sum(size * n for size, n in sizes.items()),
    )
    for name, value, text in (
        ("taogate_singleflight_joins", d.joined, "Lookups that joined an id already pending."),
        ("taogate_retries", d.retries, "Batches retried after a transient fault."),
        ("taogate_bisections", d.bisections, "Refused batches split to find a bad id."),
        (
            "taogate_overloaded",
            d.overloaded,
            "Ids refused: the queue could not meet the deadline.",
        ),
        ("taogate_expired", d.expired, "Ids whose deadline passed in the queue."),
        (
            "taogate_late_leases",
            d.late_leases,
            "Call slots given back: the call could not leave soon enough after its grant.",
        ),
    ):
        yield CounterMetricFamily(name, text, value=value)


def _queue(stats: GatewayStats) -> Iterator[Metric]:
    d = stats.dispatcher
    depth = GaugeMetricFamily(
        "taogate_dispatch_queue_depth",
        "Ids waiting to be sent, by priority.",
        labels=("priority",),
    )
    for p in Priority:
        depth.add_metric((p.name.lower(),), d.queued[p.name.lower()])
    yield depth
    yield GaugeMetricFamily(
        "taogate_dispatch_in_flight", "Ids in calls on the wire.", value=d.in_flight
    )
    cumulative, running = [], 0
    for bound, count in zip((*WAIT_BUCKETS, float("inf")), d.counts.wait_counts, strict=True):
        running += count
        cumulative.append(("+Inf" if bound == float("inf") else str(bound), running))
    yield HistogramMetricFamily(
        "taogate_dispatch_queue_wait_seconds",
        "How long ids waited before being sent.",
        buckets=cumulative,
        sum_value=d.counts.wait_sum_s,
    )


def _breaker(stats: GatewayStats) -> Iterator[Metric]:
    breaker = GaugeMetricFamily(
        "taogate_breaker_state",
        "Circuit breaker: 0 closed, 1 half-open, 2 open.",
        labels=("provider",),
    )
    breaker.add_metric(("upstream",), _BREAKER_VALUE[stats.breaker.state])
    yield breaker
    yield CounterMetricFamily(
        "taogate_breaker_opened", "Times the breaker opened.", value=stats.breaker.opened
    )


def _pool(stats: GatewayStats) -> Iterator[Metric]:
    families: dict[str, GaugeMetricFamily | CounterMetricFamily] = {  # by CredentialStats field
        "rate": GaugeMetricFamily(
            "taogate_credential_rate",
            "Calls/s the pool allows the credential now.",
            labels=("credential",),
        ),
        "configured_qps": GaugeMetricFamily(
            "taogate_credential_qps",
            "The platform's rate for the credential (config).",
            labels=("credential",),
        ),
        "calls": CounterMetricFamily(
            "taogate_credential_calls",
            "Calls sent with the credential.",
            labels=("credential",),
        ),
        "calls_today": GaugeMetricFamily(
            "taogate_credential_calls_today",
            "Calls today (Beijing day), against the budget.",
            labels=("credential",),
        ),
        "rate_limited": CounterMetricFamily(
            "taogate_code7",
            "Rate-limit answers (code 7 and kin) for the credential.",
            labels=("credential",),
        ),
        "method_limited": CounterMetricFamily(
            "taogate_credential_method_limited",
            "Rate-limit answers for the credential on the API method (its pair paused).",
            labels=("credential",),
        ),
        "ip_refused": CounterMetricFamily(
            "taogate_credential_ip_refused",
            "Code 11 answers: an egress's address is not in the credential's IP whitelist.",
            labels=("credential",),
        ),
        "exhausted_for_s": GaugeMetricFamily(
            "taogate_credential_exhausted_seconds",
            "Seconds until midnight in Beijing while the platform says the credential's "
            "daily quota is spent (0: it is not).",
            labels=("credential",),
        ),
        "banned_for_s": GaugeMetricFamily(
            "taogate_credential_banned_seconds",
            "Seconds left of the credential's ban.",
            labels=("credential",),
        ),
        "in_flight": GaugeMetricFamily(
            "taogate_credential_in_flight",
            "Calls on the wire with the credential.",
            labels=("credential",),
        ),
        "cost": CounterMetricFamily(
            "taogate_cost",
            "Money spent on calls with the credential.",
            labels=("credential",),
        ),
    }
    egress_families: dict[str, GaugeMetricFamily | CounterMetricFamily] = {  # by EgressStats field
        "max_qps": GaugeMetricFamily(
            "taogate_egress_max_qps",
            "Calls per second all credentials on the egress may make together.",
            labels=("egress",),
        ),
        "rate": GaugeMetricFamily(
            "taogate_egress_rate",
            "Calls per second this replica paces the egress at (its share of max_qps).",
            labels=("egress",),
        ),
        "calls": CounterMetricFamily(
            "taogate_egress_calls", "Upstream calls through the egress.", labels=("egress",)
        ),
        "unreachable": CounterMetricFamily(
            "taogate_egress_unreachable",
            "Calls that found no connection through the egress.",
            labels=("egress",),
        ),
        "paused_for_s": GaugeMetricFamily(
            "taogate_egress_paused_seconds",
            "Seconds the egress stays paused after failing (0: in use).",
            labels=("egress",),
        ),
    }
    for egress in stats.pool.egresses:
        erow = egress.as_row()  # the values as tools see them (rounded, money exact)
        for key, efamily in egress_families.items():
            efamily.add_metric((egress.egress,), _f(erow[key]))
    yield from egress_families.values()
    budget = GaugeMetricFamily(
        "taogate_credential_daily_budget",
        "The credential's daily call budget (config).",
        labels=("credential",),
    )
    status = GaugeMetricFamily(
        "taogate_credential_status",
        "1 for the credential's current status.",
        labels=("credential", "status"),
    )
    for credential in stats.pool.credentials:
        row = credential.as_row()  # the values as tools see them (rounded, money exact)
        label = (credential.credential,)
        for key, family in families.items():
            family.add_metric(label, _f(row[key]))
        if credential.daily_budget is not None:
            budget.add_metric(label, float(credential.daily_budget))
        for s in CredentialStatus:
            status.add_metric((*label, str(s)), 1.0 if credential.status is s else 0.0)
    yield from families.values()
    yield budget
    yield status
    yield from _scopes(stats)


def _scopes(stats: GatewayStats) -> Iterator[Metric]:
    """The limits several credentials share, other than egresses: accounts, the API method."""
    scope_families: dict[str, GaugeMetricFamily | CounterMetricFamily] = {  # by ScopeStats field
        "calls": CounterMetricFamily(
            "taogate_scope_calls",
            "Upstream calls counted against the limit scope (account, method).",
            labels=("kind", "name"),
        ),
        "limited": CounterMetricFamily(
            "taogate_scope_limited",
            "Rate-limit answers for the scope (code 15 / 9100 for an account, a method's ban).",
            labels=("kind", "name"),
        ),
        "rate": GaugeMetricFamily(
            "taogate_scope_rate",
            "Calls per second this replica paces the scope at (0: not paced).",
            labels=("kind", "name"),
        ),
        "paused_for_s": GaugeMetricFamily(
            "taogate_scope_paused_seconds",
            "Seconds the scope stays paused by its last ban (0: in use).",
            labels=("kind", "name"),
        ),
    }
    for scope in stats.pool.scopes:
        row = scope.as_row()
        for key, family in scope_families.items():
            family.add_metric((scope.kind, scope.name), _f(row[key]))
    yield from scope_families.values()


def _secret_files(stats: GatewayStats) -> Iterator[Metric]:
    """Rotations and read failures of ``secret_file`` secrets (labels: masked app keys)."""
    if not stats.secret_files:
        return
    rotations = CounterMetricFamily(
        "taogate_secret_rotations",
        "New secrets read from the credential's secret_file and swapped in.",
        labels=("credential",),
    )
    failures = CounterMetricFamily(
        "taogate_secret_read_failures",
        "Checks of the credential's secret_file that could not read it (the secret in "
        "use was kept).",
        labels=("credential",),
    )
    for f in stats.secret_files:
        rotations.add_metric((f.credential,), f.rotations)
        failures.add_metric((f.credential,), f.failures)
    yield rotations
    yield failures
