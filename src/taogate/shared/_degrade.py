"""The degraded-mode override shared by every replica: one Redis key and a change channel.

``<prefix>:degrade`` holds the override as JSON (no key: the schedule decides), with the
override's ``until`` as its expiry (``PXAT``). A switch writes the key and publishes on
``<prefix>:degrade:changed``; every replica re-reads the key on that message, at start, and
with each heartbeat (so a missed message costs at most one heartbeat). While Redis is out of
reach a replica keeps the override it last read (its ``until`` still ends it) and the schedule
still applies; a switch then fails with :class:`DegradeNotShared` and changes nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from redis.exceptions import RedisError, ResponseError

from taogate._degrade import DegradeControl, Override
from taogate._errors import DegradeNotShared
from taogate.shared._backend import SharedBackend

__all__ = ["SharedOverride"]

log = logging.getLogger("taogate.degrade")
_FAILURES = (RedisError, OSError, TimeoutError)


class SharedOverride:
    """Keeps a :class:`DegradeControl`'s override in step with Redis; the gateway owns it."""

    def __init__(self, backend: SharedBackend, control: DegradeControl, *, poll_s: float) -> None:
        self._backend = backend
        self._control = control
        self._poll_s = poll_s
        prefix = backend.settings.prefix
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
        backend.listen(self.channel, self._on_message)
        control.store = self

    async def start(self) -> None:
        """Read the override (a replica that joins late follows it at once) and start polling."""
        if self._backend.mode == "shared":
            with contextlib.suppress(*_FAILURES):
                await self.read("start")
        self._spawn(self._poll(), "taogate-degrade-poll")

    async def aclose(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, *_FAILURES):
                await task

    async def read(self, cause: str) -> None:
        """Read the key and apply it (a malformed value is ignored: the last one holds)."""
        self._started_reads += 1
        number = self._started_reads
        try:
            raw = await self._backend.client.get(self.key)
        except ResponseError as exc:
            if "WRONGTYPE" not in str(exc):
                raise
            self._backend.note_malformed("degrade", "the override key is not a string")
            return
        if number < self._applied_read:
            return  # a read started later has applied a newer answer
        self._applied_read = number
        override: Override | None = None
        if raw is not None:
            try:
                override = Override.from_json(raw)
            except ValueError as exc:  # the last good one holds
                self._backend.note_malformed("degrade", f"override {exc}")
                return
        self._control.apply(override, cause=cause)

    async def write(self, override: Override | None) -> None:
        """Store ``override`` (``None``: delete it) and tell every replica."""
        if self._backend.mode != "shared":
            raise DegradeNotShared("Redis is out of reach; the replicas cannot be told")
        client = self._backend.client
        try:
            if override is None:
                await client.delete(self.key)
            elif override.until is None:
                await client.set(self.key, override.to_json())
            else:
                await client.set(self.key, override.to_json(), pxat=int(override.until * 1000))
            await client.publish(self.channel, b"changed")
        except _FAILURES as exc:
            raise DegradeNotShared(
                f"Redis failed ({type(exc).__name__}); the replicas cannot be told"
            ) from None

    def _on_message(self, data: Any) -> None:
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
        except _FAILURES as exc:  # the heartbeat notices Redis failing; the poll tries again
            log.debug("degrade override not read: %s", type(exc).__name__)

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self._poll_s)
            if self._backend.mode == "shared":
                await self._read_quietly("poll")

    def _spawn(self, coro: Any, name: str) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task
