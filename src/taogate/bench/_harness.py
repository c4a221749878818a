"""What every benchmark scenario needs: a simulator process, its judge routes, latencies.

The simulator runs as its own process (``taogate sim``) so that it never shares a core or an
event loop with the gateway it judges; scenarios talk to its control routes over loopback.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import aiohttp

from taogate import Settings

__all__ = [
    "Check",
    "GatewayProcess",
    "LatencyLog",
    "SimProcess",
    "SimSpec",
    "free_port",
    "gateway_settings",
]


def free_port() -> int:
    """A loopback port that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


#: the promoter account of a :class:`SimSpec` with ``account_qps``
ACCOUNT = "bench-account"


@dataclass(frozen=True, slots=True, kw_only=True)
class SimSpec:
    """A simulator for one scenario: its keys and its ``[sim]`` values."""

    keys: int = 3
    qps: float = 10.0
    latency_ms: tuple[float, float] = (200.0, 500.0)
    catalog_size: int = 100_000
    seed: int = 7
    price_changes_per_hour: float = 1.0
    ban_s: float = 10.0
    absent_ratio: float = 0.02
    #: every key under one promoter account of this many calls/s (simulator and gateway)
    account_qps: float | None = None
    #: more ``[sim]`` TOML (``method_qps = …``, ``[sim.keys."…"]`` tables), after ``[sim]``
    sim_toml: str = ""

    def app_keys(self) -> list[tuple[str, str]]:
        """``(app_key, secret)`` pairs; bench-only secrets, generated per run."""
        return [(f"3100000{i}", f"bench-{os.getpid()}-{i}") for i in range(self.keys)]

    def credentials_toml(self) -> str:
        """The ``[[credentials]]`` (and ``[[accounts]]``) both processes are given."""
        lines = []
        if self.account_qps is not None:
            lines += ["[[accounts]]", f'name = "{ACCOUNT}"', f"qps = {self.account_qps}", ""]
        for key, secret in self.app_keys():
            lines += [
                "[[credentials]]",
                f'app_key = "{key}"',
                f'secret = "{secret}"',
                f"qps = {self.qps}",
            ]
            if self.account_qps is not None:
                lines.append(f'account = "{ACCOUNT}"')
            lines.append("")
        return "\n".join(lines) + "\n"

    def toml(self, port: int) -> str:
        lines = [self.credentials_toml()]
        low, high = self.latency_ms
        lines += [
            "[sim]",
            f"port = {port}",
            f"latency_ms = [{low}, {high}]",
            f"catalog_size = {self.catalog_size}",
            f"seed = {self.seed}",
            f"price_changes_per_hour = {self.price_changes_per_hour}",
            f"ban_s = {self.ban_s}",
            f"absent_ratio = {self.absent_ratio}",
            self.sim_toml,
        ]
        return "\n".join(lines) + "\n"


class SimProcess:
    """``taogate sim`` in a child process, with its control routes as methods."""

    def __init__(self, spec: SimSpec) -> None:
        self.spec = spec
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.url = self.base_url + "/router/rest"
        self._dir = tempfile.TemporaryDirectory(prefix="taogate-bench-")
        self._proc: asyncio.subprocess.Process | None = None
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> SimProcess:
        config = Path(self._dir.name) / "sim.toml"
        config.write_text(self.spec.toml(self.port), encoding="utf-8")
        self._proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "taogate.cli",
            "sim",
            "--config",
            str(config),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))
        deadline = time.monotonic() + 30
        while True:
            try:
                await self.stats()
                return self
            except aiohttp.ClientError:
                if self._proc.returncode is not None or time.monotonic() > deadline:
                    await self.__aexit__()
                    raise RuntimeError("the simulator did not start") from None
                await asyncio.sleep(0.1)

    async def __aexit__(self, *exc_info: object) -> None:
        if self._session is not None:
            await self._session.close()
        proc, self._proc = self._proc, None
        if proc is not None and proc.returncode is None:
            proc.send_signal(signal.SIGINT)
            try:
                await asyncio.wait_for(proc.wait(), timeout=10)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        self._dir.cleanup()

    @property
    def pid(self) -> int:
        assert self._proc is not None
        return self._proc.pid

    async def _json(self, method: str, path: str, **kw: Any) -> Any:
        assert self._session is not None
        async with self._session.request(method, self.base_url + path, **kw) as resp:
            resp.raise_for_status()
            return await resp.json()

    async def stats(self) -> dict[str, Any]:
        result: dict[str, Any] = await self._json("GET", "/_sim/stats")
        return result

    async def truth(self, ids: Sequence[str]) -> dict[str, dict[str, Any] | None]:
        out: dict[str, dict[str, Any] | None] = {}
        step = 400  # 13 characters an id: the URL stays under the server's 8 KiB line limit
        for i in range(0, len(ids), step):
            chunk = ",".join(ids[i : i + step])
            doc = await self._json("GET", "/_sim/truth", params={"ids": chunk})
            out.update(doc["items"])
        return out

    async def catalog(self, limit: int) -> list[str]:
        ids: list[str] = []
        while len(ids) < limit:  # the simulator pages at 100,000
            page = min(100_000, limit - len(ids))
            doc = await self._json(
                "GET", "/_sim/catalog", params={"offset": len(ids), "limit": page}
            )
            if not doc["ids"]:
                break
            ids.extend(doc["ids"])
        return ids

    async def fault(self, kind: str, duration_s: float, **extra: Any) -> None:
        await self._json(
            "POST", "/_sim/faults", json={"kind": kind, "duration_s": duration_s, **extra}
        )

    async def reset(self) -> None:
        await self._json("POST", "/_sim/reset")


