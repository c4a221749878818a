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
import math
import os
import random
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from importlib.resources import files
from typing import Any

import orjson
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from taogate._model import Item
from taogate._settings import Settings
from taogate.cache.memory import CacheEntry
from taogate.quota.pool import CredentialPool, PoolPolicy, SharedUnavailable
from taogate.shared._client import RedisClient, close, connect
from taogate.shared._limits import SharedLimits

__all__ = ["CorruptEntry", "L2Entry", "SharedBackend", "decode_l2", "parse_invalidation"]

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
#: Most replicas a heartbeat count is believed up to (a larger count is malformed).
MAX_REPLICAS = 10_000
#: Most ids one invalidation message may carry (the HTTP route takes far fewer).
MAX_INVALIDATION_IDS = 100_000
#: Where a malformed value read from Redis was found (the label of its metric).
MALFORMED_SOURCES = ("degrade", "heartbeat", "invalidation", "jobs", "limits")
_ITEM_TEXT = ("num_iid", "title", "shop")
_ITEM_OPTIONAL_TEXT = ("pict_url", "item_url", "seller_id")
_ITEM_OPTIONAL_INT = ("user_type", "volume")
_ITEM_MONEY = (
    "reserve_price",
    "zk_final_price",
    "final_price",
    "coupon_amount",
    "coupon_start_fee",
)


class CorruptEntry(ValueError):
    """An L2 value that is not an answer as :meth:`SharedBackend._l2_put` writes it."""


def _finite(doc: dict[str, Any], field: str) -> float:
    value = doc.get(field)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise CorruptEntry(f"{field!r} is not a finite number")
    return float(value)


