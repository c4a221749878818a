"""Bulk jobs in Redis: one stream of 40-id chunks, a results hash and a meta hash per job.

Every replica's worker reads the stream through one consumer group. A result row is written
with ``HSETNX`` inside a script that counts it, so an entry processed twice (its worker died
before acknowledging it, another claimed it) still gives exactly one row per id. A job's keys
share the hash tag ``{<prefix>:j:<job>}``; the stream is ``{<prefix>:jobs}:stream``.

A job has an owner (the client that submitted it). Each owner's keys share a hash tag of its
own, ``{<prefix>:jc:<hash of the name>}``: its jobs index, its jobs in progress and its ids per
Beijing day, the last two checked against its caps in one script (``admit.lua``). Every job is
also in ``{<prefix>:jobs}:index`` (what an operator lists). Indexes lose a job lazily, when a
listing or a submission finds it expired.
"""

from __future__ import annotations

import hashlib
import math
import os
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from importlib.resources import files
from typing import Any

import orjson

from taogate._errors import JobLimitReached

__all__ = ["JobStatus", "JobStore", "beijing_day", "seconds_to_beijing_midnight"]

GROUP = "taogate-workers"
CHUNK = 40
STATES = ("queued", "running", "done", "cancelled", "failed")
ACTIVE = ("queued", "running")
#: Retry-After of a submission over the jobs-in-progress cap (when a job ends is not known)
ACTIVE_RETRY_S = 30
#: how long an owner's index outlives its last submission, beyond the results' own TTL
INDEX_TTL_S = 7 * 86_400
_BEIJING = timezone(timedelta(hours=8))
_UNLIMITED = 1 << 50


def beijing_day(wall: float) -> str:
    """The Beijing calendar day of a wall-clock time, ``YYYY-MM-DD`` (day caps count by it)."""
    return datetime.fromtimestamp(wall, tz=_BEIJING).date().isoformat()


def seconds_to_beijing_midnight(wall: float) -> float:
    """Seconds from ``wall`` to the next midnight in Beijing (when day caps start again)."""
    now = datetime.fromtimestamp(wall, tz=_BEIJING)
    midnight = datetime.combine(now.date() + timedelta(days=1), datetime.min.time(), _BEIJING)
    return (midnight - now).total_seconds()


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
    owner: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "job": self.job,
            "owner": self.owner,
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


def _state(value: Any) -> str | None:
    return None if value is None else _text(value)


