"""The benchmark machinery runs end to end (short runs; the figures come from `taogate bench`)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from rich.console import Console

from taogate.bench import run_bench

pytestmark = pytest.mark.integration


async def test_quick_bench_writes_json_and_png(tmp_path: Path) -> None:
    console = Console(file=io.StringIO(), width=120)
    report = await run_bench(
        console, scenarios=["dup", "micro"], quick=True, out=tmp_path, name="smoke"
    )
    data = json.loads((tmp_path / "smoke.json").read_text())
    assert (tmp_path / "smoke.png").stat().st_size > 1000
    assert data["duplicate_burst"]["upstream_ids"] == 1
    assert report["l1_micro"]["big"]["entries"] <= 50_000
    checks = [c for r in (data["duplicate_burst"], data["l1_micro"]) for c in r["checks"]]
    assert checks
    assert all(set(c) == {"name", "target", "measured", "passed"} for c in checks)
