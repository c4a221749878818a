"""The dashboard and the alerts read metrics that a running gateway really exports.

A real ``taogate serve`` in front of the simulator answers a few requests (so that labelled
series exist), then its ``/metrics`` is scraped: every ``taogate_*`` name in
deploy/grafana/taogate.json and deploy/prometheus/alerts.yml must be a sample name there, and
every metric family there must have a panel. The dashboard's queries must also be valid PromQL
(promtool checks them as recording rules), and taogate.json must be what its builder builds.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from taogate._settings import SimSettings
from taogate.testing import SimKey, Simulator
from tests.conftest import free_port, start_serve
from tests.deploy.conftest import DEPLOY, find_tool, run_tool

pytestmark = pytest.mark.integration

DASHBOARD = DEPLOY / "grafana" / "taogate.json"
ALERTS = DEPLOY / "prometheus" / "alerts.yml"
NAME = re.compile(r"\btaogate_[a-z0-9_]+")
#: a family's samples: counters end in _total, histograms in _bucket/_sum/_count
SUFFIXES = ("", "_total", "_bucket", "_sum", "_count")
#: Grafana's variables, replaced by something PromQL accepts
GRAFANA_VARIABLES = {
    "$__rate_interval": "5m",
    "$__range": "1h",
    "$namespace": ".*",
    "$instance": ".*",
}
KEY = SimKey(app_key="70000001", secret="metric-names-test-secret", qps=100.0)
TOKEN = "metric-names-test-client-token-0001"


def _walk(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from _walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from _walk(value)


def dashboard_queries() -> list[str]:
    """Every PromQL expression of the dashboard's panels."""
    doc = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return [n["expr"] for n in _walk(doc["panels"]) if isinstance(n.get("expr"), str)]


def dashboard_variable_queries() -> list[str]:
    doc = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return [v["definition"] for v in doc["templating"]["list"] if v.get("type") == "query"]


def alert_queries() -> list[str]:
    doc = yaml.safe_load(ALERTS.read_text(encoding="utf-8"))
    return [rule["expr"] for group in doc["groups"] for rule in group["rules"]]


def names_in(queries: list[str]) -> set[str]:
    return {name for query in queries for name in NAME.findall(query)}


# --- the files alone -----------------------------------------------------------------------


def test_dashboard_json_is_what_the_builder_builds() -> None:
    run_tool([sys.executable, str(DEPLOY / "grafana" / "build_dashboard.py"), "--check"])


def test_dashboard_structure() -> None:
    doc = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    ids = [p["id"] for p in doc["panels"]]
    assert len(ids) == len(set(ids)), "panel ids are unique"
    cells: set[tuple[int, int]] = set()
    for panel in doc["panels"]:
        pos = panel["gridPos"]
        assert pos["x"] + pos["w"] <= 24, panel["title"]
        for x in range(pos["x"], pos["x"] + pos["w"]):
            for y in range(pos["y"], pos["y"] + pos["h"]):
                assert (x, y) not in cells, f"{panel['title']} overlaps another panel"
                cells.add((x, y))
        if panel["type"] != "row":
            assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
            assert panel["targets"], panel["title"]
            assert panel["description"], panel["title"]


def test_dashboard_queries_are_valid_promql(tmp_path: Path) -> None:
    """promtool parses each panel query (as a recording rule, Grafana's variables filled in)."""
    promtool = find_tool("promtool", "run `make setup` (scripts/setup-deploy-tools)")
    rules = []
    for i, query in enumerate(dashboard_queries()):
        for variable, value in GRAFANA_VARIABLES.items():
            query = query.replace(variable, value)
        assert "$" not in query, f"an unknown Grafana variable in {query}"
        rules.append({"record": f"dashboard:query_{i}", "expr": query})
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    out = run_tool([promtool, "check", "rules", str(path)])
    assert f"{len(rules)} rules found" in out


# --- against a running gateway ---------------------------------------------------------------


@pytest.fixture
async def metrics_text(tmp_path: Path) -> AsyncIterator[str]:
    """/metrics of a real ``taogate serve`` after a few requests of each kind."""
    settings = SimSettings(latency_ms=(0.0, 0.0), catalog_size=2_000, seed=3)
    async with Simulator([KEY], settings=settings, port=0) as sim:
        port = free_port()
        config = tmp_path / "taogate.toml"
        config.write_text(
            f"""
[upstream]
url = "{sim.url}"

[[credentials]]
app_key = "{KEY.app_key}"
secret = "{KEY.secret}"
qps = 100
daily_budget = 100000
cost_per_call = "0.01"

[server]
port = {port}

[[server.clients]]
name = "ops"
token = "{TOKEN}"
admin = true
""",
            encoding="utf-8",
        )
        proc = await start_serve(config, port)
        try:
            base = f"http://127.0.0.1:{port}"
            auth = {"Authorization": f"Bearer {TOKEN}"}
            ids = sim.catalog.ids()[:20]
            async with httpx.AsyncClient(base_url=base, timeout=10.0) as client:
                for num_iid in ids[:3] * 2:  # misses, then hits
                    await client.get(f"/v1/items/{num_iid}", headers=auth)
                await client.post("/v1/items:batch", json={"ids": ids}, headers=auth)
                await client.get("/v1/items/1", headers={"Authorization": "Bearer wrong"})
                await client.get("/v1/admin/keys", headers=auth)
                resp = await client.get("/metrics")
                assert resp.status_code == 200
                yield resp.text
        finally:
            proc.terminate()
            await proc.wait()


def parse_exposition(text: str) -> tuple[set[str], set[str]]:
    """(sample names, family names) of a Prometheus text exposition."""
    samples, families = set(), set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            families.add(line.split()[2])
        elif line and not line.startswith("#"):
            samples.add(re.split(r"[{ ]", line, maxsplit=1)[0])
    return samples, families


def test_every_name_in_the_dashboard_and_alerts_is_exported(metrics_text: str) -> None:
    samples, _ = parse_exposition(metrics_text)
    used = names_in(dashboard_queries() + dashboard_variable_queries())
    assert used, "the dashboard names metrics"
    assert used - samples == set(), "the dashboard reads metrics that /metrics does not have"
    alerting = names_in(alert_queries())
    assert alerting, "the alerts name metrics"
    assert alerting - samples == set(), "the alerts read metrics that /metrics does not have"


def test_every_metric_family_has_a_panel(metrics_text: str) -> None:
    _, families = parse_exposition(metrics_text)
    # prometheus_client adds <counter>_created series: a timestamp, nothing to plot
    families = {f for f in families if f.startswith("taogate_") and not f.endswith("_created")}
    assert len(families) > 30
    used = names_in(dashboard_queries())
    missing = {
        family
        for family in families
        if not any(family.removesuffix("_total") + suffix in used for suffix in SUFFIXES)
    }
    assert missing == set(), "metric families without a dashboard panel"


def test_promtool_lints_the_exposition_clean(metrics_text: str) -> None:
    """promtool parses what /metrics serves and finds nothing to remark on its names."""
    promtool = find_tool("promtool", "run `make setup` (scripts/setup-deploy-tools)")
    result = subprocess.run(
        [promtool, "check", "metrics"],
        input=metrics_text,
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )
    assert result.returncode == 0, result.stdout + result.stderr
