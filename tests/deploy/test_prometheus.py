"""deploy/prometheus: the alert rules pass ``promtool check rules``, their unit tests pass
``promtool test rules``, and every alert is both tested firing and documented."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import yaml

from tests.deploy.conftest import DEPLOY, ROOT, find_tool, run_tool

PROMETHEUS = DEPLOY / "prometheus"
PROMTOOL_HINT = "run `make setup` (scripts/setup-deploy-tools unpacks Debian's promtool)"


def alert_rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load((PROMETHEUS / "alerts.yml").read_text(encoding="utf-8"))
    return [rule for group in doc["groups"] for rule in group["rules"] if "alert" in rule]


def test_promtool_check_rules() -> None:
    out = run_tool(
        [find_tool("promtool", PROMTOOL_HINT), "check", "rules", "alerts.yml"], cwd=PROMETHEUS
    )
    assert f"{len(alert_rules())} rules found" in out


def test_promtool_unit_tests_pass() -> None:
    run_tool(
        [find_tool("promtool", PROMTOOL_HINT), "test", "rules", "alerts_test.yml"], cwd=PROMETHEUS
    )


def test_promtool_unit_tests_can_fail(tmp_path: Path) -> None:
    """The unit tests are real: a wrong expectation makes promtool fail."""
    promtool = find_tool("promtool", PROMTOOL_HINT)
    (tmp_path / "alerts.yml").write_bytes((PROMETHEUS / "alerts.yml").read_bytes())
    tests = (PROMETHEUS / "alerts_test.yml").read_text(encoding="utf-8")
    wrong = tests.replace("severity: critical", "severity: info", 1)
    assert wrong != tests
    (tmp_path / "alerts_test.yml").write_text(wrong, encoding="utf-8")
    result = subprocess.run(
        [promtool, "test", "rules", "alerts_test.yml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode != 0
    assert "FAILED" in result.stdout + result.stderr


def test_every_alert_is_tested_firing() -> None:
    tests = yaml.safe_load((PROMETHEUS / "alerts_test.yml").read_text(encoding="utf-8"))
    fired = {
        case["alertname"]
        for test in tests["tests"]
        for case in test.get("alert_rule_test", [])
        if case.get("exp_alerts")
    }
    quiet = {
        case["alertname"]
        for test in tests["tests"]
        for case in test.get("alert_rule_test", [])
        if not case.get("exp_alerts")
    }
    names = {rule["alert"] for rule in alert_rules()}
    assert names - fired == set(), "alerts without a test that fires them"
    # all but the one-shot configuration alert are also shown quiet on healthy series
    assert names - quiet <= {"TaogateReplicasWithoutRedis", "TaogateBudgetNearExhaustion"}


def test_every_alert_has_severity_summary_and_runbook() -> None:
    for rule in alert_rules():
        assert rule["labels"]["severity"] in ("warning", "critical"), rule["alert"]
        annotations = rule["annotations"]
        assert {"summary", "description", "runbook"} <= annotations.keys(), rule["alert"]
        assert annotations["runbook"] == f"docs/operations.md#{rule['alert'].lower()}"


def _anchors(markdown: str) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
    anchors = set()
    for line in markdown.splitlines():
        if line.startswith("#"):
            title = line.lstrip("#").strip().lower()
            anchors.add(re.sub(r"[^\w\- ]", "", title).replace(" ", "-"))
    return anchors


def test_every_alert_has_a_runbook_section() -> None:
    operations = (ROOT / "docs" / "operations.md").read_text(encoding="utf-8")
    anchors = _anchors(operations)
    for rule in alert_rules():
        assert rule["alert"].lower() in anchors, f"no runbook section for {rule['alert']}"
    # and the runbook's own links point at sections that exist
    for target in re.findall(r"\]\(#([^)]+)\)", operations):
        assert target in anchors, target
