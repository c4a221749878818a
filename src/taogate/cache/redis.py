"""The L2 tier: answers in Redis, shared by every replica, and the invalidations that reach them.

Each answer is one key under the id's own hash tag (``{<prefix>:i:<id>}``) with a TTL of how
long it may be kept, written in the background after a fetch, and read for every lookup that
missed L1 — the reads of one event-loop turn together, as one ``MGET``. An invalidation deletes
the answer, leaves a marker so that a fetch that was already under way cannot write the old
answer back (``lua/l2_set.lua``), and is published so every replica drops the id from its L1.

Values read back are untrusted: one that does not decode is a miss, counted and deleted (only
if unchanged, ``lua/l2_drop.lua``), and the times of a good one are clamped to what the cache
settings allow. The tier is used only while the replicas share Redis (``is_shared``); a Redis
failure is handed to ``on_failure``, which switches the replica to local mode.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from importlib.resources import files
from typing import Any

import orjson
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import RedisError

from taogate._model import Item
from taogate._tasks import cancel_within
from taogate.cache.memory import CacheEntry, approx_size

__all__ = ["CorruptEntry", "RedisTier", "decode_l2", "parse_invalidation"]

log = logging.getLogger("taogate.cache")
_FAILURES = (RedisError, OSError, TimeoutError)
_LUA = files("taogate.cache").joinpath("lua")
#: Most ids one invalidation message may carry (the HTTP route takes far fewer).
MAX_INVALIDATION_IDS = 100_000
#: how long closing waits for its background reads and writes to stop
CLOSE_WAIT_S = 3.0

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
    """An L2 value that is not an answer as :meth:`RedisTier.put_later` writes it."""


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


class _ReadFailed(Exception):
    """An L2 read that failed; its failure is counted once, by the read itself."""


class RedisTier:
    """L2 on a Redis client the replicas share; :meth:`aclose` cancels its background writes."""

    def __init__(
        self,
        client: Any,
        *,
        prefix: str,
        max_fresh_s: float,
        max_keep_s: float,
        enabled: bool = True,
        is_shared: Callable[[], bool] = lambda: True,
        on_failure: Callable[[BaseException], object] = lambda exc: None,
        on_malformed: Callable[[str, str], object] = lambda source, what: None,
        on_invalidate: Callable[[list[str]], object] = lambda ids: None,
        clock: Callable[[], float],
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        """``on_invalidate``: what an invalidation from any replica is handed to (the L1
        tier's ``invalidate``)."""
        self._client = client
        self._prefix = prefix
        self._max_fresh_s = max_fresh_s
        self._max_keep_s = max_keep_s
        #: ``[redis] l2``: answers are read and written (invalidations go out either way)
        self.enabled = enabled
        self._is_shared = is_shared
        self._on_failure = on_failure
        self._on_malformed = on_malformed
        self._clock = clock
        self._wall = wall_clock
        self._on_invalidate = on_invalidate
        #: L2 values that could not be decoded (each was treated as a miss and deleted)
        self.corrupt = 0
        self._set = client.register_script(_LUA.joinpath("l2_set.lua").read_text())
        self._drop_script = client.register_script(_LUA.joinpath("l2_drop.lua").read_text())
        self._wanted: list[tuple[list[str], asyncio.Future[Any]]] = []
        self._background: set[asyncio.Task[None]] = set()

    # --- keys ----------------------------------------------------------------------------

    @property
    def channel(self) -> str:
        """The pub/sub channel of invalidations."""
        return f"{self._prefix}:invalidate"

    def item_key(self, num_iid: str) -> str:
        return f"{{{self._prefix}:i:{num_iid}}}"

    def marker_key(self, num_iid: str) -> str:
        """When ``num_iid`` was last invalidated (wall seconds); same slot as its answer."""
        return f"{{{self._prefix}:i:{num_iid}}}:inv"

    @property
    def active(self) -> bool:
        """Whether answers are read and written now (shared mode, L2 enabled)."""
        return self.enabled and self._is_shared()

    # --- reads ---------------------------------------------------------------------------

    async def get(self, ids: Sequence[str]) -> dict[str, CacheEntry]:
        """Answers L2 holds for ``ids``, their times on this replica's clock (empty in local
        mode; a failure switches to local).

        Reads from every lookup in the same event-loop turn go out as one ``MGET``: a cold
        flood costs one Redis round trip per turn, not one per request.
        """
        if not self.active or not ids:
            return {}
        loop = asyncio.get_running_loop()
        future: asyncio.Future[dict[str, CacheEntry]] = loop.create_future()
        self._wanted.append((list(ids), future))
        if len(self._wanted) == 1:
            loop.call_soon(self._flush)
        try:
            found: dict[str, CacheEntry] = await future
        except _ReadFailed:
            return {}  # the read's own failure was counted once, in _read
        return {i: found[i] for i in ids if i in found}

    def _flush(self) -> None:
        wanted, self._wanted = self._wanted, []
        self._spawn(self._read(wanted))

    async def _read(self, wanted: list[tuple[list[str], asyncio.Future[Any]]]) -> None:
        ids = list(dict.fromkeys(i for group, _ in wanted for i in group))
        keys = [self.item_key(i) for i in ids]
        try:
            if isinstance(self._client, RedisCluster):  # keys of many slots: one MGET each
                values = await self._client.mget_nonatomic(keys)
            else:
                values = await self._client.mget(keys)
        except _FAILURES as exc:
            self._on_failure(exc)
            for _, future in wanted:
                if not future.done():
                    future.set_exception(_ReadFailed())
            return
        found = self._decode(ids, values)
        for _, future in wanted:
            if not future.done():
                future.set_result(found)

    def _decode(self, ids: list[str], values: Sequence[Any]) -> dict[str, CacheEntry]:
        """The answers among ``values``; a corrupt one is a miss, counted and deleted."""
        now_mono, now_wall = self._clock(), self._wall()
        shift = now_mono - now_wall  # wall time on this replica's monotonic clock
        out: dict[str, CacheEntry] = {}
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
                self.corrupt += 1
                log.warning(
                    "corrupt L2 entry for %s (%s): treated as a miss, deleted", num_iid, exc
                )
                if isinstance(blob, bytes):
                    corrupt[num_iid] = blob
                continue
            out[num_iid] = CacheEntry(
                item=item,
                fetched_at=fetched + shift,
                fresh_until=fresh + shift,
                keep_until=keep + shift,
                size=approx_size(num_iid, item),
            )
        if corrupt:
            self._spawn(self._drop(corrupt))
        return out

    async def _drop(self, corrupt: dict[str, bytes]) -> None:
        """Delete corrupt L2 values, each only if it is still the value read (a fresh answer
        written meanwhile stays)."""

        async def drop(num_iid: str, blob: bytes) -> None:
            await self._drop_script(keys=[self.item_key(num_iid)], args=[blob])

        try:  # one script call per id (each id's key is its own slot), sent concurrently
            await asyncio.gather(*(drop(i, b) for i, b in corrupt.items()))
        except _FAILURES as exc:
            self._on_failure(exc)

    # --- writes --------------------------------------------------------------------------

    def put_later(self, entries: Mapping[str, CacheEntry]) -> None:
        """Write fresh answers to L2 in the background (the callers never wait for it)."""
        if not self.active or not entries:
            return
        self._spawn(self.put(dict(entries)))

    async def put(self, entries: Mapping[str, CacheEntry]) -> None:
        """Write answers now (what :meth:`put_later` does in the background)."""
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
            await self._set(
                keys=[self.item_key(num_iid), self.marker_key(num_iid)],
                args=[orjson.dumps(doc), fetched, max(1, int(e.keep_until - now_mono) + 1)],
            )

        try:  # one script call per id (each id's keys are one slot), sent concurrently
            await asyncio.gather(*(put(i, e) for i, e in entries.items()))
        except _FAILURES as exc:
            self._on_failure(exc)

    async def invalidate(self, ids: Iterable[str]) -> bool:
        """Drop ``ids`` from L2 and from every replica's L1; ``False`` if Redis is out of reach
        (then only this replica forgot them)."""
        ids = list(ids)
        if not self._is_shared():
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
            self._on_failure(exc)
            return False
        return True

    def on_message(self, data: Any) -> None:
        """An invalidation published by a replica (this one included): forget its ids here."""
        ids = parse_invalidation(data)
        if ids is None:
            self._on_malformed("invalidation", "not a list of ids")
            return
        self._on_invalidate(ids)

    # --- lifecycle -----------------------------------------------------------------------

    def _spawn(self, work: Any) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    @property
    def tasks(self) -> list[asyncio.Task[None]]:
        """Reads and writes under way (the owner bounds how long closing waits for them)."""
        return list(self._background)

    def fail_waiting(self) -> None:
        """End the reads still waiting to be sent (closing): they find nothing."""
        for _, future in self._wanted:
            if not future.done():
                future.set_exception(_ReadFailed())
        self._wanted = []

    async def aclose(self, wait_s: float = CLOSE_WAIT_S) -> None:
        """Fail the waiting reads and cancel the work under way, waiting at most ``wait_s``
        (a task stuck inside the Redis client must not hang the shutdown)."""
        self.fail_waiting()
        await cancel_within(self.tasks, wait_s, log=log, what="L2 tasks")


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
