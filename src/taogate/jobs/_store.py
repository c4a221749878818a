"""Bulk jobs in Redis: one stream of 40-id chunks, a results hash and a meta hash per job.

Every replica's worker reads the stream through one consumer group. A result row is written
with ``HSETNX`` inside a script that counts it, so an entry processed twice (its worker died
before acknowledging it, another claimed it) still gives exactly one row per id. A job's keys
share the hash tag ``{<prefix>:j:<job>}``; the stream is ``{<prefix>:jobs}:stream``.
"""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from importlib.resources import files
from typing import Any

import orjson

__all__ = ["JobStatus", "JobStore"]

GROUP = "taogate-workers"
CHUNK = 40
STATES = ("queued", "running", "done", "cancelled", "failed")


@dataclass(frozen=True, slots=True)
class JobStatus:
    """A job's progress."""

    job: str
    state: str
    total: int
    done: int
    found: int
    not_found: int
    failed: int
    created: float
    finished: float | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "job": self.job,
            "state": self.state,
            "total": self.total,
            "done": self.done,
            "found": self.found,
            "not_found": self.not_found,
            "failed": self.failed,
            "progress": round(self.done / self.total, 4) if self.total else 1.0,
            "created": self.created,
            "finished": self.finished,
        }


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class JobStore:
    """Submitting, reading and cancelling jobs; recording their rows."""

    def __init__(self, client: Any, *, prefix: str, result_ttl_s: float) -> None:
        self._client = client
        self._prefix = prefix
        self._ttl = int(result_ttl_s)
        lua = files("taogate.jobs").joinpath("lua")
        self._record = client.register_script(lua.joinpath("record.lua").read_text())

    @property
    def stream(self) -> str:
        return f"{{{self._prefix}:jobs}}:stream"

    def _keys(self, job: str) -> tuple[str, str]:
        tag = f"{{{self._prefix}:j:{job}}}"
        return f"{tag}:results", f"{tag}:meta"

    async def ensure_group(self) -> None:
        """Create the consumer group (and the stream) once; harmless when they exist."""
        try:
            await self._client.xgroup_create(self.stream, GROUP, id="0", mkstream=True)
        except Exception as exc:  # BUSYGROUP: it exists already
            if "BUSYGROUP" not in str(exc):
                raise

    async def submit(self, ids: Sequence[str]) -> str:
        """Queue a job of distinct ``ids``; returns its id."""
        job = os.urandom(8).hex()
        _, meta = self._keys(job)
        await self._client.hset(
            meta,
            mapping={
                "state": "queued",
                "total": len(ids),
                "done": 0,
                "found": 0,
                "not_found": 0,
                "failed": 0,
                "created": repr(time.time()),
            },
        )
        for start in range(0, len(ids), 2000):  # pipelined in slices: bounded memory
            async with self._client.pipeline(transaction=False) as pipe:
                for i in range(start, min(len(ids), start + 2000), CHUNK):
                    pipe.xadd(self.stream, {"job": job, "ids": ",".join(ids[i : i + CHUNK])})
                await pipe.execute()
        return job

    async def status(self, job: str) -> JobStatus | None:
        _, meta = self._keys(job)
        raw = await self._client.hgetall(meta)
        if not raw:
            return None
        m = {_text(k): _text(v) for k, v in raw.items()}
        return JobStatus(
            job=job,
            state=m.get("state", "queued"),
            total=int(m.get("total", 0)),
            done=int(m.get("done", 0)),
            found=int(m.get("found", 0)),
            not_found=int(m.get("not_found", 0)),
            failed=int(m.get("failed", 0)),
            created=float(m.get("created", 0)),
            finished=float(m["finished"]) if "finished" in m else None,
        )

    async def cancel(self, job: str) -> JobStatus | None:
        """Stop a job: workers skip its chunks; rows written so far stay readable."""
        status = await self.status(job)
        if status is None or status.state not in ("queued", "running"):
            return status
        _, meta = self._keys(job)
        await self._client.hset(meta, mapping={"state": "cancelled", "finished": repr(time.time())})
        for key in self._keys(job):
            await self._client.expire(key, self._ttl)
        return await self.status(job)

    async def state(self, job: str) -> str | None:
        _, meta = self._keys(job)
        value = await self._client.hget(meta, "state")
        return None if value is None else _text(value)

    async def record(self, job: str, rows: Sequence[tuple[str, dict[str, Any], str]]) -> None:
        """Write ``(num_iid, row, status)`` rows; an id that has a row keeps its first."""
        args: list[Any] = [self._ttl]
        for num_iid, row, status in rows:
            args += [num_iid, orjson.dumps(row), status]
        await self._record(keys=list(self._keys(job)), args=args)

    async def rows(self, job: str) -> AsyncIterator[bytes]:
        """Every row of a job, as stored (JSON), in no particular order."""
        results, _ = self._keys(job)
        async for _, value in self._client.hscan_iter(results, count=1000):
            yield value if isinstance(value, bytes) else str(value).encode()
