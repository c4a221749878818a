"""Build deploy/grafana/taogate.json, the Grafana dashboard of taogate's metrics.

The dashboard is kept as this code and generated, so that its layout stays regular and every
panel reads the datasource and filters the same way. Edit here, then ``make dashboard``;
``--check`` (run by the suite) fails when taogate.json is not what this file builds.
Import the JSON in Grafana (Dashboards -> Import) or provision it from a file.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

OUT = Path(__file__).with_name("taogate.json")
DS = {"type": "prometheus", "uid": "${datasource}"}
SEL = 'namespace=~"$namespace", instance=~"$instance"'
RI = "$__rate_interval"
NONE = '"none"'

Json = dict[str, Any]


def s(metric: str, extra: str = "") -> str:
    """``metric{the dashboard's filters[, extra]}``."""
    return f"{metric}{{{SEL}{', ' + extra if extra else ''}}}"


def rate(metric: str, extra: str = "") -> str:
    return f"rate({s(metric, extra)}[{RI}])"


@dataclass
class Panel:
    title: str
    description: str
    targets: list[tuple[str, str]]
    unit: str = "short"
    kind: str = "timeseries"
    width: int = 8
    height: int = 8
    mappings: list[Json] = field(default_factory=list)
    thresholds: list[tuple[float | None, str]] = field(default_factory=lambda: [(None, "green")])
    stack: bool = False


@dataclass
class Row:
    title: str
    panels: list[Panel]


def quantiles(metric: str, by: str = "") -> list[tuple[str, str]]:
    group = f"le{', ' + by if by else ''}"
    suffix = f" {{{{{by}}}}}" if by else ""
    return [
        (
            f"histogram_quantile({q}, sum by ({group}) ({rate(metric + '_bucket')}))",
            f"p{int(q * 100)}{suffix}",
        )
        for q in (0.5, 0.99)
    ]


BREAKER = [
    {
        "type": "value",
        "options": {
            "0": {"text": "closed", "color": "green", "index": 0},
            "1": {"text": "half-open", "color": "orange", "index": 1},
            "2": {"text": "open", "color": "red", "index": 2},
        },
    }
]

ROWS = [
    Row(
        "Overview",
        [
            Panel(
                "Requests/s",
                "HTTP requests answered per second, all replicas.",
                [(f"sum({rate('taogate_http_requests_total')})", "requests/s")],
                unit="reqps",
                kind="stat",
                width=4,
                height=5,
            ),
            Panel(
                "5xx share",
                "Share of requests answered with a 5xx status (503s included).",
                [
                    (
                        "sum(" + rate("taogate_http_requests_total", 'status=~"5.."') + ") / "
                        f"sum({rate('taogate_http_requests_total')})",
                        "5xx",
                    )
                ],
                unit="percentunit",
                kind="stat",
                width=4,
                height=5,
                thresholds=[(None, "green"), (0.01, "orange"), (0.05, "red")],
            ),
            Panel(
                "L1 hit ratio",
                "Lookups answered fresh from the replica's own cache.",
                [
                    (
                        "sum("
                        + rate("taogate_cache_hits_total", 'tier="l1"')
                        + ") / sum("
                        + rate("taogate_lookups_total", 'outcome=~"l1_hit|miss"')
                        + ")",
                        "L1 hits",
                    )
                ],
                unit="percentunit",
                kind="stat",
                width=4,
                height=5,
                thresholds=[(None, "red"), (0.5, "orange"), (0.8, "green")],
            ),
            Panel(
                "Quota used",
                "Upstream calls per second against what the keys allow (rate x safety factor).",
                [
                    (
                        f"sum({rate('taogate_credential_calls_total')}) / "
                        f"sum(max by (credential) ({s('taogate_credential_rate')}))",
                        "quota used",
                    )
                ],
                unit="percentunit",
                kind="stat",
                width=4,
                height=5,
                thresholds=[(None, "green"), (0.8, "orange"), (0.9, "red")],
            ),
            Panel(
                "Breaker",
                "The worst upstream circuit breaker state among the replicas.",
                [(f"max({s('taogate_breaker_state')})", "breaker")],
                kind="stat",
                width=4,
                height=5,
                mappings=BREAKER,
                thresholds=[(None, "green"), (1, "orange"), (2, "red")],
            ),
            Panel(
                "Code 7 (range)",
                "Rate-limit answers from the platform in the selected time range; should be 0.",
                [(f"sum(increase({s('taogate_code7_total')}[$__range]))", "code 7")],
                kind="stat",
                width=4,
                height=5,
                thresholds=[(None, "green"), (1, "red")],
            ),
        ],
    ),
    Row(
        "HTTP",
        [
            Panel(
                "Requests by status",
                "HTTP requests per second by status code.",
                [(f"sum by (status) ({rate('taogate_http_requests_total')})", "{{status}}")],
                unit="reqps",
                stack=True,
            ),
            Panel(
                "Latency by route",
                "p50 and p99 of the time to answer, by route template; mean from _sum/_count.",
                [
                    *quantiles("taogate_http_request_duration_seconds", "route"),
                    (
                        f"sum by (route) ({rate('taogate_http_request_duration_seconds_sum')})"
                        f" / sum by (route) "
                        f"({rate('taogate_http_request_duration_seconds_count')})",
                        "mean {{route}}",
                    ),
                ],
                unit="s",
            ),
            Panel(
                "Shed requests",
                "Requests refused at once (503) because max_in_flight were in progress.",
                [(f"sum by (instance) ({rate('taogate_shed_requests_total')})", "{{instance}}")],
                unit="reqps",
            ),
        ],
    ),
    Row(
        "Cache",
        [
            Panel(
                "Lookups by outcome",
                "Item lookups per second: fresh L1 hits, misses, and stale answers among misses.",
                [(f"sum by (outcome) ({rate('taogate_lookups_total')})", "{{outcome}}")],
                unit="ops",
            ),
            Panel(
                "Fresh answers by tier",
                "Lookups answered fresh from L1 (this replica) or L2 (Redis).",
                [(f"sum by (tier) ({rate('taogate_cache_hits_total')})", "{{tier}}")],
                unit="ops",
                stack=True,
            ),
            Panel(
                "Stale answers and refresh-ahead",
                "Answers served stale because the upstream could not answer; ids refreshed "
                "before they expired.",
                [
                    (f"sum({rate('taogate_stale_answers_total')})", "stale answers"),
                    (f"sum({rate('taogate_refresh_ahead_total')})", "refreshed ahead"),
                ],
                unit="ops",
            ),
            Panel(
                "L1 entries",
                "Entries in each replica's L1 (bounded by l1_max_entries).",
                [(f"sum by (instance) ({s('taogate_l1_entries')})", "{{instance}}")],
            ),
            Panel(
                "L1 bytes",
                "Approximate bytes in each replica's L1 (bounded by l1_max_bytes).",
                [(f"sum by (instance) ({s('taogate_l1_bytes')})", "{{instance}}")],
                unit="bytes",
            ),
            Panel(
                "L1 evictions",
                "Entries evicted by L1's bounds per second: a steady rate means L1 is too small "
                "for the working set.",
                [(f"sum by (instance) ({rate('taogate_l1_evictions_total')})", "{{instance}}")],
                unit="ops",
            ),
        ],
    ),
    Row(
        "Upstream",
        [
            Panel(
                "Upstream calls by outcome",
                "Calls per second: ok, rate_limited (code 7 and kin), credential_invalid, "
                "transient faults, other.",
                [(f"sum by (outcome) ({rate('taogate_upstream_calls_total')})", "{{outcome}}")],
                unit="reqps",
                stack=True,
            ),
            Panel(
                "Ids per call",
                "Ids carried by each call (40 at most for item.info.get): mean and p50.",
                [
                    (
                        f"sum({rate('taogate_upstream_items_per_call_sum')}) / "
                        f"sum({rate('taogate_upstream_items_per_call_count')})",
                        "mean",
                    ),
                    (
                        "histogram_quantile(0.5, sum by (le) "
                        f"({rate('taogate_upstream_items_per_call_bucket')}))",
                        "p50",
                    ),
                ],
            ),
            Panel(
                "Ids sent and items found",
                "Ids sent upstream per second and the items the upstream returned.",
                [
                    (f"sum({rate('taogate_upstream_ids_total')})", "ids sent"),
                    (f"sum({rate('taogate_upstream_items_found_total')})", "items found"),
                ],
                unit="ops",
            ),
            Panel(
                "Coalescing, retries, bisections",
                "Lookups that joined an id already pending, batches retried after a transient "
                "fault, refused batches split to find a bad id.",
                [
                    (f"sum({rate('taogate_singleflight_joins_total')})", "singleflight joins"),
                    (f"sum({rate('taogate_retries_total')})", "retries"),
                    (f"sum({rate('taogate_bisections_total')})", "bisections"),
                ],
                unit="ops",
            ),
            Panel(
                "Calls and ids by priority",
                "Upstream calls by the most urgent priority they carried, and ids sent by their "
                "own priority (bulk ids ride in interactive calls' spare room).",
                [
                    (
                        f"sum by (priority) ({rate('taogate_upstream_calls_by_priority_total')})",
                        "calls {{priority}}",
                    ),
                    (
                        f"sum by (priority) ({rate('taogate_upstream_ids_by_priority_total')})",
                        "ids {{priority}}",
                    ),
                ],
                unit="ops",
            ),
            Panel(
                "Ids refused in the queue",
                "Ids refused because the queue could not meet their deadline (overloaded) or "
                "whose deadline passed while queued (expired).",
                [
                    (f"sum({rate('taogate_overloaded_total')})", "overloaded"),
                    (f"sum({rate('taogate_expired_total')})", "expired"),
                ],
                unit="ops",
            ),
            Panel(
                "Late leases",
                "Call slots given back because the call could not leave soon enough after its "
                "grant (an event-loop stall: CPU starvation or throttling).",
                [(f"sum by (instance) ({rate('taogate_late_leases_total')})", "{{instance}}")],
                unit="ops",
            ),
        ],
    ),
    Row(
        "Egress",
        [
            Panel(
                "Calls by egress",
                "Upstream calls per second through each egress (calling IP), all replicas, "
                "against its cap (max_qps).",
                [
                    (
                        f"sum by (egress) ({rate('taogate_egress_calls_total')})",
                        "calls {{egress}}",
                    ),
                    (f"max by (egress) ({s('taogate_egress_max_qps')})", "cap {{egress}}"),
                ],
                unit="reqps",
                width=12,
            ),
            Panel(
                "Egress pacing per replica",
                "Calls per second each replica paces each egress at (its share of max_qps).",
                [
                    (
                        f"sum by (instance, egress) ({s('taogate_egress_rate')})",
                        "{{instance}} {{egress}}",
                    )
                ],
                unit="reqps",
                width=12,
            ),
            Panel(
                "Unreachable through egress",
                "Calls that found no connection through the egress (its proxy or address).",
                [
                    (
                        f"sum by (egress) ({rate('taogate_egress_unreachable_total')})",
                        "{{egress}}",
                    )
                ],
                unit="ops",
                width=12,
            ),
            Panel(
                "Egress paused",
                "Seconds each egress stays paused after failing (0: in use).",
                [
                    (
                        f"max by (egress) ({s('taogate_egress_paused_seconds')})",
                        "{{egress}}",
                    )
                ],
                unit="s",
                width=12,
            ),
        ],
    ),
    Row(
        "Limit scopes (accounts, the API method)",
        [
            Panel(
                "Calls by account and method",
                "Upstream calls per second counted against each promoter account and the API "
                "method, all replicas, against the rate each replica paces them at.",
                [
                    (
                        f"sum by (kind, name) ({rate('taogate_scope_calls_total')})",
                        "calls {{kind}} {{name}}",
                    ),
                    (
                        f"sum by (kind, name) ({s('taogate_scope_rate')})",
                        "paced {{kind}} {{name}}",
                    ),
                ],
                unit="reqps",
                width=12,
            ),
            Panel(
                "Scope bans",
                "Rate-limit answers per interval for an account (code 15 / 9100: paused, rate "
                "halved) or the method (paused on every key).",
                [
                    (
                        f"sum by (kind, name) (increase({s('taogate_scope_limited_total')}[{RI}]))",
                        "{{kind}} {{name}}",
                    )
                ],
                width=12,
            ),
            Panel(
                "Scope paused",
                "Seconds each account or method stays paused by its last ban (0: in use).",
                [
                    (
                        f"max by (kind, name) ({s('taogate_scope_paused_seconds')})",
                        "{{kind}} {{name}}",
                    )
                ],
                unit="s",
                width=8,
            ),
            Panel(
                "Key × method bans and whitelist refusals",
                "Per key: bans on the API method (the pair pauses, backing off) and code 11 "
                "answers (an egress's address is not in the key's IP whitelist).",
                [
                    (
                        "sum by (credential) (increase("
                        f"{s('taogate_credential_method_limited_total')}[{RI}]))",
                        "method {{credential}}",
                    ),
                    (
                        "sum by (credential) (increase("
                        f"{s('taogate_credential_ip_refused_total')}[{RI}]))",
                        "code 11 {{credential}}",
                    ),
                ],
                width=8,
            ),
            Panel(
                "Day spent",
                "Seconds until midnight Beijing time for keys the platform banned until then "
                "(their daily quota is spent).",
                [
                    (
                        f"max by (credential) ({s('taogate_credential_exhausted_seconds')})",
                        "{{credential}}",
                    )
                ],
                unit="s",
                width=8,
            ),
        ],
    ),
    Row(
        "Dispatcher",
        [
            Panel(
                "Queue depth by priority",
                "Ids waiting for a credential slot: interactive, refresh, bulk.",
                [
                    (
                        f"sum by (priority) ({s('taogate_dispatch_queue_depth')})",
                        "{{priority}}",
                    )
                ],
                stack=True,
            ),
            Panel(
                "Ids in flight",
                "Ids in calls on the wire, per replica.",
                [(f"sum by (instance) ({s('taogate_dispatch_in_flight')})", "{{instance}}")],
            ),
            Panel(
                "Queue wait",
                "How long ids waited before being sent: p50, p99 and mean.",
                [
                    *quantiles("taogate_dispatch_queue_wait_seconds"),
                    (
                        f"sum({rate('taogate_dispatch_queue_wait_seconds_sum')}) / "
                        f"sum({rate('taogate_dispatch_queue_wait_seconds_count')})",
                        "mean",
                    ),
                ],
                unit="s",
            ),
        ],
    ),
    Row(
        "Degraded mode",
        [
            Panel(
                "Degraded replicas",
                "Replicas in degraded mode (wider freshness, no refresh-ahead, bulk paused), and "
                "what decides it: a manual override or the schedule.",
                [
                    (f"sum({s('taogate_degraded')})", "degraded"),
                    (
                        f"sum by (source) ({s('taogate_degraded_source', 'source!=' + NONE)})",
                        "decided by {{source}}",
                    ),
                ],
            ),
            Panel(
                "Degraded mode changes",
                "Switches of degraded mode each replica saw, per interval.",
                [
                    (
                        "sum by (instance) "
                        f"(increase({s('taogate_degraded_changes_total')}[{RI}]))",
                        "{{instance}}",
                    )
                ],
            ),
            Panel(
                "Reserve: non-interactive ids held or refused",
                "While degraded, refresh and bulk ids pass a pacer that keeps reserve_share of the "
                "quota for interactive misses: ids it held back (waited) or refused.",
                [
                    (
                        f"sum by (outcome) ({rate('taogate_degraded_reserve_ids_total')})",
                        "{{outcome}}",
                    )
                ],
                unit="ops",
            ),
        ],
    ),
    Row(
        "Breaker and Redis",
        [
            Panel(
                "Breaker state",
                "Per replica: 0 closed, 1 half-open, 2 open.",
                [(f"max by (instance) ({s('taogate_breaker_state')})", "{{instance}}")],
                mappings=BREAKER,
                width=6,
            ),
            Panel(
                "Breaker openings",
                "Times the breaker opened, per interval.",
                [
                    (
                        f"sum(increase({s('taogate_breaker_opened_total')}[{RI}]))",
                        "opened",
                    )
                ],
                width=6,
            ),
            Panel(
                "Replicas by mode",
                "Replicas in shared mode (Redis), local mode (Redis lost: each key at its "
                "share) and single mode (no Redis configured); live replicas as counted by "
                "the heartbeat.",
                [
                    (f"sum by (mode) ({s('taogate_mode')})", "{{mode}}"),
                    (f"max({s('taogate_replicas_live')})", "live (heartbeat)"),
                ],
                width=6,
            ),
            Panel(
                "Mode changes",
                "Switches between shared and local mode, per interval.",
                [
                    (
                        f"sum by (instance) (increase({s('taogate_mode_changes_total')}[{RI}]))",
                        "{{instance}}",
                    )
                ],
                width=6,
            ),
            Panel(
                "Malformed values in Redis",
                "Values read from Redis that were not what taogate writes (by hand, an old "
                "version, a bug), per interval: corrupt L2 entries (each a miss, deleted) and "
                "others, by where they were found (each ignored). Should stay at zero.",
                [
                    (f"sum(increase({s('taogate_l2_corrupt_total')}[{RI}]))", "L2 entries"),
                    (
                        f"sum by (source) (increase({s('taogate_redis_malformed_total')}[{RI}]))",
                        "{{source}}",
                    ),
                ],
                width=12,
            ),
        ],
    ),
    Row(
        "Credentials",
        [
            Panel(
                "Calls by credential",
                "Calls per second with each key, all replicas, against the rate the pool "
                "allows it now (qps x safety factor, lowered after bans).",
                [
                    (
                        f"sum by (credential) ({rate('taogate_credential_calls_total')})",
                        "calls {{credential}}",
                    ),
                    (
                        f"max by (credential) ({s('taogate_credential_rate')})",
                        "allowed {{credential}}",
                    ),
                    (
                        f"max by (credential) ({s('taogate_credential_qps')})",
                        "platform qps {{credential}}",
                    ),
                ],
                unit="reqps",
                width=12,
            ),
            Panel(
                "Credential status",
                "Keys by status: active, banned (code 7), quarantined or probing (refused by "
                "the platform), exhausted (daily budget spent).",
                [
                    (
                        "sum by (status) (max by (credential, status) "
                        f"({s('taogate_credential_status')}))",
                        "{{status}}",
                    )
                ],
                stack=True,
                width=12,
            ),
            Panel(
                "Code 7 by credential",
                "Rate-limit answers per interval; each bans the key and halves its rate.",
                [
                    (
                        f"sum by (credential) (increase({s('taogate_code7_total')}[{RI}]))",
                        "{{credential}}",
                    )
                ],
            ),
            Panel(
                "Ban left",
                "Seconds left of each key's ban.",
                [
                    (
                        f"max by (credential) ({s('taogate_credential_banned_seconds')})",
                        "{{credential}}",
                    )
                ],
                unit="s",
            ),
            Panel(
                "Calls in flight by credential",
                "Calls on the wire with each key, all replicas.",
                [
                    (
                        f"sum by (credential) ({s('taogate_credential_in_flight')})",
                        "{{credential}}",
                    )
                ],
            ),
            Panel(
                "Calls today and daily budget",
                "Calls since midnight Beijing time, all replicas, against each key's budget.",
                [
                    (
                        f"sum by (credential) ({s('taogate_credential_calls_today')})",
                        "today {{credential}}",
                    ),
                    (
                        f"max by (credential) ({s('taogate_credential_daily_budget')})",
                        "budget {{credential}}",
                    ),
                ],
                width=12,
            ),
            Panel(
                "Cost per hour",
                "Money spent on calls per hour, by key (cost_per_call x calls).",
                [
                    (
                        f"sum by (credential) ({rate('taogate_cost_total')}) * 3600",
                        "{{credential}}",
                    )
                ],
                width=12,
            ),
        ],
    ),
]


def _panel(panel: Panel, pid: int, x: int, y: int) -> Json:
    defaults: Json = {
        "unit": panel.unit,
        "mappings": panel.mappings,
        "thresholds": {
            "mode": "absolute",
            "steps": [{"color": color, "value": value} for value, color in panel.thresholds],
        },
    }
    if panel.kind == "timeseries":
        defaults["custom"] = {
            "drawStyle": "line",
            "lineWidth": 1,
            "fillOpacity": 10,
            "showPoints": "never",
            "spanNulls": False,
            "stacking": {"mode": "normal" if panel.stack else "none", "group": "A"},
        }
        options: Json = {
            "legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
            "tooltip": {"mode": "multi", "sort": "desc"},
        }
    else:
        options = {
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "colorMode": "value",
            "graphMode": "area",
            "justifyMode": "auto",
            "orientation": "auto",
            "textMode": "auto",
        }
    return {
        "id": pid,
        "type": panel.kind,
        "title": panel.title,
        "description": panel.description,
        "datasource": DS,
        "gridPos": {"h": panel.height, "w": panel.width, "x": x, "y": y},
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "options": options,
        "targets": [
            {
                "datasource": DS,
                "expr": expr,
                "legendFormat": legend,
                "range": True,
                "refId": chr(ord("A") + i),
            }
            for i, (expr, legend) in enumerate(panel.targets)
        ],
    }


def _variable(name: str, label: str, query: str) -> Json:
    return {
        "name": name,
        "label": label,
        "type": "query",
        "datasource": DS,
        "definition": query,
        "query": {"query": query, "refId": f"{name}-values"},
        "includeAll": True,
        "allValue": ".*",
        "multi": True,
        "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
        "refresh": 2,
        "sort": 1,
        "hide": 0,
        "options": [],
        "regex": "",
    }


def build() -> Json:
    """The dashboard as Grafana's JSON model."""
    panels: list[Json] = []
    pid, y = 1, 0
    for row in ROWS:
        panels.append(
            {
                "id": pid,
                "type": "row",
                "title": row.title,
                "collapsed": False,
                "gridPos": {"h": 1, "w": 24, "x": 0, "y": y},
                "panels": [],
            }
        )
        pid, y, x, line = pid + 1, y + 1, 0, 0
        for panel in row.panels:
            if x + panel.width > 24:
                x, y, line = 0, y + line, 0
            panels.append(_panel(panel, pid, x, y))
            pid, x, line = pid + 1, x + panel.width, max(line, panel.height)
        y += line
    return {
        "title": "taogate",
        "uid": "taogate",
        "description": "taogate: HTTP, cache, upstream quota, egresses, dispatcher, degraded "
        "mode, breaker, Redis mode and credentials. Built by deploy/grafana/build_dashboard.py.",
        "tags": ["taogate"],
        "editable": True,
        "graphTooltip": 1,
        "timezone": "browser",
        "refresh": "30s",
        "time": {"from": "now-3h", "to": "now"},
        "schemaVersion": 39,
        "version": 1,
        "links": [],
        "annotations": {
            "list": [
                {
                    "builtIn": 1,
                    "datasource": {"type": "grafana", "uid": "-- Grafana --"},
                    "enable": True,
                    "hide": True,
                    "iconColor": "rgba(0, 211, 255, 1)",
                    "name": "Annotations & Alerts",
                    "type": "dashboard",
                }
            ]
        },
        "templating": {
            "list": [
                {
                    "name": "datasource",
                    "label": "Prometheus",
                    "type": "datasource",
                    "query": "prometheus",
                    "current": {},
                    "hide": 0,
                    "options": [],
                    "refresh": 1,
                    "regex": "",
                },
                _variable(
                    "namespace", "Namespace", "label_values(taogate_http_requests_total, namespace)"
                ),
                _variable(
                    "instance",
                    "Replica",
                    'label_values(taogate_http_requests_total{namespace=~"$namespace"}, instance)',
                ),
            ]
        },
        "panels": panels,
    }


def render() -> str:
    return json.dumps(build(), indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--check", action="store_true", help="fail if taogate.json is stale")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        if not OUT.exists() or OUT.read_text(encoding="utf-8") != text:
            print(f"{OUT} is not what {Path(__file__).name} builds: run `make dashboard`")
            return 1
        return 0
    OUT.write_text(text, encoding="utf-8")
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
