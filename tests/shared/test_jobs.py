"""Bulk jobs against a real Redis and the simulator: rows, cancel, bad files, a dead worker."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from taogate import Service, Settings
from taogate._settings import SimSettings
from taogate.http import create_app
from taogate.testing import SimKey, Simulator
from tests.conftest import RedisServer, free_port, start_serve

pytestmark = pytest.mark.integration

KEY = SimKey(app_key="93000001", secret="jobs-test-secret", qps=100.0)
AUTH = {"Authorization": "Bearer jobs-test-client-token-0001-abcdefghij"}


def settings(sim: Simulator, redis_url: str, prefix: str, **jobs: Any) -> Settings:
    return Settings(
        upstream={"url": sim.url},
        credentials=[{"app_key": KEY.app_key, "secret": KEY.secret, "qps": KEY.qps}],
        redis={"url": redis_url, "prefix": prefix},
        server={"clients": [{"name": "ops", "token": AUTH["Authorization"][7:], "rate": 1e6}]},
        jobs={"claim_idle_s": 1.0, **jobs},
    )


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    cfg = SimSettings(latency_ms=(5.0, 20.0), catalog_size=20_000, seed=13)
    async with Simulator([KEY], settings=cfg, port=0) as simulator:
        yield simulator


async def service(s: Settings) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(s)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://taogate") as client:
            yield client


async def wait_done(client: httpx.AsyncClient, job: str, within_s: float = 60) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    end = loop.time() + within_s
    while loop.time() < end:
        status = (await client.get(f"/v1/jobs/{job}", headers=AUTH)).json()
        if status["state"] in ("done", "failed", "cancelled"):
            return dict(status)
        await asyncio.sleep(0.1)
    raise AssertionError(f"job {job} did not finish: {status}")


async def test_a_job_gives_one_row_per_distinct_id(
    sim: Simulator, redis_server: RedisServer
) -> None:
    ids = sim.catalog.ids()[:500]
    prefix = "j" + os.urandom(3).hex()
    async for client in service(settings(sim, redis_server.url, prefix, result_ttl_s=3600)):
        body = {"ids": [*ids, *ids[:50], "999999999999"]}
        resp = await client.post("/v1/jobs", json=body, headers=AUTH)
        assert resp.status_code == 202, resp.text
        submitted = resp.json()
        assert submitted["total"] == 501  # duplicates counted once
        assert submitted["estimate"]["upstream_calls"] == 13  # ceil(501 / 40)
        assert resp.headers["location"] == f"/v1/jobs/{submitted['job']}"
        status = await wait_done(client, submitted["job"])
        assert status["state"] == "done"
        assert status["done"] == 501
        rows = [
            orjson.loads(x)
            for x in (
                await client.get(f"/v1/jobs/{submitted['job']}/results", headers=AUTH)
            ).content.splitlines()
        ]
        csv_text = (
            await client.get(f"/v1/jobs/{submitted['job']}/results?format=csv", headers=AUTH)
        ).text
    async with Redis.from_url(redis_server.url) as r:
        # done chunks are deleted from the stream; the finished job expires after result_ttl_s
        assert await r.xlen(f"{{{prefix}:jobs}}:stream") == 0
        tag = f"{{{prefix}:j:{submitted['job']}}}"
        for key in (f"{tag}:results", f"{tag}:meta"):
            assert 3590 < await r.ttl(key) <= 3600
    assert len(rows) == 501
    assert len({r["num_iid"] for r in rows}) == 501
    truth = sim.truth(ids)
    by_id = {r["num_iid"]: r for r in rows}
    for num_iid in ids[:100]:
        row = by_id[num_iid]
        expected = truth[num_iid]
        if expected is None:
            assert row["status"] == "not_found"
        else:
            assert row["status"] == "found"
            assert row["item"]["final_price"] == expected["final_price"]
    assert by_id["999999999999"]["status"] == "not_found"
    assert csv_text.splitlines()[0].startswith("num_iid,status,final_price")
    assert len(csv_text.splitlines()) == 502


async def test_bad_files_name_the_line(sim: Simulator, redis_server: RedisServer) -> None:
    s = settings(sim, redis_server.url, "j" + os.urandom(3).hex(), max_ids=3)
    text = {"content-type": "text/plain", **AUTH}
    async for client in service(s):
        empty = await client.post("/v1/jobs", content=b"\n\n", headers=text)
        bad = await client.post("/v1/jobs", content=b"123\n456\nnot an id\n", headers=text)
        many = await client.post("/v1/jobs", content=b"1\n2\n3\n4\n", headers=text)
        ok = await client.post("/v1/jobs", content=b"1\n\n2\n1\n", headers=text)
    assert empty.status_code == 400
    assert "no ids" in empty.json()["detail"]
    assert bad.status_code == 400
    assert bad.json()["line"] == 3
    assert "line 3" in bad.json()["detail"]
    assert many.status_code == 400
    assert many.json()["line"] == 4
    assert ok.status_code == 202
    assert ok.json()["total"] == 2


async def test_an_idle_worker_waits_quietly_and_starts_at_once(
    sim: Simulator, redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    """The worker blocks on the stream (longer than the shared client's socket timeout)
    without errors, and a job submitted while it waits is picked up within the block."""
    caplog.set_level(logging.DEBUG, logger="taogate.jobs")
    async for client in service(settings(sim, redis_server.url, "j" + os.urandom(3).hex())):
        await asyncio.sleep(2.5)  # more than two blocking reads
        loop = asyncio.get_running_loop()
        start = loop.time()
        job = await client.post("/v1/jobs", json={"ids": sim.catalog.ids()[:10]}, headers=AUTH)
        status = await wait_done(client, job.json()["job"], within_s=10)
        took = loop.time() - start
    assert status["state"] == "done"
    assert took < 1.5  # one block at most, not a back-off after an error
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []


async def test_the_worker_recreates_a_lost_consumer_group(
    sim: Simulator, redis_server: RedisServer
) -> None:
    """Redis restarted empty (here: the stream deleted): the group is gone, and the worker
    makes it again instead of failing with NOGROUP forever."""
    prefix = "j" + os.urandom(3).hex()
    async for client in service(settings(sim, redis_server.url, prefix)):
        first = await client.post("/v1/jobs", json={"ids": sim.catalog.ids()[:5]}, headers=AUTH)
        assert (await wait_done(client, first.json()["job"]))["state"] == "done"
        async with Redis.from_url(redis_server.url) as r:
            await r.delete(f"{{{prefix}:jobs}}:stream")
        await asyncio.sleep(1.5)  # the worker's blocking read meets the missing group
        job = await client.post("/v1/jobs", json={"ids": sim.catalog.ids()[5:45]}, headers=AUTH)
        status = await wait_done(client, job.json()["job"], within_s=15)
    assert status["state"] == "done"
    assert status["done"] == 40


async def test_a_slow_chunk_stays_with_its_worker(
    sim: Simulator, redis_server: RedisServer
) -> None:
    """Lookups that outlast claim_idle_s: the owner keeps the chunk, so no other replica
    claims it and fetches its ids a second time."""
    sim.set_fault("slow", 60.0, extra_latency_ms=1500)
    s = settings(sim, redis_server.url, "j" + os.urandom(3).hex(), claim_idle_s=0.5)
    ids = sim.catalog.ids()[7000:7080]  # two chunks
    async with Service(s) as a, Service(s) as b:
        assert a.jobs is not None
        assert b.jobs is not None
        job = await a.jobs.submit(ids)
        loop = asyncio.get_running_loop()
        end = loop.time() + 30
        while (status := await b.jobs.status(job)) is not None and status.state != "done":
            assert loop.time() < end, status
            await asyncio.sleep(0.1)
    assert status is not None
    assert status.done == 80
    assert sim.stats()["totals"]["items_requested"] == 80  # every id fetched once


async def test_cancel_stops_the_work(sim: Simulator, redis_server: RedisServer) -> None:
    sim.set_fault("slow", 60.0, extra_latency_ms=300)
    ids = sim.catalog.ids()[:4000]
    s = settings(sim, redis_server.url, "j" + os.urandom(3).hex(), concurrency=2)
    async for client in service(s):
        job = (await client.post("/v1/jobs", json={"ids": ids}, headers=AUTH)).json()["job"]
        await asyncio.sleep(1.0)
        cancelled = (await client.delete(f"/v1/jobs/{job}", headers=AUTH)).json()
        await asyncio.sleep(1.5)
        later = (await client.get(f"/v1/jobs/{job}", headers=AUTH)).json()
        await asyncio.sleep(1.0)
        last = (await client.get(f"/v1/jobs/{job}", headers=AUTH)).json()
    assert cancelled["state"] == "cancelled"
    assert later["state"] == "cancelled"
    assert later["done"] < 4000
    assert last["done"] == later["done"]  # nothing more was worked


async def test_jobs_without_redis_are_501(sim: Simulator) -> None:
    s = Settings(
        upstream={"url": sim.url},
        credentials=[{"app_key": KEY.app_key, "secret": KEY.secret, "qps": KEY.qps}],
    )
    async for client in service(s):
        resp = await client.post("/v1/jobs", json={"ids": ["1"]})
    assert resp.status_code == 501


async def test_a_dead_worker_s_chunks_are_finished_by_another(
    tmp_path: Path, sim: Simulator, redis_server: RedisServer
) -> None:
    """Kill a replica mid-job: the job still ends with exactly one row per id."""
    prefix = "j" + os.urandom(3).hex()
    sim.set_fault("slow", 120.0, extra_latency_ms=200)
    procs = []
    ports = []
    for n in range(2):
        port = free_port()
        config = tmp_path / f"r{n}.toml"
        config.write_text(
            f'[upstream]\nurl = "{sim.url}"\n\n[[credentials]]\napp_key = "{KEY.app_key}"\n'
            f'secret = "{KEY.secret}"\nqps = 100\n\n[redis]\nurl = "{redis_server.url}"\n'
            f'prefix = "{prefix}"\n\n[jobs]\nclaim_idle_s = 1.0\nconcurrency = 4\n\n'
            f'[server]\nport = {port}\nlog_level = "warning"\n\n[[server.clients]]\n'
            f'name = "ops"\ntoken = "{AUTH["Authorization"][7:]}"\n',
            encoding="utf-8",
        )
        procs.append(await start_serve(config, port))
        ports.append(port)
    try:
        async with httpx.AsyncClient(timeout=10) as client:
            ids = sim.catalog.ids()[5000:7000]
            a, b = (f"http://127.0.0.1:{p}" for p in ports)
            job = (await client.post(f"{a}/v1/jobs", json={"ids": ids}, headers=AUTH)).json()["job"]
            await asyncio.sleep(1.5)
            procs[0].send_signal(signal.SIGKILL)  # dies with chunks in progress
            await procs[0].wait()
            loop = asyncio.get_running_loop()
            end = loop.time() + 90
            while loop.time() < end:
                status = (await client.get(f"{b}/v1/jobs/{job}", headers=AUTH)).json()
                if status["state"] != "running" and status["state"] != "queued":
                    break
                await asyncio.sleep(0.2)
            rows = [
                orjson.loads(x)
                for x in (
                    await client.get(f"{b}/v1/jobs/{job}/results", headers=AUTH)
                ).content.splitlines()
            ]
    finally:
        for proc in procs:
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
                await asyncio.wait_for(proc.wait(), timeout=15)
    assert status["state"] == "done", status
    assert status["done"] == 2000
    assert len(rows) == 2000
    assert {r["num_iid"] for r in rows} == set(ids)


async def test_jobs_cli_submit_wait_and_results(
    tmp_path: Path, sim: Simulator, redis_server: RedisServer
) -> None:
    port = free_port()
    config = tmp_path / "taogate.toml"
    config.write_text(
        f'[upstream]\nurl = "{sim.url}"\n\n[[credentials]]\napp_key = "{KEY.app_key}"\n'
        f'secret = "{KEY.secret}"\nqps = 100\n\n[redis]\nurl = "{redis_server.url}"\n'
        f'prefix = "j{os.urandom(3).hex()}"\n\n[server]\nport = {port}\nlog_level = "warning"\n\n'
        f'[[server.clients]]\nname = "ops"\ntoken = "{AUTH["Authorization"][7:]}"\nadmin = true\n',
        encoding="utf-8",
    )
    ids_file = tmp_path / "ids.txt"
    ids_file.write_text("\n".join(sim.catalog.ids()[:120]) + "\n", encoding="utf-8")
    server = await start_serve(config, port)
    try:

        async def cli(*args: str) -> str:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "taogate.cli",
                "jobs",
                *args,
                "--config",
                str(config),
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env={**os.environ, "COLUMNS": "200"},
            )
            out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
            assert proc.returncode == 0, err.decode()
            return out.decode()

        submitted = await cli("submit", str(ids_file), "--wait")
        job = submitted.split()[1].rstrip(":")
        rows = (await cli("results", job)).splitlines()
        status = await cli("status", job)
    finally:
        server.send_signal(signal.SIGTERM)
        await asyncio.wait_for(server.wait(), timeout=15)
    assert "120 ids" in submitted
    assert "done:" in submitted
    assert len(rows) == 120
    assert '"state": "done"' in status


async def test_a_chunk_whose_recording_fails_once_finishes_without_waiting_for_a_claim(
    sim: Simulator, redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Redis refuses the recording of a looked-up chunk once (no connection free in a busy
    pool): the worker records it again at once, not after claim_idle_s, and fetches nothing
    twice."""
    s = settings(sim, redis_server.url, "j" + os.urandom(3).hex(), claim_idle_s=60.0)
    ids = sim.catalog.ids()[9000:9040]  # one chunk
    async with Service(s) as svc:
        assert svc.jobs is not None
        store = svc.jobs
        record = store.record
        failures = [RedisConnectionError("No connection available.")]

        async def flaky(job: str, rows: Any) -> None:
            if failures:
                raise failures.pop()
            await record(job, rows)

        monkeypatch.setattr(store, "record", flaky)
        job = await store.submit(ids)
        loop = asyncio.get_running_loop()
        end = loop.time() + 15  # far less than claim_idle_s
        while (status := await store.status(job)) is not None and status.state != "done":
            assert loop.time() < end, status
            await asyncio.sleep(0.05)
    assert not failures  # the failure did happen
    assert status is not None
    assert status.done == 40
    assert sim.stats()["totals"]["items_requested"] == 40  # every id fetched once
