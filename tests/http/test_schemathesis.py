"""schemathesis against /openapi.json of a running service: no server error, every answer
allowed by the document (bounded examples, fixed seed)."""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path

import pytest

from taogate._settings import SimSettings
from taogate.testing import SimKey, Simulator
from tests.conftest import free_port
from tests.http.test_serve import SECRETS, start_service

pytestmark = pytest.mark.integration


async def test_the_service_keeps_its_openapi_document(tmp_path: Path) -> None:
    key = SimKey(app_key="60000001", secret=SECRETS["cred"], qps=100_000.0)
    async with Simulator([key], settings=SimSettings(latency_ms=(0.0, 0.0), seed=4), port=0) as sim:
        port = free_port()
        service = await start_service(tmp_path, sim, port)
        try:
            run = await asyncio.create_subprocess_exec(
                str(Path(sys.executable).with_name("schemathesis")),
                "run",
                f"http://127.0.0.1:{port}/openapi.json",
                "--checks",
                "all",
                "--header",
                f"Authorization: Bearer {SECRETS['token']}",
                "--max-examples",
                "25",
                "--seed",
                "1",
                "--request-timeout",
                "10",
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
            )
            out, _ = await asyncio.wait_for(run.communicate(), timeout=240)
        finally:
            service.send_signal(signal.SIGTERM)
            await asyncio.wait_for(service.wait(), timeout=15)
    text = out.decode(errors="replace")
    assert run.returncode == 0, text[-4000:]
    assert "passed" in text
