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
from collections.abc import Awaitable, Callable
from importlib.resources import files
from typing import Any

from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from taogate._settings import Settings
from taogate._tasks import cancel_within
from taogate.quota.sharing import SharedUnavailable
from taogate.shared._client import RedisClient, close, connect

__all__ = ["MALFORMED_SOURCES", "SharedBackend"]

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


#: Seconds every credential waits when the limiter changes hands (one platform window; the
#: pool's window guard is added on top).
_SWITCH_PAUSE_S = 1.0
#: The longest wait between two reconnect attempts in local mode.
_RECONNECT_CAP_S = 1.0
#: how long closing waits for its background tasks to stop
CLOSE_WAIT_S = 3.0
#: Most replicas a heartbeat count is believed up to (a larger count is malformed).
MAX_REPLICAS = 10_000
#: Where a malformed value read from Redis was found (the label of its metric).
MALFORMED_SOURCES = ("degrade", "heartbeat", "invalidation", "jobs", "limits")


def _count(value: Any) -> int:
    """A count returned by a script: an integer in ``[0, MAX_REPLICAS]``, else ``ValueError``."""
    if isinstance(value, bool) or not isinstance(value, int | bytes | str):
        raise ValueError("not a count")
    number = int(value)
    if not 0 <= number <= MAX_REPLICAS:
        raise ValueError(f"count {number} out of range")
    return number


class SharedBackend:
    """Owns the Redis client and the replica's mode; the gateway starts and closes it."""

    def __init__(
        self,
        settings: Settings,
        *,
        clock: Callable[[], float],
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings.redis
        self.replica_id = f"{os.uname().nodename}-{os.getpid()}-{os.urandom(3).hex()}"
        self.mode = "local"
        # until a heartbeat has counted them, assume the configured number of replicas
        self.live_replicas = max(1, self.settings.expected_replicas)
        self.departed = 0
        self._decided_locally = False
        self.mode_changes = 0
        self._timeouts = 0
        #: other malformed values read from Redis, by where they were found
        self.malformed = dict.fromkeys(MALFORMED_SOURCES, 0)
        self._clock = clock
        self._wall = wall_clock
        self._prefix = self.settings.prefix
        self._client: RedisClient = connect(self.settings)
        self._subscribers: list[Callable[[float], object]] = []
        lua = files("taogate.shared").joinpath("lua")
        self._heartbeat = self._client.register_script(lua.joinpath("heartbeat.lua").read_text())
        self._tasks: list[asyncio.Task[None]] = []
        self._recovered = asyncio.Event()
        self._lost = asyncio.Event()
        self._listeners: dict[str, Callable[[Any], object]] = {}

    @property
    def client(self) -> RedisClient:
        """The Redis client (for the job store, which shares it)."""
        return self._client

    # --- what the credential pool and the shared limits see -----------------------------

    @property
    def sharing(self) -> bool:
        """Whether the replicas decide in the shared limiter now (shared mode)."""
        return self.mode == "shared"

    @property
    def local_share(self) -> float:
        """This replica's share of each quota while it decides alone: 1 / live replicas."""
        return 1.0 / max(1, self.live_replicas)

    @property
    def shared_share(self) -> float:
        """The share of each quota the replicas in shared mode may use: replicas that stopped
        beating recently may be cut off from Redis and deciding locally for theirs."""
        return self.live_replicas / (self.live_replicas + self.departed)

    def subscribe(self, on_change: Callable[[float], object]) -> None:
        """Call ``on_change(pause_s)`` at every change of mode: how long every credential should
        wait so that calls decided before and after the change never share a window."""
        self._subscribers.append(on_change)

    def _announce(self, pause_s: float) -> None:
        for on_change in self._subscribers:
            on_change(pause_s)

    # --- pub/sub -------------------------------------------------------------------------

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
        ]
        if self._listeners:
            self._tasks.append(loop.create_task(self._subscriber(), name="taogate-pubsub"))

    async def aclose(self) -> None:
        await cancel_within(self._tasks, CLOSE_WAIT_S, log=log, what="Redis tasks")
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
                self._decided_locally = False
                self._announce(_RECONNECT_CAP_S + 2 * self.settings.timeout_s + _SWITCH_PAUSE_S)
            self.mode = "shared"
            self.mode_changes += 1
            log.info(
                "shared mode: limits, L2 and invalidations through Redis",
                extra={"live_replicas": self.live_replicas},
            )
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
        if self.mode != "local" or not self._lost.is_set():
            if self.mode == "shared":
                # the shared schedule's last second is unknown here: wait it out
                self.mode_changes += 1
                self.mode = "local"
                self._announce(_SWITCH_PAUSE_S)
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
        """Hand every message on a listened channel (invalidations, degraded-mode changes) to
        its handler, while the replicas share Redis."""
        while True:
            await self._recovered.wait()
            pubsub = self._client.pubsub()
            try:
                await pubsub.subscribe(*self._listeners)
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
        """One pub/sub message to its channel's handler (whose failure is logged, and the
        subscriber goes on)."""
        channel = message.get("channel")
        if isinstance(channel, bytes):
            channel = channel.decode(errors="replace")
        handler = self._listeners.get(channel) if isinstance(channel, str) else None
        if handler is None:
            return
        try:
            handler(message.get("data"))
        except Exception:
            log.exception("a pub/sub message on %r could not be handled", channel)

    def describe(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "live_replicas": self.live_replicas,
            "replica": self.replica_id,
            "mode_changes": self.mode_changes,
            "malformed": dict(self.malformed),
        }
