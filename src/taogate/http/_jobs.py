"""``/v1/jobs``: submit a large id list, follow it, stream its rows, cancel it.

A job belongs to the client that submitted it: other clients get 404 for it (as if it did not
exist) and do not see it in ``GET /v1/jobs``; admin clients see every job. A body is refused
with 413 past what the id limits need (the edge receives up to ``job_body_limit``, the
larger): a JSON body ``max_json_ids`` × (the longest id + ``JSON_BYTES_PER_ID``), a text
body ``max_ids`` × (the longest id + a line end). A text body is parsed in 64 KiB slices,
the event loop serving others in between, and a large JSON body in a thread, so neither
holds the event loop for long.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import math
from collections.abc import AsyncIterator, Iterator
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import orjson
from redis.exceptions import RedisError
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from taogate._errors import InvalidRequest, JobLimitReached
from taogate._ids import IdPolicy
from taogate.http._problems import Problem

if TYPE_CHECKING:
    from taogate._settings import Settings
    from taogate.http._answers import Estimate
    from taogate.http._auth import Client
    from taogate.http._context import Context
    from taogate.jobs._store import JobStatus

__all__ = ["JobRoutes", "csv_cell", "job_body_limit", "job_body_limits"]

#: bytes an id may take in a JSON body beyond its own: quotes, comma, a line end and indent
JSON_BYTES_PER_ID = 16
#: bytes of a body beyond its ids (a JSON object's braces and key, a text file's blank lines)
BODY_OVERHEAD = 64 * 1024
#: text is parsed in slices this large, the event loop served between them
PARSE_SLICE = 64 * 1024
#: ids looked up in the cache at once for the estimate, the event loop served between slices
ESTIMATE_SLICE = 5000
#: the longest line a text body may hold (an id with room for spaces around it)
MAX_LINE_BYTES = 4096
#: a cell that starts with one of these is a formula to a spreadsheet (OWASP CSV injection)
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")

CSV_COLUMNS = (
    "num_iid",
    "status",
    "final_price",
    "final_price_basis",
    "zk_final_price",
    "reserve_price",
    "title",
    "error",
)


def csv_cell(value: object) -> str:
    """``value`` as a CSV cell a spreadsheet shows as text: one that would start a formula
    (``= + - @``, tab, carriage return) gets a leading ``'``."""
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(FORMULA_START) else text


class _TextIds:
    """The distinct ids of a text body (one id a line, LF or CRLF), fed as the body arrives."""

    def __init__(self, policy: IdPolicy, max_ids: int) -> None:
        self.policy = policy
        self.max_ids = max_ids
        self.seen: dict[str, None] = {}
        self.line = 0
        self._rest = b""

    def feed(self, data: bytes) -> None:
        cut = data.rfind(b"\n")
        if cut < 0:
            self._rest += data
            if len(self._rest) > MAX_LINE_BYTES:
                line = self.line + 1
                raise Problem(
                    "invalid-item-id",
                    f"line {line}: longer than {MAX_LINE_BYTES} bytes (one id a line)",
                    line=line,
                )
            return
        self._lines(self._rest + data[:cut])
        self._rest = data[cut + 1 :]

    def close(self) -> list[str]:
        if self._rest:
            self._lines(self._rest)
            self._rest = b""
        if not self.seen:
            raise Problem("bad-request", "the file holds no ids (one id a line)")
        return list(self.seen)

    def _lines(self, block: bytes) -> None:
        try:
            text = block.decode("utf-8")
        except UnicodeDecodeError:
            raise Problem("bad-request", "the file is not UTF-8 text") from None
        seen, check = self.seen, self.policy.check
        for line in text.split("\n"):
            self.line += 1
            num_iid = line.strip()
            if not num_iid:
                continue  # blank lines are allowed
            try:
                check(num_iid)
            except InvalidRequest as exc:
                raise Problem(
                    "invalid-item-id", f"line {self.line}: {exc}", line=self.line
                ) from None
            seen[num_iid] = None
            if len(seen) > self.max_ids:
                raise Problem(
                    "batch-too-large",
                    f"line {self.line}: more than {self.max_ids} ids",
                    line=self.line,
                )


def job_body_limits(settings: Settings) -> tuple[int, int]:
    """The largest JSON and text job bodies, in bytes (never below ``max_body_bytes``): what
    ``max_json_ids`` and ``max_ids`` ids of the longest length the id policy admits need."""
    jobs = settings.jobs
    floor = settings.server.max_body_bytes
    longest = settings.upstream.id_policy.max_length
    json_limit = jobs.max_json_ids * (longest + JSON_BYTES_PER_ID) + BODY_OVERHEAD
    text_limit = jobs.max_ids * (longest + 2) + BODY_OVERHEAD
    return max(floor, json_limit), max(floor, text_limit)


