"""Shared fixtures: redis-server instances the suite starts itself, on free loopback ports.

The suite never talks to a Redis it did not start (the machine's own on 6379 included): each
server here runs with no persistence in a temporary directory and is ended by its PID.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from taogate import Gateway
from taogate.testing._redis import RedisServer, free_port, redis_ping

__all__ = ["RedisCluster", "RedisSentinel", "RedisServer", "free_port", "start_serve"]


async def start_serve(
    config: Path,
    port: int,
    *,
    output: int = asyncio.subprocess.DEVNULL,
    env: dict[str, str] | None = None,
    workers: int = 1,
) -> asyncio.subprocess.Process:
    """``taogate serve --config config`` in a child process, once /readyz answers 200.

    ``output`` is where its stdout and stderr go (``asyncio.subprocess.PIPE`` to read them).
    """
    import httpx

    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "taogate.cli",
        "serve",
        "--config",
        str(config),
        "--workers",
        str(workers),
        stdout=output,
        stderr=output,
        env=env,
    )
    async with httpx.AsyncClient() as client:
        for _ in range(300):  # 30 s: a loaded machine starts the service slowly
            if proc.returncode is not None:
                raise RuntimeError(f"taogate serve exited with {proc.returncode} before ready")
            try:
                if (await client.get(f"http://127.0.0.1:{port}/readyz")).status_code == 200:
                    return proc
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.1)
    if proc.returncode is None:
        proc.kill()
    await proc.wait()
    raise RuntimeError(f"taogate serve did not become ready on port {port}")


def free_cluster_port() -> int:
    """A free port whose cluster-bus port (port + 10000) is free too and valid."""
    for _ in range(100):
        port = free_port()
        if port + 10000 > 65535:
            continue
        try:
            with socket.socket() as s:
                s.bind(("127.0.0.1", port + 10000))
        except OSError:
            continue
        return port
    raise RuntimeError("no free port pair for a cluster node")


def _need_redis() -> None:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed (make setup installs it)")


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One server for the session; tests use distinct key prefixes or flush it themselves."""
    _need_redis()
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A server of the test's own, which the test may stop and start again."""
    _need_redis()
    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.stop()


@dataclass
class RedisCluster:
    """Three master nodes the suite started, joined into one cluster."""

    nodes: list[RedisServer]

    @property
    def url(self) -> str:
        return self.nodes[0].url


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisCluster]:
    """A real 3-node Redis Cluster on free ports (no replicas), for the cluster tests."""
    _need_redis()
    cli = shutil.which("redis-cli")
    if cli is None:
        pytest.skip("redis-cli is not installed")
    nodes = []
    for _ in range(3):
        directory = tmp_path_factory.mktemp("cluster")
        port = free_cluster_port()
        node = RedisServer(
            directory,
            port=port,
            extra=(
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                f"nodes-{port}.conf",
                "--cluster-node-timeout",
                "2000",
            ),
        )
        node.start()
        nodes.append(node)
    try:
        subprocess.run(
            [
                cli,
                "--cluster",
                "create",
                *(f"127.0.0.1:{n.port}" for n in nodes),
                "--cluster-replicas",
                "0",
                "--cluster-yes",
            ],
            check=True,
            capture_output=True,
            timeout=30,
        )
        deadline = time.monotonic() + 20
        while True:
            info = subprocess.run(
                [cli, "-p", str(nodes[0].port), "cluster", "info"],
                capture_output=True,
                text=True,
                timeout=5,
            ).stdout
            if "cluster_state:ok" in info:
                break
            if time.monotonic() > deadline:
                raise RuntimeError("the test cluster did not become ready")
            time.sleep(0.1)
        yield RedisCluster(nodes)
    finally:
        for node in nodes:
            node.stop()


@dataclass
class RedisSentinel:
    """A master and one Sentinel watching it, both started by the suite."""

    master: RedisServer
    sentinel_port: int
    proc: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"redis+sentinel://127.0.0.1:{self.sentinel_port}/taogate-test"


@pytest.fixture(scope="session")
def redis_sentinel(
    redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RedisSentinel]:
    """A Sentinel (``redis-server --sentinel``) in front of the session's server."""
    binary = shutil.which("redis-server")
    assert binary is not None
    directory = tmp_path_factory.mktemp("sentinel")
    port = free_port()
    config = directory / "sentinel.conf"
    config.write_text(
        f"port {port}\nbind 127.0.0.1\ndir {directory}\n"
        f"sentinel monitor taogate-test 127.0.0.1 {redis_server.port} 1\n"
        "sentinel down-after-milliseconds taogate-test 5000\n",
        encoding="utf-8",
    )
    proc = subprocess.Popen(
        [binary, str(config), "--sentinel"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 10
        while not redis_ping(port):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("redis sentinel did not start")
            time.sleep(0.05)
        yield RedisSentinel(redis_server, port, proc)
    finally:
        proc.terminate()
        proc.wait(timeout=10)


async def flood_gateway(gw: Gateway, ids: list[str], callers: int = 30) -> None:
    """Look ``ids`` up through ``gw`` from ``callers`` concurrent callers, 20 ids a lookup
    (a backlog that keeps every key busy), within a minute."""

    async def caller(chunk: list[str]) -> None:
        for i in range(0, len(chunk), 20):
            await gw.get_many(chunk[i : i + 20], deadline_s=20.0)

    await asyncio.wait_for(
        asyncio.gather(*(caller(ids[i::callers]) for i in range(callers))), timeout=60
    )
