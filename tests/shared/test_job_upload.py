"""A 20 MB job body over real HTTP does not stall the service's other requests.

``taogate serve`` on loopback with Redis and the simulator; while a text body of 952,380 ids
uploads and is parsed, ``/healthz`` is polled. A correctness check, not a benchmark (that is
``bench/job_upload.py``): no poll may take a second, which a body parsed in one piece on the
event loop did (3.3 s for 21.6 MB).
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from taogate._settings import SimSettings
from taogate.testing import SimKey, Simulator
from tests.conftest import RedisServer, free_port, start_serve

pytestmark = pytest.mark.integration

KEY = SimKey(app_key="95000001", secret="upload-test-secret", qps=50.0)
TOKEN = "upload-test-token-000000000000000001"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    cfg = SimSettings(latency_ms=(5.0, 20.0), catalog_size=1_000, seed=3)
    async with Simulator([KEY], settings=cfg, port=0) as simulator:
        yield simulator


def twenty_megabytes() -> tuple[bytes, int]:
    """A text body of distinct 20-character ids, one a line: 20,000,000 bytes."""
    n = 20_000_000 // 21
    return b"".join(b"%020d\n" % (10**19 + i) for i in range(n)), n


async def test_healthz_answers_while_a_20_mb_job_body_uploads(
    tmp_path: Path, sim: Simulator, redis_server: RedisServer
) -> None:
    body, n = twenty_megabytes()
    port = free_port()
    config = tmp_path / "taogate.toml"
    config.write_text(
        f'[upstream]\nurl = "{sim.url}"\n\n[[credentials]]\napp_key = "{KEY.app_key}"\n'
        f'secret = "{KEY.secret}"\nqps = 50\n\n[redis]\nurl = "{redis_server.url}"\n'
        f'prefix = "u{os.urandom(3).hex()}"\n\n[server]\nport = {port}\nlog_level = "warning"\n\n'
        f'[[server.clients]]\nname = "site"\ntoken = "{TOKEN}"\nrate = 1000000\n',
        encoding="utf-8",
    )
    server = await start_serve(config, port)
    base = f"http://127.0.0.1:{port}"
    polls: list[float] = []
    try:
        async with (
            httpx.AsyncClient(timeout=60) as uploader,
            httpx.AsyncClient(timeout=10) as prober,
        ):
            upload = asyncio.create_task(
                uploader.post(
                    f"{base}/v1/jobs", content=body, headers={"content-type": "text/plain", **AUTH}
                )
            )
            while not upload.done() and len(polls) < 5_000:  # bounded: about 100 s at most
                started = time.perf_counter()
                assert (await prober.get(f"{base}/healthz")).status_code == 200
                polls.append(time.perf_counter() - started)
                await asyncio.sleep(0.02)
            resp = await upload
            assert resp.status_code == 202, resp.text
            job = resp.json()
            await uploader.delete(f"{base}/v1/jobs/{job['job']}", headers=AUTH)
    finally:
        server.send_signal(signal.SIGTERM)
        await asyncio.wait_for(server.wait(), timeout=15)
    assert job["total"] == n
    assert len(polls) >= 5, polls  # the probes ran while the body was in flight
    assert max(polls) < 1.0, f"slowest /healthz took {max(polls):.3f} s"
    print(f"\n{len(polls)} polls, slowest {max(polls) * 1000:.1f} ms")
