"""This replica's link to the shared engine: limits, L2, invalidations, membership, failover.

In ``shared`` mode the credential pool asks Redis for every slot, answers are written to and
read from the L2 tier, invalidations reach every replica through pub/sub, and a heartbeat keeps
the count of live replicas. When Redis fails (any call past ``[redis] timeout_s``), the replica
switches to ``local`` mode at once: it keeps serving from L1, and limits each credential to its
share of the quota — ``qps ÷ live replicas`` as last known — so the replicas together still
stay under the quota. A reconnect loop with back-off returns it to ``shared`` mode.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from importlib.resources import files
from typing import Any

import orjson
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from taogate._model import Item
from taogate._settings import Settings
from taogate.cache.memory import CacheEntry
from taogate.quota.pool import CredentialPool, PoolPolicy, SharedUnavailable
from taogate.shared._client import RedisClient, close, connect
from taogate.shared._limits import SharedLimits

__all__ = ["L2Entry", "SharedBackend"]

log = logging.getLogger("taogate.shared")
_FAILURES = (RedisError, OSError, TimeoutError)
#: Timeouts in a row that switch a replica to local mode (a refusal switches at once).
_TIMEOUTS_TO_SWITCH = 3


def _is_timeout(exc: BaseException) -> bool:
    """A slow answer, as opposed to a refusal (waiting for a pool connection counts as slow)."""
    return (
        isinstance(exc, TimeoutError | RedisTimeoutError)
        or (isinstance(exc, SharedUnavailable) and exc.timeout)
        or "No connection available" in str(exc)
    )


class _ReadFailed(Exception):
    """An L2 read that failed; its failure is counted once, by the read itself."""


#: Seconds every credential waits when the limiter changes hands (one platform window; the
#: pool's window guard is added on top).
_SWITCH_PAUSE_S = 1.0
#: The longest wait between two reconnect attempts in local mode.
_RECONNECT_CAP_S = 1.0
#: how long closing waits for its background tasks to stop
CLOSE_WAIT_S = 3.0


@dataclass(frozen=True, slots=True)
class L2Entry:
    """An answer from L2, its times on this replica's clock."""

    item: Item | None
    fetched_at: float
    fresh_until: float
    keep_until: float


