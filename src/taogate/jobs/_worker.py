"""The bulk-job worker of one replica: chunks from the shared stream, at bulk priority.

Every replica runs one. It reads 40-id chunks through the consumer group, looks them up with
``Priority.BULK`` (interactive lookups always go first; bulk takes the calls they leave), writes
one row per id and acknowledges the chunk. A chunk whose worker died stays pending and is
claimed by another after ``claim_idle_s`` (``XAUTOCLAIM``). Lookups that could not be answered
in time (quota backlog, breaker open) leave the chunk pending for a later try; after
``max_attempts`` tries its ids get ``failed`` rows naming the reason. A try is a delivery of the
chunk (the stream counts them), so a chunk that fails in any other way (a worker that dies on
it, an error writing its rows) also ends with ``failed`` rows after ``max_attempts`` tries
instead of going round for ever. An entry that is not a chunk (written by hand, an old
format) is counted, logged and deleted. While the gateway is degraded the worker takes no new
chunks (nor claims any); the chunks it holds finish.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from typing import TYPE_CHECKING, Any

from taogate._dispatch import Priority
from taogate._errors import InvalidItemId, LookupFailed
from taogate._redis import FAILURES
from taogate._tasks import cancel_within
from taogate.jobs._store import CHUNK, GROUP, JOB_ID, JobStore

if TYPE_CHECKING:
    from taogate._gateway import Gateway
    from taogate.replicas import Replicas

__all__ = ["JobWorker"]

#: Pauses before recording a finished chunk again after Redis failed (then one last try).
FINISH_RETRY_DELAYS_S = (0.1, 0.5)

log = logging.getLogger("taogate.jobs")


def _text(value: Any) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def _failed(num_iid: str, error: str) -> tuple[str, dict[str, Any], str]:
    return num_iid, {"num_iid": num_iid, "status": "failed", "error": error}, "failed"


class JobWorker:
    """Consumes the job stream for one gateway until cancelled (while ``replicas`` share
    Redis)."""

    def __init__(
        self,
        gateway: Gateway,
        store: JobStore,
        client: Any,
        *,
        replicas: Replicas,
        concurrency: int,
        claim_idle_s: float,
        deadline_s: float,
        max_attempts: int = 5,
        reader: Any = None,
        block_s: float = 1.0,
    ) -> None:
        self.gw = gateway
        self.store = store
        self._id_policy = gateway.settings.upstream.id_policy
        self._replicas = replicas
        self._client = client
        # XREADGROUP blocks up to block_s: it needs a client whose socket timeout is longer
        # than that (the shared client's is a fraction of a second)
        self._reader = client if reader is None else reader
        self._block_ms = max(1, int(block_s * 1000))
        self.consumer = f"{os.uname().nodename}-{os.getpid()}-{os.urandom(2).hex()}"
        self._busy = 0
        self._concurrency = concurrency
        self._claim_idle_ms = int(claim_idle_s * 1000)
        self._deadline_s = deadline_s
        self._max_attempts = max(1, max_attempts)
        self._tasks: set[asyncio.Task[None]] = set()
        self.chunks_done = 0

    async def run(self) -> None:
        """Read, claim and process chunks until cancelled; Redis failures are waited out."""
        while True:
            try:
                await self.store.ensure_group()
                break
            except Exception as exc:  # Redis not there yet: the replicas report it
                log.debug("job stream not ready: %s", exc)
                await asyncio.sleep(1.0)
        while True:
            if not self._replicas.sharing:
                await asyncio.sleep(0.5)
                continue
            if self.gw.degrade.active:  # degraded: no new chunks; those in progress finish
                await self.gw.degrade.wait_normal()
                continue
            try:
                await self._round()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if "NOGROUP" in str(exc):  # Redis came back empty: the group is gone with it
                    log.warning("job stream's consumer group is gone; creating it again")
                    try:
                        await self.store.ensure_group()
                        continue
                    except Exception as again:  # Redis refuses it (out of memory, say): wait
                        log.warning("job worker: cannot create the group: %s", again)
                log.warning("job worker: %s", type(exc).__name__)
                await asyncio.sleep(1.0)

    async def _round(self) -> None:
        room = self._concurrency - self._busy
        if room <= 0:
            await asyncio.sleep(0.05)
            return
        _, claimed, *_ = await self._client.xautoclaim(
            self.store.stream,
            GROUP,
            self.consumer,
            min_idle_time=self._claim_idle_ms,
            start_id="0-0",
            count=room,
        )
        entries = list(claimed)
        tries = await self._deliveries([entry_id for entry_id, _ in entries])
        if len(entries) < room:
            read = await self._reader.xreadgroup(
                GROUP,
                self.consumer,
                {self.store.stream: ">"},
                count=room - len(entries),
                block=self._block_ms,
            )
            for _, stream_entries in read or []:
                entries.extend(stream_entries)
        for entry_id, fields in entries:
            if not fields:  # deleted meanwhile
                await self._settle(entry_id)
                continue
            self._busy += 1
            attempt = tries.get(_text(entry_id), 1)  # read now: the first delivery
            task = asyncio.get_running_loop().create_task(self._process(entry_id, fields, attempt))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _deliveries(self, entry_ids: list[Any]) -> dict[str, int]:
        """How many times each claimed entry has been delivered (this claim included)."""
        if not entry_ids:
            return {}
        out: dict[str, int] = {}
        for entry_id in entry_ids:
            rows = await self._client.xpending_range(
                self.store.stream, GROUP, min=entry_id, max=entry_id, count=1
            )
            for row in rows:
                times = row.get("times_delivered")
                if isinstance(times, int):
                    out[_text(row.get("message_id"))] = max(1, times)
        return out

    def _chunk(self, fields: Any) -> tuple[str, list[str]] | None:
        """A stream entry's job and ids, or ``None`` if it is not a chunk."""
        if not isinstance(fields, dict):
            return None
        data = {_text(k): _text(v) for k, v in fields.items()}
        job, ids = data.get("job", ""), [i for i in data.get("ids", "").split(",") if i]
        if not JOB_ID.fullmatch(job) or not ids or len(ids) > CHUNK:
            return None
        return job, ids

    async def _process(self, entry_id: Any, fields: dict[Any, Any], attempt: int = 1) -> None:
        job, ids = "", list[str]()
        try:
            chunk = self._chunk(fields)
            if chunk is None:
                self.store.malformed(f"stream entry {_text(entry_id)} is not a chunk; deleted")
                await self._settle(entry_id)
                return
            job, ids = chunk
            state = await self.store.state(job)
            if state not in ("queued", "running"):  # cancelled, finished or expired
                await self._settle(entry_id)
                return
            if attempt > self._max_attempts:  # earlier tries ended in errors: give up
                await self._give_up(job, ids, entry_id, "the chunk failed")
                return
            checked: list[str] = []
            rows: list[tuple[str, dict[str, Any], str]] = []
            for num_iid in ids:
                try:
                    checked.append(self._id_policy.check(num_iid))
                except InvalidItemId as exc:
                    rows.append(_failed(num_iid[:64], f"{type(exc).__name__}: {exc}"))
            # a chunk waits behind interactive traffic, maybe longer than claim_idle_s: keep
            # it ours meanwhile, or another replica would claim it and fetch its ids again
            keeper = asyncio.get_running_loop().create_task(self._keep(entry_id))
            try:
                lookups = await self.gw.get_many(
                    checked, priority=Priority.BULK, deadline_s=self._deadline_s
                )
            finally:
                keeper.cancel()
            late = [i for i, lk in lookups.items() if isinstance(lk.error, LookupFailed)]
            if late and attempt < self._max_attempts:
                return  # left pending: claimed again after claim_idle_s
            for num_iid, lookup in lookups.items():
                row: dict[str, Any]
                if lookup.error is not None:
                    # upstream text may be in it: secrets out, cut short
                    error = self.gw.redact(f"{type(lookup.error).__name__}: {lookup.error}")
                    rows.append(_failed(num_iid, error))
                elif lookup.item is None:
                    rows.append((num_iid, {"num_iid": num_iid, "status": "not_found"}, "not_found"))
                else:
                    row = {
                        "num_iid": num_iid,
                        "status": "found",
                        "item": lookup.item.to_dict(),
                        "age_s": round(lookup.age_s, 3),
                    }
                    rows.append((num_iid, row, "found"))
            await self._finish(job, rows, entry_id)
            self.chunks_done += 1
        except asyncio.CancelledError:
            raise  # the entry stays pending; another worker claims it
        except Exception as exc:
            if job and attempt >= self._max_attempts:
                log.exception("job chunk failed on its last try; its ids get failed rows")
                with contextlib.suppress(Exception):  # else the next delivery gives up
                    await self._give_up(job, ids, entry_id, f"{type(exc).__name__}")
            else:
                log.exception("job chunk failed; it stays pending for another try")
        finally:
            self._busy -= 1

    async def _finish(
        self, job: str, rows: list[tuple[str, dict[str, Any], str]], entry_id: Any
    ) -> None:
        """Record a looked-up chunk's rows and settle it, trying again a few times when Redis
        fails (a busy connection pool): both steps are idempotent, and a chunk left pending
        would wait ``claim_idle_s`` and be looked up again."""
        for delay in FINISH_RETRY_DELAYS_S:
            try:
                await self.store.record(job, rows)
                await self._settle(entry_id)
                return
            except FAILURES as exc:
                log.warning("job chunk: recording failed (%s); trying again", type(exc).__name__)
                await asyncio.sleep(delay)
        await self.store.record(job, rows)  # the last try: its failure leaves the chunk pending
        await self._settle(entry_id)

    async def _give_up(self, job: str, ids: list[str], entry_id: Any, why: str) -> None:
        """Write ``failed`` rows for a chunk's ids (those without a row keep theirs) and
        acknowledge it."""
        error = f"{why}; gave up after {self._max_attempts} tries"
        await self.store.record(job, [_failed(i[:64], error) for i in ids])
        await self._settle(entry_id)
        self.chunks_done += 1

    async def _keep(self, entry_id: Any) -> None:
        """Reset the chunk's idle time every third of ``claim_idle_s`` while it is worked on."""
        while True:
            await asyncio.sleep(self._claim_idle_ms / 3000)
            with contextlib.suppress(Exception):  # a missed reset costs a duplicate, no more
                await self._client.xclaim(
                    self.store.stream, GROUP, self.consumer, 0, [entry_id], justid=True
                )

    async def _settle(self, entry_id: Any) -> None:
        """Acknowledge a chunk and delete it: a stream of done chunks would only grow."""
        async with self._client.pipeline(transaction=False) as pipe:
            pipe.xack(self.store.stream, GROUP, entry_id)
            pipe.xdel(self.store.stream, entry_id)
            await pipe.execute()

    async def aclose(self) -> None:
        """Stop the chunks in progress (within a bound); they stay pending for others."""
        await cancel_within(list(self._tasks), log=log, what="job chunks")