def gateway_settings(
    sim: SimProcess,
    *,
    safety_factor: float = 0.9,
    max_age_s: float = 600.0,
    max_stale_s: float = 3600.0,
    deadline_s: float = 3.0,
    l1_max_entries: int = 200_000,
) -> Settings:
    """Settings for a gateway in front of ``sim`` with its keys."""
    return Settings(
        upstream={"url": sim.url, "timeout_s": 5.0},
        credentials=[
            {"app_key": key, "secret": secret, "qps": sim.spec.qps}
            for key, secret in sim.spec.app_keys()
        ],
        cache={
            "max_age_s": max_age_s,
            "max_stale_s": max_stale_s,
            "l1_max_entries": l1_max_entries,
        },
        limits={"safety_factor": safety_factor, "deadline_s": deadline_s},
    )


@dataclass(slots=True)
class LatencyLog:
    """Latencies in seconds, with percentiles."""

    values: list[float] = field(default_factory=list)

    def add(self, seconds: float) -> None:
        self.values.append(seconds)

    def extend(self, values: Iterable[float]) -> None:
        self.values.extend(values)

    def percentile(self, q: float) -> float | None:
        if not self.values:
            return None
        ordered = sorted(self.values)
        return ordered[min(len(ordered) - 1, int(q / 100.0 * len(ordered)))]

    def summary_ms(self) -> dict[str, float | int | None]:
        def ms(v: float | None) -> float | None:
            return None if v is None else round(v * 1000.0, 2)

        return {
            "count": len(self.values),
            "p50_ms": ms(self.percentile(50)),
            "p90_ms": ms(self.percentile(90)),
            "p99_ms": ms(self.percentile(99)),
            "max_ms": ms(max(self.values) if self.values else None),
        }


@dataclass(frozen=True, slots=True)
class Check:
    """One figure an issue names: the target, what was measured, and whether it was met."""

    name: str
    target: str
    measured: Any
    passed: bool

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "target": self.target,
            "measured": self.measured,
            "passed": self.passed,
        }


class GatewayProcess:
    """``taogate serve`` in a child process, in front of ``sim``, with one client token."""

    def __init__(
        self,
        sim: SimProcess,
        *,
        token: str,
        safety_factor: float = 0.9,
        max_age_s: float = 600.0,
        redis_url: str | None = None,
        redis_prefix: str = "tg",
        log: Path | None = None,
        log_level: str = "warning",
        extra_toml: str = "",
        admin: bool = False,
        l1_max_entries: int | None = None,
        credentials_toml: str | None = None,
    ) -> None:
        """``credentials_toml``: the ``[[credentials]]`` (and ``[[accounts]]``) to use instead
        of the simulator's keys as its spec gives them (a key assigned to an egress)."""
        self._credentials = credentials_toml
        self._extra = extra_toml
        self._l1 = "" if l1_max_entries is None else f"l1_max_entries = {l1_max_entries}\n"
        self._admin = admin
        self._log = log
        self._log_level = log_level
        self.sim = sim
        self._max_age = max_age_s
        self._redis = (
            f'[redis]\nurl = "{redis_url}"\nprefix = "{redis_prefix}"\n\n' if redis_url else ""
        )
        self.token = token
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self._safety = safety_factor
        self._dir = tempfile.TemporaryDirectory(prefix="taogate-gw-")
        self._proc: asyncio.subprocess.Process | None = None
        self._log_file: IO[bytes] | None = None

    async def __aenter__(self) -> GatewayProcess:
        creds = self._credentials or self.sim.spec.credentials_toml()
        # the child writes to it; closed with the process
        self._log_file = self._log.open("ab") if self._log else None
        config = Path(self._dir.name) / "taogate.toml"
        config.write_text(
            f'[upstream]\nurl = "{self.sim.url}"\n\n{creds}\n'
            f"[limits]\nsafety_factor = {self._safety}\n\n"
            f"[cache]\nmax_age_s = {self._max_age}\n{self._l1}\n{self._redis}"
            f'[server]\nport = {self.port}\nlog_level = "{self._log_level}"\n\n'
            f'[[server.clients]]\nname = "demo"\ntoken = "{self.token}"\nrate = 1000000\n'
            f"admin = {'true' if self._admin else 'false'}\n\n" + self._extra,
            encoding="utf-8",
        )
        self._proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "taogate.cli",
            "serve",
            "--config",
            str(config),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=self._log_file or asyncio.subprocess.DEVNULL,
        )
        async with aiohttp.ClientSession() as session:
            for _ in range(300):
                try:
                    async with session.get(self.base_url + "/readyz") as resp:
                        if resp.status == 200:
                            return self
                except aiohttp.ClientError:
                    pass
                if self._proc.returncode is not None:
                    break
                await asyncio.sleep(0.1)
        await self.__aexit__()
        raise RuntimeError("the gateway did not start")

    @property
    def pid(self) -> int:
        """The server process (one worker: it serves the requests itself)."""
        assert self._proc is not None
        return self._proc.pid

    async def __aexit__(self, *exc_info: object) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), timeout=15)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        self._dir.cleanup()
