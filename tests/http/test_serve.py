"""`taogate serve` for real: uvicorn on loopback, graceful shutdown, logs without secrets."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from taogate._settings import SimSettings
from taogate.testing import SimKey, Simulator
from tests.conftest import free_port, start_serve

pytestmark = pytest.mark.integration

SECRETS = {
    "cred": "serve-test-credential-secret",
    "token": "serve-test-admin-client-token-xyz-0001",
}
KEY = SimKey(app_key="60000001", secret=SECRETS["cred"], qps=100.0)


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    async with Simulator(
        [KEY], settings=SimSettings(latency_ms=(300.0, 300.0), seed=4), port=0
    ) as s:
        yield s


async def start_service(tmp_path: Path, sim: Simulator, port: int) -> asyncio.subprocess.Process:
    config = tmp_path / "taogate.toml"
    config.write_text(
        f"""
[upstream]
url = "{sim.url}"

[[credentials]]
app_key = "{KEY.app_key}"
secret = "{SECRETS["cred"]}"
qps = 100
account = "promoter-a"

[[accounts]]
name = "promoter-a"
qps = 40

[server]
port = {port}
access_log = true
log_level = "debug"

[[server.clients]]
name = "ops"
token = "{SECRETS["token"]}"
admin = true
""",
        encoding="utf-8",
    )
    env = {**os.environ, "COLUMNS": "200"}
    return await start_serve(config, port, output=asyncio.subprocess.PIPE, env=env)


async def test_serve_answers_shuts_down_gracefully_and_logs_no_secret(
    tmp_path: Path, sim: Simulator
) -> None:
    port = free_port()
    proc = await start_service(tmp_path, sim, port)
    base = f"http://127.0.0.1:{port}"
    auth = {"Authorization": f"Bearer {SECRETS['token']}"}
    num_iid = sim.catalog.ids()[0]
    try:
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{base}/v1/items/{num_iid}", headers=auth) as resp:
                assert resp.status in (200, 404)
            async with session.get(
                f"{base}/v1/items/1", headers={"Authorization": "Bearer x"}
            ) as r:
                assert r.status == 401
            async with session.get(f"{base}/metrics") as resp:
                text = await resp.text()
            assert "taogate_http_requests_total" in text
            assert 'credential="600…001"' in text
            # a request in flight when SIGTERM arrives still gets its answer
            slow = asyncio.create_task(
                session.get(f"{base}/v1/items/{sim.catalog.ids()[1]}", headers=auth)
            )
            await asyncio.sleep(0.1)
            proc.send_signal(signal.SIGTERM)
            resp = await slow
            assert resp.status in (200, 404)
            resp.release()
        await asyncio.wait_for(proc.wait(), timeout=15)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    # uvicorn re-raises the signal once its graceful shutdown is done: -15 is a clean exit
    assert proc.returncode in (0, -signal.SIGTERM)
    assert proc.stderr is not None
    stderr = (await proc.stderr.read()).decode()
    lines = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    assert any(line["msg"] == "taogate ready" for line in lines)
    assert any(line["msg"] == "taogate stopped" for line in lines)  # the lifespan ended
    assert any(line.get("status") == 401 for line in lines)  # the access log ran
    assert all("request_id" in line for line in lines if line["logger"] == "taogate.access")
    for secret in SECRETS.values():
        assert secret not in stderr


async def test_keys_command_reads_a_running_service(tmp_path: Path, sim: Simulator) -> None:
    port = free_port()
    proc = await start_service(tmp_path, sim, port)
    try:
        keys = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "taogate.cli",
            "keys",
            "--config",
            str(tmp_path / "taogate.toml"),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env={**os.environ, "COLUMNS": "200"},
        )
        out, err = await asyncio.wait_for(keys.communicate(), timeout=30)
    finally:
        proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(proc.wait(), timeout=15)
    assert keys.returncode == 0, err.decode()
    text = out.decode()
    lines = text.splitlines()
    row = next(line for line in lines if line.startswith("600…001"))
    assert row.split()[:4] == ["600…001", "promoter-a", "default", "active"]
    header = next(line for line in lines if line.startswith("key "))
    assert "code 11" in header
    assert "day resets in" in header
    assert "limits shared by keys" in text
    shared = [line.split()[:3] for line in lines if line.startswith(("account ", "method "))]
    assert shared == [["account", "promoter-a", "1"], ["method", "taobao.tbk.item.info.get", "1"]]
    for secret in SECRETS.values():
        assert secret not in text
