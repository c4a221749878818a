"""This replica among the others on one Redis: membership, and the shared or local mode.

In ``shared`` mode the replicas decide their limits in Redis, read and write the L2 tier and
hear invalidations, and a heartbeat keeps the count of live replicas. When Redis fails (any
call past ``[redis] timeout_s``), the replica switches to ``local`` mode at once: it keeps
serving from L1, and limits each credential to its share of the quota — ``qps ÷ live
replicas`` as last known — so the replicas together still stay under the quota. A reconnect
loop with back-off returns it to ``shared`` mode.

:class:`Replicas` announces every change of mode to the callbacks given to
:meth:`Replicas.subscribe` (the credential pool holds its credentials across it); the other
parts ask it (:attr:`Replicas.sharing`) and report Redis failures to it
(:meth:`Replicas.lost`). It never assigns into them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib.resources import files
from typing import Any, Literal

from redis.exceptions import TimeoutError as RedisTimeoutError

from taogate._redis import FAILURES, RedisClient
from taogate._settings import RedisSettings
from taogate._tasks import cancel_within
from taogate.quota.sharing import SharedUnavailable

__all__ = ["MALFORMED_SOURCES", "Replicas", "ReplicasStats"]

log = logging.getLogger("taogate.replicas")
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


#: ``shared``: limits and L2 in Redis, with every replica; ``local``: Redis is away, this
#: replica counts alone at its share
Mode = Literal["shared", "local"]


@dataclass(frozen=True, slots=True)
class ReplicasStats:
    """What :meth:`Replicas.stats` reports: this replica's id and mode, the replicas the
    heartbeat last counted (live, and departed recently), the switches of mode, and the
    malformed values read from Redis by where they were found (:data:`MALFORMED_SOURCES`)."""

    replica: str
    mode: Mode
    live_replicas: int
    departed: int
    mode_changes: int
    malformed: Mapping[str, int]


class Replicas:
    """This replica's membership and mode; started and closed by its owner (the assembly),
    which also owns ``client``."""

    def __init__(self, client: RedisClient, settings: RedisSettings) -> None:
        self.settings = settings
        self.replica_id = f"{os.uname().nodename}-{os.getpid()}-{os.urandom(3).hex()}"
        self.mode: Mode = "local"
        # until a heartbeat has counted them, assume the configured number of replicas
        self.live_replicas = max(1, settings.expected_replicas)
        self.departed = 0
        self._decided_locally = False
        self.mode_changes = 0
        self._timeouts = 0
        #: other malformed values read from Redis, by where they were found
        self.malformed = dict.fromkeys(MALFORMED_SOURCES, 0)
        self._client = client
        self._subscribers: list[Callable[[float], object]] = []
        lua = files("taogate.replicas").joinpath("lua")
        self._heartbeat = client.register_script(lua.joinpath("heartbeat.lua").read_text())
        self._tasks: list[asyncio.Task[None]] = []
        self._recovered = asyncio.Event()
        self._lost = asyncio.Event()

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

    async def wait_shared(self) -> None:
        """Return once the replicas share Redis (at once if they do)."""
        await self._recovered.wait()

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

    def stats(self) -> ReplicasStats:
        """The replica's state and counters now."""
        return ReplicasStats(
            replica=self.replica_id,
            mode=self.mode,
            live_replicas=self.live_replicas,
            departed=self.departed,
            mode_changes=self.mode_changes,
            malformed=dict(self.malformed),
        )

    # --- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        """Join the replicas (or start in local mode if Redis is down) and start the loops."""
        try:
            await self._beat()
            self._shared()
        except FAILURES as exc:
            self.lost(exc)
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._heartbeats(), name="taogate-heartbeat"),
            loop.create_task(self._reconnects(), name="taogate-reconnect"),
        ]

    async def aclose(self) -> None:
        """Stop the loops and leave the count of live replicas (the client stays open)."""
        await cancel_within(self._tasks, CLOSE_WAIT_S, log=log, what="replica tasks")
        if self.mode == "shared":
            with contextlib.suppress(*FAILURES):
                await self._client.zrem(self._replicas_key, self.replica_id)

    # --- mode ----------------------------------------------------------------------------

    @property
    def _replicas_key(self) -> str:
        return f"{{{self.settings.prefix}:m}}:replicas"

    @property
    def _departed_key(self) -> str:
        return f"{{{self.settings.prefix}:m}}:departed"

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
            except FAILURES as exc:
                self.lost(exc)

    async def _reconnects(self) -> None:
        """While in local mode, try Redis again with jittered back-off; return to shared."""
        delay = 0.1
        while True:
            await self._lost.wait()
            await asyncio.sleep(delay * random.uniform(0.5, 1.0))  # never past the cap
            try:
                await self._beat()
            except FAILURES:
                delay = min(_RECONNECT_CAP_S, delay * 2)
                continue
            delay = 0.1
            self._shared()
