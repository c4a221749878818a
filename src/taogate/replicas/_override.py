"""The degraded-mode override shared by every replica: one Redis key and a change channel.

``<prefix>:degrade`` holds the override as JSON (no key: the schedule decides), with the
override's ``until`` as its expiry (``PXAT``). A switch writes the key and publishes on
``<prefix>:degrade:changed``; every replica re-reads the key on that message (the pub/sub
listener hands it to :meth:`SharedOverride.on_message`), at start, and with each heartbeat (so
a missed message costs at most one heartbeat). Each override read is handed to the callbacks
given to :meth:`SharedOverride.subscribe` (the :class:`DegradeControl`, which subscribes
itself). While Redis is out of reach a replica keeps the override it last read (its ``until``
still ends it) and the schedule still applies; a switch then fails with
:class:`DegradeNotShared` and changes nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from redis.exceptions import ResponseError

from taogate._degrade import Override
from taogate._errors import DegradeNotShared
from taogate._redis import FAILURES, RedisClient
from taogate._tasks import cancel_within
from taogate.replicas._replicas import CLOSE_WAIT_S, Replicas

__all__ = ["SharedOverride"]

log = logging.getLogger("taogate.degrade")


class SharedOverride:
    """Keeps the override in step with Redis (an :class:`~taogate._degrade.OverrideStore`);
    started and closed by its owner."""

    def __init__(self, client: RedisClient, replicas: Replicas, *, poll_s: float) -> None:
        self._client = client
        self._replicas = replicas
        self._poll_s = poll_s
        self._subscribers: list[Callable[[Override | None, str], object]] = []
        prefix = replicas.settings.prefix
        self.key = f"{prefix}:degrade"
        self.channel = f"{prefix}:degrade:changed"
        self._tasks: set[asyncio.Task[None]] = set()
        # the read a change message started, and whether messages came while it was under way:
        # a burst of messages costs one read more, not a task each
        self._message_read: asyncio.Task[None] | None = None
        self._read_again = False
        # reads can finish out of order: only the latest one started may apply its answer
        self._started_reads = 0
        self._applied_read = 0

    def subscribe(self, on_read: Callable[[Override | None, str], object]) -> None:
        """Call ``on_read(override, cause)`` with every override read (``None``: none set)."""
        self._subscribers.append(on_read)

    async def start(self) -> None:
        """Read the override (a replica that joins late follows it at once) and start polling."""
        if self._replicas.sharing:
            with contextlib.suppress(*FAILURES):
                await self.read("start")
        self._spawn(self._poll(), "taogate-degrade-poll")

    async def aclose(self) -> None:
        """End the poll and the reads in flight, within a bound (a read stuck in the Redis
        client must not hang the shutdown)."""
        await cancel_within(list(self._tasks), CLOSE_WAIT_S, log=log, what="degrade reads")

    async def read(self, cause: str) -> None:
        """Read the key and apply it (a malformed value is ignored: the last one holds)."""
        self._started_reads += 1
        number = self._started_reads
        try:
            raw = await self._client.get(self.key)
        except ResponseError as exc:
            if "WRONGTYPE" not in str(exc):
                raise
            self._replicas.note_malformed("degrade", "the override key is not a string")
            return
        if number < self._applied_read:
            return  # a read started later has applied a newer answer
        self._applied_read = number
        override: Override | None = None
        if raw is not None:
            try:
                override = Override.from_json(raw)
            except ValueError as exc:  # the last good one holds
                self._replicas.note_malformed("degrade", f"override {exc}")
                return
        for on_read in self._subscribers:
            on_read(override, cause)

    async def write(self, override: Override | None) -> None:
        """Store ``override`` (``None``: delete it) and tell every replica."""
        if not self._replicas.sharing:
            raise DegradeNotShared("Redis is out of reach; the replicas cannot be told")
        client = self._client
        try:
            if override is None:
                await client.delete(self.key)
            elif override.until is None:
                await client.set(self.key, override.to_json())
            else:
                await client.set(self.key, override.to_json(), pxat=int(override.until * 1000))
            await client.publish(self.channel, b"changed")
        except FAILURES as exc:
            raise DegradeNotShared(
                f"Redis failed ({type(exc).__name__}); the replicas cannot be told"
            ) from None

    def on_message(self, data: Any) -> None:
        """A change was published: read the key again."""
        if self._message_read is not None and not self._message_read.done():
            self._read_again = True  # the key may have changed after that read's GET
            return
        self._message_read = self._spawn(self._read_for_messages(), "taogate-degrade-read")

    async def _read_for_messages(self) -> None:
        """Read until no message came during the last read (each came before some read)."""
        while True:
            self._read_again = False
            await self._read_quietly("message")
            if not self._read_again:
                return

    async def _read_quietly(self, cause: str) -> None:
        try:
            await self.read(cause)
        except FAILURES as exc:  # the heartbeat notices Redis failing; the poll tries again
            log.debug("degrade override not read: %s", type(exc).__name__)

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self._poll_s)
            if self._replicas.sharing:
                await self._read_quietly("poll")

    def _spawn(self, coro: Any, name: str) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task
