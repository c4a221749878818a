"""`taogate serve` for real: SIGHUP re-reads a rotated secret file in every worker."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from taogate._settings import SimSettings
from taogate.testing import SimKey, Simulator
from tests.conftest import free_port
from tests.unit.test_secret_files import write_atomically

pytestmark = pytest.mark.integration

APP_KEY = "70000002"
OLD = "sighup-test-secret-old-0001"
NEW = "sighup-test-secret-new-0002"
TOKEN = "sighup-test-client-token-0003-abcdef"


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    cfg = SimSettings(latency_ms=(0.0, 0.0), catalog_size=2_000, seed=5, absent_ratio=0.0)
    async with Simulator(
        [SimKey(app_key=APP_KEY, secret=OLD, qps=200.0)], settings=cfg, port=0
    ) as s:
        yield s


class Service:
    """``taogate serve`` in a child process, its JSON log lines collected as they come."""

    def __init__(self, proc: asyncio.subprocess.Process, port: int) -> None:
        self.proc = proc
        self.base = f"http://127.0.0.1:{port}"
        self.lines: list[dict[str, Any]] = []
        self.raw: list[str] = []
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.proc.stderr is not None
        async for line in self.proc.stderr:
            text = line.decode(errors="replace")
            self.raw.append(text)
            if text.startswith("{"):
                self.lines.append(json.loads(text))

    def count(self, msg: str) -> int:
        return sum(1 for line in self.lines if line["msg"] == msg)

    async def until_logged(self, msg: str, times: int) -> None:
        async with asyncio.timeout(30):
            while self.count(msg) < times:
                await asyncio.sleep(0.02)

    async def stop(self) -> None:
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
            await asyncio.wait_for(self.proc.wait(), timeout=20)
        await self._reader


async def start(tmp_path: Path, sim: Simulator, secret_file: Path, workers: int) -> Service:
    port = free_port()
    config = tmp_path / "taogate.toml"
    config.write_text(
        f"""
[upstream]
url = "{sim.url}"

[[credentials]]
app_key = "{APP_KEY}"
secret_file = "{secret_file}"
qps = 100

[secrets]
poll_s = 0   # only SIGHUP (or a refused call) re-reads the file

[server]
port = {port}

[[server.clients]]
name = "site"
token = "{TOKEN}"
""",
        encoding="utf-8",
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "taogate.cli",
        "serve",
        "--config",
        str(config),
        "--workers",
        str(workers),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "COLUMNS": "200"},
    )
    service = Service(proc, port)
    try:
        await service.until_logged("taogate ready", workers)  # every worker, not just one
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise AssertionError("the service did not start: " + "".join(service.raw)[-2000:]) from None
    return service


@pytest.mark.parametrize("workers", [1, 2])
async def test_sighup_rereads_a_rotated_secret_file(
    tmp_path: Path, sim: Simulator, workers: int
) -> None:
    secret_file = tmp_path / "key"
    write_atomically(secret_file, OLD + "\n")
    service = await start(tmp_path, sim, secret_file, workers)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    ids = sim.catalog.ids()[:60]
    try:
        async with httpx.AsyncClient(base_url=service.base, headers=auth) as client:
            assert (await client.get(f"/v1/items/{ids[0]}")).status_code == 200
            # the platform issues a new secret (both work for now); the store gets it
            sim.set_secret(APP_KEY, NEW, keep_old_s=600)
            write_atomically(secret_file, NEW + "\n")
            service.proc.send_signal(signal.SIGHUP)
            await service.until_logged("credential 700…002 secret rotated", workers)
            sim.set_secret(APP_KEY, NEW)  # the old secret stops working
            for num_iid in ids[1:]:
                resp = await client.get(f"/v1/items/{num_iid}?max_age=0&allow_stale=false")
                assert resp.status_code == 200, resp.text
            metrics = (await client.get("/metrics")).text
            assert 'taogate_secret_rotations_total{credential="700…002"} 1.0' in metrics
    finally:
        await service.stop()
    assert service.proc.returncode in (0, -signal.SIGTERM)
    assert sim.stats()["keys"][APP_KEY]["errors"] == 0  # nothing was signed with a dead secret
    rotated = [line for line in service.lines if line["msg"].endswith("secret rotated")]
    assert {line["trigger"] for line in rotated} == {"reload"}
    text = "".join(service.raw)
    for secret in (OLD, NEW, TOKEN):
        assert secret not in text