def job_body_limit(settings: Settings) -> int:
    """The largest job submission body of either kind, in bytes (what the edge receives)."""
    return max(job_body_limits(settings))


class JobRoutes:
    """The job handlers of one app."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    def _store(self) -> Any:
        service = self.ctx.service
        if service.jobs is None:
            raise Problem("jobs-disabled", "bulk jobs need [redis] url (and [jobs] enabled)")
        if service.replicas is None or not service.replicas.sharing:
            raise Problem(
                "unavailable",
                "Redis is out of reach; bulk jobs wait for it",
                headers={"Retry-After": "5"},
                retry_after=5,
            )
        return service.jobs

    def body_limits(self) -> tuple[int, int]:
        """The largest JSON and text job bodies, in bytes."""
        return job_body_limits(self.ctx.settings)

    @staticmethod
    async def _chunks(request: Request, limit: int, too_large: str) -> AsyncIterator[bytes]:
        """The body as it arrives; 413 (``too_large``) as soon as it is known to pass ``limit``."""
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise Problem("payload-too-large", too_large, max_bytes=limit)
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise Problem("payload-too-large", too_large, max_bytes=limit)
            if chunk:
                yield chunk

    async def _ids(self, request: Request) -> list[str]:
        """Distinct ids from a JSON body or a text body of one id a line (400 names the line)."""
        jobs = self.ctx.settings.jobs
        json_limit, text_limit = self.body_limits()
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if kind == "application/json":
            parts = [
                chunk
                async for chunk in self._chunks(
                    request,
                    json_limit,
                    f"a JSON job body may hold at most {json_limit} bytes "
                    f"({jobs.max_json_ids} ids); send a text body, one id a line, for more",
                )
            ]
            body = b"".join(parts)
            del parts
            if len(body) <= PARSE_SLICE:
                return self._json_ids(body)
            return await asyncio.to_thread(self._json_ids, body)
        parser = _TextIds(self.ctx.settings.upstream.id_policy, jobs.max_ids)
        too_large = (
            f"a job body may hold at most {text_limit} bytes ({jobs.max_ids} ids, one a line)"
        )
        async for chunk in self._chunks(request, text_limit, too_large):
            for start in range(0, len(chunk), PARSE_SLICE):
                if start:
                    await asyncio.sleep(0)  # let other requests in between slices
                parser.feed(chunk[start : start + PARSE_SLICE])
        return parser.close()

    def _json_ids(self, body: bytes) -> list[str]:
        jobs = self.ctx.settings.jobs
        try:
            doc = orjson.loads(body)
        except orjson.JSONDecodeError:
            raise Problem("bad-request", "the body is not valid JSON") from None
        ids = self.ctx.checked_ids(
            doc.get("ids") if isinstance(doc, dict) else None,
            jobs.max_json_ids,
            f"a JSON body takes at most {jobs.max_json_ids} (send a text body for more)",
        )
        return list(dict.fromkeys(ids))

    async def _estimate(self, ids: list[str]) -> Estimate:
        """Upstream calls still needed (what the cache holds fresh is left out), time, cost."""
        gw = self.ctx.gw
        cache = gw.cache
        needed = 0
        for i in range(0, len(ids), ESTIMATE_SLICE):  # slices: the loop serves others between
            view = await cache.lookup(
                ids[i : i + ESTIMATE_SLICE], max_age_s=cache.max_age_s, max_stale_s=None
            )
            if i and cache.l2 is None:
                await asyncio.sleep(0)
            needed += len(view.missing)
        calls = math.ceil(needed / gw.dispatcher.max_batch)
        total = gw.pool.total_rate()
        spare = max(0.0, total - gw.dispatcher.interactive_load())
        creds = gw.pool.credentials
        per_call = sum((c.cost_per_call for c in creds), Decimal(0)) / len(creds)
        return {
            "ids": len(ids),
            "fresh_in_cache": len(ids) - needed,
            "upstream_calls": calls,
            "spare_calls_per_s": round(spare, 2),
            "seconds": None if spare <= 0 else round(calls / spare, 1),
            "cost": str((per_call * calls).quantize(Decimal("0.0001"))),
        }

    async def _owned(self, request: Request) -> tuple[Any, JobStatus]:
        """The store and the status of the job the path names, if the client may see it:
        its owner or an admin. Anyone else gets the 404 of a job that does not exist."""
        client = self.ctx.client(request)
        store = self._store()
        status = await store.status(request.path_params["job"])
        if status is None or not self._sees(client, status):
            raise Problem("job-not-found", "no such job (or it expired)")
        return store, status

    @staticmethod
    def _sees(client: Client, status: JobStatus) -> bool:
        return client.admin or status.owner == client.name

    async def submit(self, request: Request) -> Response:
        client = self.ctx.client(request)
        store = self._store()
        jobs = self.ctx.settings.jobs
        ids = await self._ids(request)
        if len(ids) > jobs.max_ids_per_client_per_day:
            raise Problem(
                "batch-too-large",
                f"{len(ids)} ids; a client may submit at most "
                f"{jobs.max_ids_per_client_per_day} a day",
            )
        try:
            job = await store.submit(
                ids,
                owner=client.name,
                max_active=jobs.max_active_per_client,
                max_ids_per_day=jobs.max_ids_per_client_per_day,
            )
        except JobLimitReached as exc:
            retry = max(1, math.ceil(exc.retry_after))
            raise Problem(
                "job-limit-reached",
                str(exc),
                headers={"Retry-After": str(retry)},
                retry_after=retry,
                limit=exc.limit,
            ) from None
        estimate = await self._estimate(ids)
        status = await store.status(job)
        body = {**status.to_dict(), "estimate": estimate}
        return Response(
            orjson.dumps(body),
            status_code=202,
            media_type="application/json",
            headers={"Location": f"/v1/jobs/{job}"},
        )

    async def collection(self, request: Request) -> Response:
        """``/v1/jobs``: one route for both methods, so that a 405 names both in ``Allow``."""
        with self._redis_failures():
            if request.method == "POST":
                return await self.submit(request)
            return await self.recent(request)

    async def one(self, request: Request) -> Response:
        """``/v1/jobs/{job}``: a job's status, or its cancellation."""
        with self._redis_failures():
            if request.method == "DELETE":
                return await self.cancel(request)
            return await self.status(request)

    @contextlib.contextmanager
    def _redis_failures(self) -> Iterator[None]:
        """Redis slow or away while a job route reads or writes it: a 503 with Retry-After for
        that request (never a 500), and the replicas told, so they may switch to local mode."""
        try:
            yield
        except (RedisError, OSError, TimeoutError) as exc:
            if self.ctx.service.replicas is not None:
                # a timeout counts only after a few in a row
                self.ctx.service.replicas.lost(exc)
            raise Problem(
                "unavailable",
                "Redis is out of reach; bulk jobs wait for it",
                headers={"Retry-After": "1"},
                retry_after=1,
            ) from None

    async def recent(self, request: Request) -> Response:
        """``GET /v1/jobs``: the client's jobs (an admin's: every job), newest first."""
        client = self.ctx.client(request)
        store = self._store()
        raw = request.query_params.get("limit", "100")
        if not raw.isdigit() or not 1 <= int(raw) <= 1000:
            raise Problem("bad-request", "limit must be a whole number from 1 to 1000")
        found = await store.recent(owner=None if client.admin else client.name, limit=int(raw))
        body = {"jobs": [s.to_dict() for s in found if self._sees(client, s)]}
        return Response(orjson.dumps(body), media_type="application/json")

    async def status(self, request: Request) -> Response:
        _, status = await self._owned(request)
        return Response(orjson.dumps(status.to_dict()), media_type="application/json")

    async def cancel(self, request: Request) -> Response:
        store, status = await self._owned(request)
        cancelled = await store.cancel(status.job)
        if cancelled is None:
            raise Problem("job-not-found", "no such job (or it expired)")
        return Response(orjson.dumps(cancelled.to_dict()), media_type="application/json")

    async def results(self, request: Request) -> Response:
        with self._redis_failures():
            store, status = await self._owned(request)
        job = status.job
        want_csv = request.query_params.get("format") == "csv" or "text/csv" in request.headers.get(
            "accept", ""
        )

        async def ndjson() -> AsyncIterator[bytes]:
            async for row in store.rows(job):
                yield row + b"\n"

        async def as_csv() -> AsyncIterator[bytes]:
            out = io.StringIO()
            writer = csv.writer(out)
            writer.writerow(CSV_COLUMNS)
            async for raw in store.rows(job):
                row = orjson.loads(raw)
                item = row.get("item") or {}
                writer.writerow(
                    [
                        csv_cell(row.get("num_iid")),
                        csv_cell(row.get("status")),
                        *(csv_cell(item.get(c)) for c in CSV_COLUMNS[2:7]),
                        csv_cell(row.get("error")),
                    ]
                )
                yield out.getvalue().encode()
                out.seek(0)
                out.truncate()

        if want_csv:
            return StreamingResponse(as_csv(), media_type="text/csv")
        return StreamingResponse(ndjson(), media_type="application/x-ndjson")
