"""The HTTP service's metrics: its own request counters and latencies, and the gateway's.

Request counters and latencies are updated as requests are served; everything the gateway
already counts (cache, dispatcher, pool, breaker) is read at scrape time by
:class:`taogate.metrics.GatewayCollector`, so the hot path pays for two metric updates and no
more. Each app has its own registry: importing taogate registers nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Histogram

from taogate.metrics import GatewayCollector

if TYPE_CHECKING:
    from taogate._gateway import Gateway

__all__ = ["Metrics"]

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
#: Methods counted by name; any other (a client may send any token) counts as ``other``, so a
#: caller cannot grow the label set, or the memo of labelled children, request by request.
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH"})


class Metrics:
    """The registry of one app and the instruments its handlers update."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "taogate_http_requests",
            "HTTP requests answered, by route template, method and status.",
            ("route", "method", "status"),
            registry=self.registry,
        )
        self.latency = Histogram(
            "taogate_http_request_duration_seconds",
            "Time to answer an HTTP request, by route template.",
            ("route",),
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.shed = Counter(
            "taogate_shed_requests",
            "Requests refused at once because too many were in progress.",
            registry=self.registry,
        )

        # labelled children, looked up once: labels() takes a lock and builds a tuple each call.
        # Bounded: route templates (a few, plus "unmatched") x METHODS + other x statuses
        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        """Count one answered request and its latency."""
        if method not in METHODS:
            method = "other"
        key = (route, method, status)
        pair = self._children.get(key)
        if pair is None:
            pair = (self.requests.labels(route, method, str(status)), self.latency.labels(route))
            self._children[key] = pair
        pair[0].inc()
        pair[1].observe(seconds)

    def watch(self, gateway: Gateway) -> None:
        """Export the gateway's own counters at scrape time."""
        self.registry.register(GatewayCollector(gateway))
