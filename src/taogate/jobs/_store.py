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

A job's keys expire ``result_ttl_s`` after its last change (submit, a chunk's rows, the end,
a cancel), so a job nobody works on any more does not stay in Redis for ever. What is read
back is checked: a counter or time that is not a number counts as absent and is clamped to a
sane range, a row that is not one (written by hand, an old format) is given as a ``failed``
row of its id.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import re
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from importlib.resources import files
from typing import Any

import orjson
from redis.exceptions import ResponseError

from taogate._beijing import beijing_day, seconds_to_beijing_midnight
from taogate._errors import JobLimitReached

__all__ = ["JobStatus", "JobStore", "beijing_day", "seconds_to_beijing_midnight"]

log = logging.getLogger("taogate.jobs")
GROUP = "taogate-workers"
CHUNK = 40
STATES = ("queued", "running", "done", "cancelled", "failed")
ACTIVE = ("queued", "running")
#: Retry-After of a submission over the jobs-in-progress cap (when a job ends is not known)
ACTIVE_RETRY_S = 30
#: how long an owner's index outlives its last submission, beyond the results' own TTL
INDEX_TTL_S = 7 * 86_400
_UNLIMITED = 1 << 50


#: a job's id as :meth:`JobStore.submit` makes it
JOB_ID = re.compile(r"[0-9a-f]{16}")
#: the most ids a job may count (a larger total read from Redis is malformed)
MAX_TOTAL = 100_000_000
#: the latest time a job's ``created``/``finished`` may be (year 9999)
_LATEST = 253_402_300_799.0


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
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def _count(value: str | None, high: int) -> int | None:
    """A counter from the meta hash, clamped to ``[0, high]``; ``None`` if it is not one."""
    if value is None:
        return None
    try:
        return min(max(int(value), 0), high)
    except ValueError:
        return None


def _time(value: str | None) -> float | None:
    """A time from the meta hash (wall seconds, clamped to year 1970..9999), or ``None``."""
    if value is None:
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    return min(max(number, 0.0), _LATEST) if math.isfinite(number) else None


def _state(value: Any) -> str | None:
    return None if value is None or isinstance(value, Exception) else _text(value)


class JobStore:
    """Submitting, reading and cancelling jobs; recording their rows."""

    def __init__(
        self,
        client: Any,
        *,
        prefix: str,
        result_ttl_s: float,
        wall_clock: Callable[[], float] = time.time,
        on_malformed: Callable[[str, str], object] | None = None,
    ) -> None:
        self._client = client
        self._prefix = prefix
        self._ttl = max(1, int(result_ttl_s))
        self._wall = wall_clock
        self._on_malformed = on_malformed
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

    def malformed(self, what: str) -> None:
        """Count (and log, sparingly) a malformed job value read from Redis; it was ignored."""
        if self._on_malformed is not None:
            self._on_malformed("jobs", what)
        else:
            log.warning("ignored a malformed job value in Redis: %s", what)

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
        async with self._client.pipeline(transaction=False) as pipe:  # one slot: cluster-safe
            pipe.hset(meta, mapping=fields)
            # expires from the start (each chunk's rows push it back): a job abandoned before
            # it finished (its chunks lost with a Redis failover, say) does not stay for ever
            pipe.expire(meta, self._ttl)
            await pipe.execute()
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
                states = await pipe.execute(raise_on_error=False)
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
            raws = await pipe.execute(raise_on_error=False)
        found: list[JobStatus] = []
        gone: list[str] = []
        for job, raw in zip(jobs, raws, strict=True):
            if isinstance(raw, Exception):  # not a hash (WRONGTYPE): as good as absent
                self.malformed(f"job {job}: meta is not a hash")
                raw = None
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
        try:
            raw = await self._client.hgetall(meta)
        except ResponseError as exc:
            if "WRONGTYPE" not in str(exc):
                raise
            self.malformed(f"job {job}: meta is not a hash")
            return None
        return self._parse(job, raw)

    def _parse(self, job: str, raw: Any) -> JobStatus | None:
        if not raw:
            return None
        m = {_text(k): _text(v) for k, v in raw.items()}
        bad: list[str] = []

        def count(name: str, high: int) -> int:
            value = _count(m.get(name), high)
            if value is None:
                if name in m:
                    bad.append(name)
                return 0
            return value

        state = m.get("state", "queued")
        if state not in STATES:
            bad.append("state")
            state = "queued"  # absent; the job's TTL ends it if nothing else does
        total = count("total", MAX_TOTAL)
        created = _time(m.get("created"))
        finished = _time(m.get("finished"))
        if created is None and "created" in m:
            bad.append("created")
        if finished is None and "finished" in m:
            bad.append("finished")
        status = JobStatus(
            job=job,
            state=state,
            total=total,
            done=count("done", total),
            found=count("found", total),
            not_found=count("not_found", total),
            failed=count("failed", total),
            created=created or 0.0,
            finished=finished,
            owner=m.get("owner"),
        )
        if bad:
            self.malformed(f"job {job}: meta field(s) {', '.join(bad)} not valid")
        return status

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
        try:
            value = await self._client.hget(meta, "state")
        except ResponseError as exc:
            if "WRONGTYPE" not in str(exc):
                raise
            self.malformed(f"job {job}: meta is not a hash")
            return None
        return None if value is None else _text(value)[:20]

    async def record(self, job: str, rows: Sequence[tuple[str, dict[str, Any], str]]) -> None:
        """Write ``(num_iid, row, status)`` rows; an id that has a row keeps its first."""
        args: list[Any] = [self._ttl]
        for num_iid, row, status in rows:
            args += [num_iid, orjson.dumps(row), status]
        await self._record(keys=list(self._keys(job)), args=args)

    async def rows(self, job: str) -> AsyncIterator[bytes]:
        """Every row of a job, as stored (JSON), in no particular order.

        A row that is not one (not a JSON object of its id with a known status) is given as
        a ``failed`` row of its id: the job still has one row per id.
        """
        results, _ = self._keys(job)
        if await self._client.type(results) not in (b"hash", "hash", b"none", "none"):
            self.malformed(f"job {job}: results are not a hash")
            return
        async for field, value in self._client.hscan_iter(results, count=1000):
            num_iid = _text(field)
            raw = value if isinstance(value, bytes) else str(value).encode()
            if _valid_row(raw, num_iid):
                yield raw
                continue
            self.malformed(f"job {job}: the row of {num_iid[:40]!r} is not valid")
            yield orjson.dumps(
                {"num_iid": num_iid, "status": "failed", "error": "the stored row was unreadable"}
            )


def _valid_row(raw: bytes, num_iid: str) -> bool:
    """Whether ``raw`` is a row as the worker writes it, for ``num_iid``."""
    try:
        row = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return False
    if not isinstance(row, dict) or row.get("num_iid") != num_iid:
        return False
    status = row.get("status")
    if status == "found":
        return isinstance(row.get("item"), dict)
    if status == "failed":
        return isinstance(row.get("error", ""), str)
    return status == "not_found"