def decode_l2(
    blob: bytes, num_iid: str, *, now_wall: float, max_fresh_s: float, max_keep_s: float
) -> tuple[Item | None, float, float, float]:
    """An L2 value as ``(item, fetched, fresh_until, keep_until)`` in wall seconds.

    Raises :class:`CorruptEntry` for anything else (garbage, an old format, wrong types, an
    item for another id). Times are clamped to what this replica could have written: fetched
    no later than now and no earlier than the longest keep, the others no further ahead than
    the settings allow, so that another replica's clock or a hand-written value cannot make an
    answer fresh for longer than the cache would keep it.
    """
    try:
        doc = orjson.loads(blob)
    except orjson.JSONDecodeError:
        raise CorruptEntry("not JSON") from None
    if not isinstance(doc, dict) or "i" not in doc:
        raise CorruptEntry("not an answer")
    fetched, fresh, keep = _finite(doc, "f"), _finite(doc, "u"), _finite(doc, "k")
    raw = doc["i"]
    item: Item | None = None
    if raw is not None:
        if not isinstance(raw, dict) or raw.get("num_iid") != num_iid:
            raise CorruptEntry("not an item of this id")
        for name in _ITEM_TEXT:
            if not isinstance(raw.get(name), str):
                raise CorruptEntry(f"item {name!r} is not text")
        for name in _ITEM_OPTIONAL_TEXT:
            if raw.get(name) is not None and not isinstance(raw[name], str):
                raise CorruptEntry(f"item {name!r} is not text")
        for name in _ITEM_OPTIONAL_INT:
            value = raw.get(name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
                raise CorruptEntry(f"item {name!r} is not an integer")
        # Item.to_dict leaves absent prices out; from_dict needs them named
        raw = {**dict.fromkeys(("reserve_price", "zk_final_price", "final_price")), **raw}
        try:
            item = Item.from_dict(raw)
        except (KeyError, TypeError, ValueError, ArithmeticError) as exc:
            raise CorruptEntry(f"not an item ({type(exc).__name__})") from None
        for name in _ITEM_MONEY:
            money = getattr(item, name)
            if money is not None and not money.is_finite():
                raise CorruptEntry(f"item {name!r} is not a finite amount")
    fetched = min(max(fetched, now_wall - max_keep_s), now_wall)
    keep = min(keep, now_wall + max_keep_s)
    fresh = min(fresh, keep, now_wall + max_fresh_s)
    return item, fetched, fresh, keep


def _count(value: Any) -> int:
    """A count returned by a script: an integer in ``[0, MAX_REPLICAS]``, else ``ValueError``."""
    if isinstance(value, bool) or not isinstance(value, int | bytes | str):
        raise ValueError("not a count")
    number = int(value)
    if not 0 <= number <= MAX_REPLICAS:
        raise ValueError(f"count {number} out of range")
    return number


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
        self._max_fresh_s = max(settings.cache.max_age_s, settings.cache.negative_ttl_s)
        #: L2 values that could not be decoded (each was treated as a miss and deleted)
        self.l2_corrupt = 0
        #: other malformed values read from Redis, by where they were found
        self.malformed = dict.fromkeys(MALFORMED_SOURCES, 0)
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
            on_malformed=self.note_malformed,
        )
        lua = files("taogate.shared").joinpath("lua")
        self._heartbeat = self._client.register_script(lua.joinpath("heartbeat.lua").read_text())
        self._l2_set = self._client.register_script(lua.joinpath("l2_set.lua").read_text())
        self._l2_drop = self._client.register_script(lua.joinpath("l2_drop.lua").read_text())
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

    def note_malformed(self, source: str, what: str) -> None:
        """Count a malformed value read from Redis (it was ignored) and log it, sparingly.

        ``source`` is one of :data:`MALFORMED_SOURCES`. A value read again and again (a poll)
        logs at the 1st, 2nd, 4th, 8th… time; the metric counts every one.
        """
        if source not in self.malformed:
            source = "limits"
        count = self.malformed[source] = self.malformed[source] + 1
        if count & (count - 1) == 0:
            log.warning(
                "ignored a malformed value in Redis (%s): %s [%d so far]", source, what, count
            )

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
        answer = await self._heartbeat(
            keys=[self._replicas_key, self._departed_key],
            args=[self.replica_id, self.settings.replica_ttl_s, self.settings.departed_memory_s],
        )
        try:
            live, departed = (_count(n) for n in answer)
        except (TypeError, ValueError) as exc:  # the last counts hold
            self.note_malformed("heartbeat", f"replica counts {exc}")
            self._timeouts = 0
            return
        self.live_replicas = max(1, live)
        self.departed = departed
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
                        self._on_message(message)
            except _FAILURES as exc:
                self.lost(exc)
            finally:
                with contextlib.suppress(*_FAILURES):
                    # typed through a Callable: untyped in older redis-py stubs, typed in newer
                    close_pubsub: Callable[[], Awaitable[None]] = pubsub.aclose
                    await close_pubsub()

    def _on_message(self, message: dict[str, Any]) -> None:
        """One pub/sub message: a listened channel's, or an invalidation (a malformed one is
        counted and ignored; a handler's failure is logged, and the subscriber goes on)."""
        channel = message.get("channel")
        if isinstance(channel, bytes):
            channel = channel.decode(errors="replace")
        try:
            if channel in self._listeners:
                self._listeners[channel](message.get("data"))
                return
            ids = parse_invalidation(message.get("data"))
            if ids is None:
                self.note_malformed("invalidation", "not a list of ids")
                return
            self._on_invalidate(ids)
        except Exception:
            log.exception("a pub/sub message on %r could not be handled", channel)

    # --- L2 ------------------------------------------------------------------------------

    async def l2_get(self, ids: Sequence[str]) -> dict[str, L2Entry]:
        """Answers L2 holds for ``ids`` (empty in local mode; a failure switches to local).

        Reads from every lookup in the same event-loop turn go out as one ``MGET``: a cold
        flood costs one Redis round trip per turn, not one per request.
        """
        if self.mode != "shared" or not self.settings.l2 or not ids:
            return {}
        loop = asyncio.get_running_loop()
        future: asyncio.Future[dict[str, L2Entry]] = loop.create_future()
        self._l2_wanted.append((list(ids), future))
        if len(self._l2_wanted) == 1:
            loop.call_soon(self._l2_flush)
        try:
            found: dict[str, L2Entry] = await future
        except _ReadFailed:
            return {}  # the read's own failure was counted once, in _l2_read
        return {i: found[i] for i in ids if i in found}

    def _l2_flush(self) -> None:
        wanted, self._l2_wanted = self._l2_wanted, []
        task = asyncio.get_running_loop().create_task(self._l2_read(wanted))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _l2_read(self, wanted: list[tuple[list[str], asyncio.Future[Any]]]) -> None:
        ids = list(dict.fromkeys(i for group, _ in wanted for i in group))
        keys = [self.item_key(i) for i in ids]
        try:
            if isinstance(self._client, RedisCluster):  # keys of many slots: one MGET each
                values = await self._client.mget_nonatomic(keys)
            else:
                values = await self._client.mget(keys)
        except _FAILURES as exc:
            self.lost(exc)
            for _, future in wanted:
                if not future.done():
                    future.set_exception(_ReadFailed())
            return
        found = self._decode(ids, values)
        for _, future in wanted:
            if not future.done():
                future.set_result(found)

    def _decode(self, ids: list[str], values: Sequence[Any]) -> dict[str, L2Entry]:
        """The answers among ``values``; a corrupt one is a miss, counted and deleted."""
        now_mono, now_wall = self._clock(), self._wall()
        shift = now_mono - now_wall  # wall time on this replica's monotonic clock
        out: dict[str, L2Entry] = {}
        corrupt: dict[str, bytes] = {}
        for num_iid, blob in zip(ids, values, strict=True):
            if blob is None:
                continue
            try:
                if not isinstance(blob, bytes):
                    raise CorruptEntry("not bytes")
                item, fetched, fresh, keep = decode_l2(
                    blob,
                    num_iid,
                    now_wall=now_wall,
                    max_fresh_s=self._max_fresh_s,
                    max_keep_s=self._max_keep_s,
                )
            except CorruptEntry as exc:
                self.l2_corrupt += 1
                log.warning(
                    "corrupt L2 entry for %s (%s): treated as a miss, deleted", num_iid, exc
                )
                if isinstance(blob, bytes):
                    corrupt[num_iid] = blob
                continue
            out[num_iid] = L2Entry(
                item=item,
                fetched_at=fetched + shift,
                fresh_until=fresh + shift,
                keep_until=keep + shift,
            )
        if corrupt:
            task = asyncio.get_running_loop().create_task(self._drop(corrupt))
            self._background.add(task)
            task.add_done_callback(self._background.discard)
        return out

    async def _drop(self, corrupt: dict[str, bytes]) -> None:
        """Delete corrupt L2 values, each only if it is still the value read (a fresh answer
        written meanwhile stays)."""

        async def drop(num_iid: str, blob: bytes) -> None:
            await self._l2_drop(keys=[self.item_key(num_iid)], args=[blob])

        try:  # one script call per id (each id's key is its own slot), sent concurrently
            await asyncio.gather(*(drop(i, b) for i, b in corrupt.items()))
        except _FAILURES as exc:
            self.lost(exc)

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
            "l2_corrupt": self.l2_corrupt,
            "malformed": dict(self.malformed),
        }


def parse_invalidation(data: Any) -> list[str] | None:
    """The ids of an invalidation message (a JSON list of ids), or ``None`` if it is not one."""
    try:
        doc = orjson.loads(data)
    except (orjson.JSONDecodeError, TypeError):
        return None
    if not isinstance(doc, list) or len(doc) > MAX_INVALIDATION_IDS:
        return None
    ids: list[str] = []
    for value in doc:
        if isinstance(value, str):
            ids.append(value)
        elif isinstance(value, int) and not isinstance(value, bool):
            ids.append(str(value))
        else:
            return None
    return ids