class SharedBackend:
    """Owns the Redis client and the replica's mode; the gateway starts and closes it."""

    def __init__(
        self,
        settings: Settings,
        pool: CredentialPool,
        policy: PoolPolicy,
        *,
        on_invalidate: Callable[[list[str]], object],
        clock: Callable[[], float],
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings.redis
        self.pool = pool
        self.replica_id = f"{os.uname().nodename}-{os.getpid()}-{os.urandom(3).hex()}"
        self.mode = "local"
        # until a heartbeat has counted them, assume the configured number of replicas
        self.live_replicas = max(1, self.settings.expected_replicas)
        self.departed = 0
        self._decided_locally = False
        self.mode_changes = 0
        self._timeouts = 0
        self._on_invalidate = on_invalidate
        self._max_keep_s = settings.cache.max_age_s + settings.cache.max_stale_s
        self._clock = clock
        self._wall = wall_clock
        self._prefix = self.settings.prefix
        self._client: RedisClient = connect(self.settings)
        pool.shared_timeout_s = self.settings.timeout_s
        self.limits = SharedLimits(
            self._client,
            prefix=self._prefix,
            policy=policy,
            probe_hold_s=max(10.0, 2 * settings.upstream.timeout_s),
        )
        lua = files("taogate.shared").joinpath("lua")
        self._heartbeat = self._client.register_script(lua.joinpath("heartbeat.lua").read_text())
        self._l2_set = self._client.register_script(lua.joinpath("l2_set.lua").read_text())
        self._tasks: list[asyncio.Task[None]] = []
        self._l2_wanted: list[tuple[list[str], asyncio.Future[Any]]] = []
        self._background: set[asyncio.Task[None]] = set()
        self._recovered = asyncio.Event()
        self._lost = asyncio.Event()
        self._listeners: dict[str, Callable[[Any], object]] = {}
        pool.on_shared_failure = self.lost

    @property
    def client(self) -> RedisClient:
        """The Redis client (for the job store, which shares it)."""
        return self._client

    # --- keys ----------------------------------------------------------------------------

    @property
    def channel(self) -> str:
        return f"{self._prefix}:invalidate"

    def item_key(self, num_iid: str) -> str:
        return f"{{{self._prefix}:i:{num_iid}}}"

    def marker_key(self, num_iid: str) -> str:
        """When ``num_iid`` was last invalidated (wall seconds); same slot as its answer."""
        return f"{{{self._prefix}:i:{num_iid}}}:inv"

    def listen(self, channel: str, handler: Callable[[Any], object]) -> None:
        """Call ``handler`` with the data of every message on ``channel`` (before :meth:`start`)."""
        self._listeners[channel] = handler

    # --- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        """Join the replicas (or start in local mode if Redis is down) and start the loops."""
        try:
            await self._beat()
            self._shared()
        except _FAILURES as exc:
            self.lost(exc)
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._heartbeats(), name="taogate-heartbeat"),
            loop.create_task(self._reconnects(), name="taogate-reconnect"),
            loop.create_task(self._subscriber(), name="taogate-invalidations"),
        ]

    async def aclose(self) -> None:
        for _, future in self._l2_wanted:
            if not future.done():
                future.set_exception(_ReadFailed())
        self._l2_wanted = []
        tasks = [*self._tasks, *self._background]
        for task in tasks:
            task.cancel()
        if tasks:
            # bounded: a task stuck inside the Redis client (a cancelled wait for a pooled
            # connection has been seen not to end) must not hang the shutdown
            done, pending = await asyncio.wait(tasks, timeout=CLOSE_WAIT_S)
            for task in done:
                if not task.cancelled():
                    task.exception()  # retrieved: a failure at shutdown says nothing new
            if pending:
                log.warning("%d Redis tasks did not stop within %.0f s", len(pending), CLOSE_WAIT_S)
        if self.mode == "shared":
            with contextlib.suppress(*_FAILURES):
                await self._client.zrem(self._replicas_key, self.replica_id)
        with contextlib.suppress(*_FAILURES):
            await close(self._client)

    # --- mode ----------------------------------------------------------------------------

    @property
    def _replicas_key(self) -> str:
        return f"{{{self._prefix}:m}}:replicas"

    @property
    def _departed_key(self) -> str:
        return f"{{{self._prefix}:m}}:departed"

    def _shared(self) -> None:
        if self.mode != "shared":
            if self._decided_locally:
                # back from local mode: the other replicas may decide locally until their own
                # reconnect (at most the cap plus a slow heartbeat away); wait that and one
                # window more
                self.pool.pause_all(
                    _RECONNECT_CAP_S
                    + 2 * self.settings.timeout_s
                    + _SWITCH_PAUSE_S
                    + self.pool.policy.window_guard_s
                )
                self._decided_locally = False
            self.mode = "shared"
            self.mode_changes += 1
            log.info(
                "shared mode: limits, L2 and invalidations through Redis",
                extra={"live_replicas": self.live_replicas},
            )
        self.pool.share = 1.0
        self.pool.shared = self.limits
        self._timeouts = 0
        self._lost.clear()
        self._recovered.set()

    def lost(self, exc: BaseException) -> None:
        """Redis failed: decide locally on this replica's share until it is back.

        A refused connection switches at once; timeouts only after ``_TIMEOUTS_TO_SWITCH`` in a
        row, since a busy event loop can make a healthy Redis look slow.
        """
        if self.mode == "shared" and _is_timeout(exc):
            self._timeouts += 1
            if self._timeouts < _TIMEOUTS_TO_SWITCH:
                return
        self._timeouts = 0
        self._decided_locally = True
        self.pool.shared = None
        self.pool.share = 1.0 / max(1, self.live_replicas)
        if self.mode != "local" or not self._lost.is_set():
            if self.mode == "shared":
                # the shared schedule's last second is unknown here: wait it out
                self.pool.pause_all(_SWITCH_PAUSE_S + self.pool.policy.window_guard_s)
                self.mode_changes += 1
            self.mode = "local"
            log.warning(
                "Redis unavailable (%s): local mode, each key at 1/%d of its quota",
                type(exc).__name__,
                max(1, self.live_replicas),
            )
        self._recovered.clear()
        self._lost.set()

    async def _beat(self) -> None:
        live, departed = await self._heartbeat(
            keys=[self._replicas_key, self._departed_key],
            args=[self.replica_id, self.settings.replica_ttl_s, self.settings.departed_memory_s],
        )
        self.live_replicas = max(1, int(live))
        self.departed = int(departed)
        # replicas that stopped beating recently may be cut off from Redis and deciding locally
        # for their share: the shared schedule leaves it to them
        self.limits.share = self.live_replicas / (self.live_replicas + self.departed)
        self._timeouts = 0

    async def _heartbeats(self) -> None:
        while True:
            await asyncio.sleep(self.settings.heartbeat_s)
            if self.mode != "shared":
                continue
            try:
                await self._beat()
            except _FAILURES as exc:
                self.lost(exc)

    async def _reconnects(self) -> None:
        """While in local mode, try Redis again with jittered back-off; return to shared."""
        delay = 0.1
        while True:
            await self._lost.wait()
            await asyncio.sleep(delay * random.uniform(0.5, 1.0))  # never past the cap
            try:
                await self._beat()
            except _FAILURES:
                delay = min(_RECONNECT_CAP_S, delay * 2)
                continue
            delay = 0.1
            self._shared()

    async def _subscriber(self) -> None:
        """Apply every replica's invalidations to this L1 (and pass on the listened channels)."""
        while True:
            await self._recovered.wait()
            pubsub = self._client.pubsub()
            try:
                await pubsub.subscribe(self.channel, *self._listeners)
                while self.mode == "shared":
                    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                    if message is not None and message.get("type") == "message":
                        channel = message.get("channel")
                        if isinstance(channel, bytes):
                            channel = channel.decode()
                        if channel in self._listeners:
                            self._listeners[channel](message["data"])
                            continue
                        try:
                            ids = [str(i) for i in orjson.loads(message["data"])]
                        except (orjson.JSONDecodeError, TypeError):
                            log.warning("ignored a malformed invalidation message")
                            continue
                        self._on_invalidate(ids)
            except _FAILURES as exc:
                self.lost(exc)
            finally:
                with contextlib.suppress(*_FAILURES):
                    # typed through a Callable: untyped in older redis-py stubs, typed in newer
                    close_pubsub: Callable[[], Awaitable[None]] = pubsub.aclose
                    await close_pubsub()

    # --- L2 ------------------------------------------------------------------------------

    async def l2_get(self, ids: Sequence[str]) -> dict[str, L2Entry]:
        """Answers L2 holds for ``ids`` (empty in local mode; a failure switches to local).

        Reads from every lookup in the same event-loop turn go out as one ``MGET``: a cold
        flood costs one Redis round trip per turn, not one per request.
        """
        if self.mode != "shared" or not self.settings.l2 or not ids:
            return {}
        loop = asyncio.get_running_loop()
        future: asyncio.Future[dict[str, bytes | None]] = loop.create_future()
        self._l2_wanted.append((list(ids), future))
        if len(self._l2_wanted) == 1:
            loop.call_soon(self._l2_flush)
        try:
            raw = await future
        except _ReadFailed:
            return {}  # the read's own failure was counted once, in _l2_read
        now_mono, now_wall = self._clock(), self._wall()
        shift = now_mono - now_wall  # wall time on this replica's monotonic clock
        out: dict[str, L2Entry] = {}
        for num_iid in ids:
            blob = raw.get(num_iid)
            if blob is None:
                continue
            doc = orjson.loads(blob)
            out[num_iid] = L2Entry(
                item=None if doc["i"] is None else Item.from_dict(doc["i"]),
                fetched_at=doc["f"] + shift,
                fresh_until=doc["u"] + shift,
                keep_until=doc["k"] + shift,
            )
        return out

    def _l2_flush(self) -> None:
        wanted, self._l2_wanted = self._l2_wanted, []
        task = asyncio.get_running_loop().create_task(self._l2_read(wanted))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _l2_read(self, wanted: list[tuple[list[str], asyncio.Future[Any]]]) -> None:
        ids = list(dict.fromkeys(i for group, _ in wanted for i in group))
        keys = [self.item_key(i) for i in ids]
        try:
            if self.settings.cluster:
                values = await self._client.mget_nonatomic(keys)  # type: ignore[union-attr]
            else:
                values = await self._client.mget(keys)
        except _FAILURES as exc:
            self.lost(exc)
            for _, future in wanted:
                if not future.done():
                    future.set_exception(_ReadFailed())
            return
        found = dict(zip(ids, values, strict=True))
        for _, future in wanted:
            if not future.done():
                future.set_result(found)

    def l2_put_later(self, entries: Mapping[str, CacheEntry]) -> None:
        """Write fresh answers to L2 in the background (the callers never wait for it)."""
        if self.mode != "shared" or not self.settings.l2 or not entries:
            return
        task = asyncio.get_running_loop().create_task(self._l2_put(dict(entries)))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _l2_put(self, entries: dict[str, CacheEntry]) -> None:
        now_mono, now_wall = self._clock(), self._wall()
        shift = now_wall - now_mono

        async def put(num_iid: str, e: CacheEntry) -> None:
            fetched = e.fetched_at + shift
            doc = {
                "i": None if e.item is None else e.item.to_dict(),
                "f": fetched,
                "u": e.fresh_until + shift,
                "k": e.keep_until + shift,
            }
            # the script skips the write if the id was invalidated after this fetch
            await self._l2_set(
                keys=[self.item_key(num_iid), self.marker_key(num_iid)],
                args=[orjson.dumps(doc), fetched, max(1, int(e.keep_until - now_mono) + 1)],
            )

        try:  # one script call per id (each id's keys are one slot), sent concurrently
            await asyncio.gather(*(put(i, e) for i, e in entries.items()))
        except _FAILURES as exc:
            self.lost(exc)

    async def invalidate(self, ids: Iterable[str]) -> bool:
        """Drop ``ids`` from L2 and from every replica's L1; ``False`` if Redis is out of reach
        (then only this replica forgot them)."""
        ids = list(ids)
        if self.mode != "shared":
            return False
        if not ids:
            return True
        memory = int(self._max_keep_s) + 1
        try:
            async with self._client.pipeline(transaction=False) as pipe:
                for num_iid in ids:  # per id: each id's keys share a slot (cluster-safe)
                    pipe.set(self.marker_key(num_iid), repr(self._wall()), ex=memory)
                    pipe.delete(self.item_key(num_iid))
                await pipe.execute()
            await self._client.publish(self.channel, orjson.dumps(ids))
        except _FAILURES as exc:
            self.lost(exc)
            return False
        return True

    def describe(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "live_replicas": self.live_replicas,
            "replica": self.replica_id,
            "mode_changes": self.mode_changes,
        }