class JobStore:
    """Submitting, reading and cancelling jobs; recording their rows."""

    def __init__(
        self,
        client: Any,
        *,
        prefix: str,
        result_ttl_s: float,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._client = client
        self._prefix = prefix
        self._ttl = int(result_ttl_s)
        self._wall = wall_clock
        lua = files("taogate.jobs").joinpath("lua")
        self._record = client.register_script(lua.joinpath("record.lua").read_text())
        self._admit = client.register_script(lua.joinpath("admit.lua").read_text())

    @property
    def stream(self) -> str:
        return f"{{{self._prefix}:jobs}}:stream"

    def _keys(self, job: str) -> tuple[str, str]:
        tag = f"{{{self._prefix}:j:{job}}}"
        return f"{tag}:results", f"{tag}:meta"

    @property
    def index(self) -> str:
        """Every job, scored by when it was submitted."""
        return f"{{{self._prefix}:jobs}}:index"

    def _owner_tag(self, owner: str) -> str:
        """The hash tag of an owner's keys: its jobs index, jobs in progress, ids per day."""
        digest = hashlib.sha256(owner.encode()).hexdigest()[:16]  # names may hold braces
        return f"{{{self._prefix}:jc:{digest}}}"

    async def ensure_group(self) -> None:
        """Create the consumer group (and the stream) once; harmless when they exist."""
        try:
            await self._client.xgroup_create(self.stream, GROUP, id="0", mkstream=True)
        except Exception as exc:  # BUSYGROUP: it exists already
            if "BUSYGROUP" not in str(exc):
                raise

    async def submit(
        self,
        ids: Sequence[str],
        *,
        owner: str | None = None,
        max_active: int | None = None,
        max_ids_per_day: int | None = None,
    ) -> str:
        """Queue a job of distinct ``ids`` for ``owner``; returns its id.

        With an owner, the job counts against the owner's caps (``None``: no cap) on every
        replica together; over one, nothing is queued and :class:`JobLimitReached` says which.
        """
        job = os.urandom(8).hex()
        _, meta = self._keys(job)
        wall = self._wall()
        fields: dict[str, Any] = {
            "state": "queued",
            "total": len(ids),
            "done": 0,
            "found": 0,
            "not_found": 0,
            "failed": 0,
            "created": repr(wall),
        }
        if owner is not None:
            fields["owner"] = owner
        # the meta first: a concurrent submission of the owner then sees this job in progress
        await self._client.hset(meta, mapping=fields)
        if owner is not None:
            try:
                await self._admit_job(job, wall, len(ids), owner, max_active, max_ids_per_day)
            except BaseException:
                await self._client.delete(meta)
                raise
        await self._client.zadd(self.index, {job: wall})
        await self._drop_expired(self.index, 10)
        for start in range(0, len(ids), 2000):  # pipelined in slices: bounded memory
            async with self._client.pipeline(transaction=False) as pipe:
                for i in range(start, min(len(ids), start + 2000), CHUNK):
                    pipe.xadd(self.stream, {"job": job, "ids": ",".join(ids[i : i + CHUNK])})
                await pipe.execute()
        return job

    async def _admit_job(
        self,
        job: str,
        wall: float,
        ids: int,
        owner: str,
        max_active: int | None,
        max_ids_per_day: int | None,
    ) -> None:
        tag = self._owner_tag(owner)
        active, day_ids, jobs = f"{tag}:active", f"{tag}:ids:{beijing_day(wall)}", f"{tag}:jobs"
        # jobs that ended (or expired) leave the owner's count of jobs in progress
        members = [_text(m) for m in await self._client.zrange(active, 0, -1)]
        if members:
            async with self._client.pipeline(transaction=False) as pipe:
                for member in members:
                    pipe.hget(self._keys(member)[1], "state")
                states = await pipe.execute()
            ended = [m for m, st in zip(members, states, strict=True) if _state(st) not in ACTIVE]
            if ended:
                await self._client.zrem(active, *ended)
        await self._drop_expired(jobs, 10)
        admitted, limit, used = await self._admit(
            keys=[active, day_ids, jobs],
            args=[
                job,
                repr(wall),
                ids,
                _UNLIMITED if max_active is None else max_active,
                _UNLIMITED if max_ids_per_day is None else max_ids_per_day,
                2 * 86_400,
                self._ttl + INDEX_TTL_S,
            ],
        )
        if int(admitted) == 1:
            return
        if _text(limit) == "active":
            raise JobLimitReached(
                f"client {owner!r} has {int(used)} jobs in progress, its most at once "
                "(cancel one or wait for one to finish)",
                limit="active",
                retry_after=ACTIVE_RETRY_S,
            )
        raise JobLimitReached(
            f"client {owner!r} has submitted {int(used)} ids today (Beijing time); {ids} more "
            f"would pass its {max_ids_per_day} a day",
            limit="ids_per_day",
            retry_after=math.ceil(seconds_to_beijing_midnight(wall)),
        )

    async def _drop_expired(self, index: str, count: int) -> None:
        """Take the oldest ``count`` jobs of ``index`` out of it if they have expired."""
        oldest = [_text(m) for m in await self._client.zrange(index, 0, count - 1)]
        await self._statuses(index, oldest)

    async def _statuses(self, index: str, jobs: list[str]) -> list[JobStatus]:
        """The status of each of ``jobs`` that still exists; the others leave ``index``."""
        if not jobs:
            return []
        async with self._client.pipeline(transaction=False) as pipe:
            for job in jobs:
                pipe.hgetall(self._keys(job)[1])
            raws = await pipe.execute()
        found: list[JobStatus] = []
        gone: list[str] = []
        for job, raw in zip(jobs, raws, strict=True):
            status = self._parse(job, raw)
            if status is None:
                gone.append(job)
            else:
                found.append(status)
        if gone:
            await self._client.zrem(index, *gone)
        return found

    async def recent(self, *, owner: str | None = None, limit: int = 100) -> list[JobStatus]:
        """Up to ``limit`` jobs, newest first: ``owner``'s, or everyone's (``None``)."""
        index = self.index if owner is None else f"{self._owner_tag(owner)}:jobs"
        found: list[JobStatus] = []
        start = 0
        for _ in range(4):  # expired jobs are dropped on the way; a few rounds fill the page
            want = limit - len(found)
            jobs = [_text(m) for m in await self._client.zrevrange(index, start, start + want - 1)]
            if not jobs:
                break
            page = await self._statuses(index, jobs)
            found.extend(page)
            if len(found) >= limit:
                break
            start += len(page)  # the dropped ones no longer take a place
        return found[:limit]

    async def status(self, job: str) -> JobStatus | None:
        _, meta = self._keys(job)
        return self._parse(job, await self._client.hgetall(meta))

    @staticmethod
    def _parse(job: str, raw: Any) -> JobStatus | None:
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
            owner=m.get("owner"),
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
