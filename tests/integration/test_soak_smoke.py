"""bench/soak.py runs end to end and writes its JSON and PNG (a short run; the figures come
from ``make bench-soak``)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

SOAK = Path(__file__).parents[2] / "bench" / "soak.py"


def test_a_short_soak_writes_json_and_png(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("soak", SOAK)
    assert spec is not None
    assert spec.loader is not None
    soak = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(soak)
    argv = ["--seconds", "12", "--warmup", "3", "--interval", "2", "--outage-s", "3"]
    result = soak.main(argv, results=tmp_path)
    data = json.loads((tmp_path / "soak.json").read_text())
    assert (tmp_path / "soak.png").stat().st_size > 1000
    assert data["passed"] == result["passed"]
    assert [c["name"].split(" ")[0] for c in data["checks"]] == ["RSS", "asyncio", "open"]
    phases = {s["phase"] for s in data["samples"]}
    assert {"warm-up", "steady"} <= phases
    assert all(s["rss_bytes"] > 0 and s["fds"] > 0 and s["tasks"] > 0 for s in data["samples"])
    outcomes = data["outcomes"]
    for kind in ("hit_200", "batch_200", "invalidate_200", "job_submit_202", "metrics_200"):
        assert outcomes.get(kind, 0) > 0, kind
