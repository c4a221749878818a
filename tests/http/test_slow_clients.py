"""Slow and hostile clients over real HTTP: uvicorn on loopback with the service's protocol.

A body sent a byte at a time is answered 408 and closed within ``[server] body_timeout_s`` and
holds no in-flight slot meanwhile; headers sent slowly are answered 408 and closed within
``header_timeout_s``; headers past ``max_header_bytes`` are answered 431; a source that keeps
failing authentication is answered 429.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import uvicorn

from taogate import Settings
from taogate.http import create_app
from taogate.http._protocol import ServiceConfig
from taogate.http._serve import connection_limits
from taogate.testing import Simulator
from tests.conftest import free_port, start_serve
from tests.http.conftest import KEYS, TOKENS, make_settings

pytestmark = pytest.mark.integration

AUTH = f"Authorization: Bearer {TOKENS['site']}\r\n".encode()


@contextlib.asynccontextmanager
async def running(settings: Settings) -> AsyncIterator[int]:
    """The app for ``settings`` served by uvicorn on a loopback port, as ``taogate serve`` does."""
    port = free_port()
    config = ServiceConfig(
        create_app(settings),
        limits=connection_limits(settings.server),
        host="127.0.0.1",
        port=port,
        lifespan="on",
        log_config=None,
        access_log=False,
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    for _ in range(200):
        if server.started or task.done():
            break
        await asyncio.sleep(0.02)
    assert server.started, "uvicorn did not start"
    try:
        yield port
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, timeout=10)


async def read_answer(reader: asyncio.StreamReader, wait_s: float) -> tuple[bytes, bool]:
    """Everything the server sends within ``wait_s``, and whether it then closed.

    A reset counts as closed: the server closes with the slow client's bytes still unread.
    """
    data = b""
    try:
        async with asyncio.timeout(wait_s):
            while chunk := await reader.read(65536):
                data += chunk
    except TimeoutError:
        return data, False
    except ConnectionError:  # reset, or a broken pipe seen by a write
        pass
    return data, True


def status_of(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1])


def problem_of(answer: bytes) -> dict[str, Any]:
    doc: dict[str, Any] = orjson.loads(answer.partition(b"\r\n\r\n")[2])
    return doc


async def test_a_body_sent_a_byte_a_second_is_closed_and_holds_no_slot(sim: Simulator) -> None:
    settings = make_settings(sim, body_timeout_s=1.0, max_in_flight=1)
    async with running(settings) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(
            b"POST /v1/items:batch HTTP/1.1\r\nHost: t\r\n"
            + AUTH
            + b"Content-Type: application/json\r\nContent-Length: 200\r\n\r\n"
        )
        started = time.monotonic()

        async def trickle() -> None:
            with contextlib.suppress(ConnectionError):
                for byte in b'{"ids": ["1", "2", "3"]}':  # bounded: 24 bytes at most
                    writer.write(bytes([byte]))
                    await writer.drain()
                    await asyncio.sleep(1.0)

        trickling = asyncio.create_task(trickle())
        try:
            await asyncio.sleep(0.3)
            # the only in-flight slot is free while the slow body arrives
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
                headers = {"Authorization": f"Bearer {TOKENS['site']}"}
                num_iid = sim.catalog.ids()[0]
                resp = await client.get(f"/v1/items/{num_iid}", headers=headers)
                assert resp.status_code in (200, 404), resp.text
            answer, closed = await read_answer(reader, 5.0)
            elapsed = time.monotonic() - started
        finally:
            trickling.cancel()
            writer.close()
    assert closed
    assert status_of(answer) == 408
    assert b"connection: close" in answer.lower()
    assert problem_of(answer)["type"] == "urn:taogate:problem:request-timeout"
    assert 0.9 <= elapsed < 3.0


async def test_headers_sent_slowly_are_answered_408_and_closed(sim: Simulator) -> None:
    settings = make_settings(sim, header_timeout_s=1.0)
    async with running(settings) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        started = time.monotonic()

        async def trickle() -> None:
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: t\r\n")
            with contextlib.suppress(ConnectionError):
                for _ in range(20):  # a header a third of a second, never the blank line
                    writer.write(b"X-Slow: 1\r\n")
                    await writer.drain()
                    await asyncio.sleep(0.3)

        trickling = asyncio.create_task(trickle())
        try:
            answer, closed = await read_answer(reader, 5.0)
            elapsed = time.monotonic() - started
        finally:
            trickling.cancel()
            writer.close()
        assert closed
        assert status_of(answer) == 408
        assert problem_of(answer)["type"] == "urn:taogate:problem:request-timeout"
        assert 0.9 <= elapsed < 3.0

        # a connection that never sends a byte is closed too, without an answer
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        answer, closed = await read_answer(reader, 5.0)
        writer.close()
        assert closed
        assert answer == b""

        # a keep-alive connection's second request has its own deadline
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
        await asyncio.sleep(0.7)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
        await asyncio.sleep(0.7)  # past the first deadline had it kept running
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        answer, closed = await read_answer(reader, 5.0)
        writer.close()
        assert closed
        assert answer.count(b"HTTP/1.1 200 OK") == 3


async def test_headers_past_the_limit_are_answered_431(sim: Simulator) -> None:
    settings = make_settings(sim, max_header_bytes=2048)
    async with running(settings) as port:
        # many headers, all at once
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        many = b"".join(b"X-Filler-%d: %s\r\n" % (i, b"v" * 40) for i in range(100))
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: t\r\n" + many + b"\r\n")
        answer, closed = await read_answer(reader, 5.0)
        writer.close()
        assert closed
        assert status_of(answer) == 431
        assert problem_of(answer)["type"] == "urn:taogate:problem:headers-too-large"

        # one header line that never ends, sent in pieces: refused before it is complete
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        answering = asyncio.create_task(read_answer(reader, 5.0))
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: t\r\nX-Endless: ")
        with contextlib.suppress(ConnectionError):
            for _ in range(8):  # bounded: 8 KiB at most
                writer.write(b"v" * 1024)
                await writer.drain()
                await asyncio.sleep(0.05)
        answer, closed = await answering
        writer.close()
        assert closed
        assert status_of(answer) == 431

        # headers within the limit are served
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            resp = await client.get("/healthz", headers={"X-Filler": "v" * 1000})
            assert resp.status_code == 200


async def test_a_source_that_keeps_failing_authentication_is_answered_429(
    sim: Simulator,
) -> None:
    settings = make_settings(sim, auth_failures_per_minute=3)
    num_iid = sim.catalog.ids()[0]
    async with (
        running(settings) as port,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client,
    ):
        wrong = {"Authorization": "Bearer " + "w" * 40}
        statuses = [
            (await client.get(f"/v1/items/{num_iid}", headers=wrong)).status_code for _ in range(3)
        ]
        assert statuses == [401, 401, 401]
        resp = await client.get(f"/v1/items/{num_iid}", headers=wrong)
        assert resp.status_code == 429
        assert resp.json()["type"] == "urn:taogate:problem:too-many-auth-failures"
        assert int(resp.headers["Retry-After"]) >= 1
        # no header at all is a failure too; the Starlette routes count the same way
        resp = await client.post("/v1/items:batch", json={"ids": [num_iid]})
        assert resp.status_code == 429
        # a client with a valid token from the same address is not locked out
        good = {"Authorization": f"Bearer {TOKENS['site']}"}
        resp = await client.get(f"/v1/items/{num_iid}", headers=good)
        assert resp.status_code in (200, 404)


async def test_taogate_serve_runs_the_guarded_protocol(sim: Simulator, tmp_path: Path) -> None:
    """The limits reach the service ``taogate serve`` runs (one worker and two)."""
    key = KEYS[0]
    for workers in (1, 2):
        port = free_port()
        config = tmp_path / f"taogate-{workers}.toml"
        config.write_text(
            f'[upstream]\nurl = "{sim.url}"\n\n'
            f'[[credentials]]\napp_key = "{key.app_key}"\nsecret = "{key.secret}"\n\n'
            f"[server]\nport = {port}\nmax_header_bytes = 1024\nheader_timeout_s = 1\n\n"
            f'[[server.clients]]\nname = "site"\ntoken = "{TOKENS["site"]}"\n',
            encoding="utf-8",
        )
        proc = await start_serve(config, port, workers=workers)
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: t\r\nX-Big: " + b"v" * 2000 + b"\r\n\r\n")
            answer, closed = await read_answer(reader, 5.0)
            writer.close()
            assert closed
            assert status_of(answer) == 431

            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: t\r\n")  # and never the rest
            started = time.monotonic()
            answer, closed = await read_answer(reader, 5.0)
            writer.close()
            assert closed
            assert status_of(answer) == 408
            assert time.monotonic() - started < 3.0
        finally:
            proc.send_signal(signal.SIGTERM)
            await asyncio.wait_for(proc.wait(), timeout=15)


async def test_a_body_from_an_unknown_caller_is_refused_before_it_is_read(sim: Simulator) -> None:
    """Only a known client may make the service hold a body: a 401 before any body byte."""
    settings = make_settings(sim, body_timeout_s=5.0)
    async with running(settings) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        # a 20 MB job body announced, not one byte of it sent
        writer.write(
            b"POST /v1/jobs HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer not-a-known-token\r\n"
            b"Content-Type: text/plain\r\nContent-Length: 20000000\r\n\r\n"
        )
        await writer.drain()
        started = time.monotonic()
        answer, closed = await read_answer(reader, 4.0)
        elapsed = time.monotonic() - started
        writer.close()
    assert status_of(answer) == 401, answer[:200]
    assert closed
    assert elapsed < 2.0, "answered at once, not after the body timeout"


async def test_a_body_past_its_route_s_limit_is_413_at_the_edge(sim: Simulator) -> None:
    """The edge holds a job-sized body only for job submissions; other routes their own size."""
    settings = make_settings(sim, max_body_bytes=4096)
    async with running(settings) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(
            b"POST /v1/items:batch HTTP/1.1\r\nHost: t\r\n"
            + AUTH
            + b"Content-Type: application/json\r\nContent-Length: 1000000\r\n\r\n"
        )
        await writer.drain()
        answer, closed = await read_answer(reader, 4.0)
        writer.close()
    assert status_of(answer) == 413, answer[:200]
    assert problem_of(answer)["max_bytes"] == 4096
    assert closed
