"""The demo runs end to end in a short form (the README's `make demo` runs the full one)."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from taogate._demo import run_demo
from taogate._walkthrough import run_walkthrough

pytestmark = pytest.mark.integration


async def test_short_demo_prints_a_comparison() -> None:
    out = io.StringIO()
    await run_demo(Console(file=out, width=120), seconds=10.0, rate=100.0)
    text = out.getvalue()
    assert "taogate vs a naive client" in text
    assert "code 7 answers" in text
    assert "/metrics" in text


async def test_walkthrough_shows_each_step() -> None:
    out = io.StringIO()
    await run_walkthrough(Console(file=out, width=120), budget_s=60.0)
    text = out.getvalue()
    for step in ("one call carries 40 ids", "CredentialInvalid", "refused with code 7"):
        assert step in text
