"""What the replicas tell each other through Redis pub/sub: each channel to its handler.

The channels and their handlers are given when the listener is built (invalidations to the L2
tier, degraded-mode changes to the shared override). Messages are read while the replicas
share Redis; a failure is reported to :meth:`Replicas.lost`, and listening resumes when they
share again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from taogate._redis import FAILURES, RedisClient
from taogate._tasks import cancel_within
from taogate.replicas._replicas import CLOSE_WAIT_S, Replicas

__all__ = ["PubSubListener"]

log = logging.getLogger("taogate.replicas")


class PubSubListener:
    """Hands every message on its channels to that channel's handler; started and closed by
    its owner."""

    def __init__(
        self,
        client: RedisClient,
        replicas: Replicas,
        handlers: Mapping[str, Callable[[Any], object]],
    ) -> None:
        self._client = client
        self._replicas = replicas
        self._handlers = dict(handlers)
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        if self._handlers and self._task is None:
            loop = asyncio.get_running_loop()
            self._task = loop.create_task(self._listen(), name="taogate-pubsub")

    async def aclose(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            await cancel_within([task], CLOSE_WAIT_S, log=log, what="pub/sub tasks")

    async def _listen(self) -> None:
        replicas = self._replicas
        task = asyncio.current_task()
        while True:
            await replicas.wait_shared()
            pubsub = self._client.pubsub()
            try:
                await pubsub.subscribe(*self._handlers)
                while replicas.sharing:
                    if task is not None and task.cancelling():
                        # redis-py's subscribe() can swallow a cancellation that arrives
                        # while it runs: end as cancelled instead of listening on
                        raise asyncio.CancelledError
                    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                    if message is not None and message.get("type") == "message":
                        self._on_message(message)
            except FAILURES as exc:
                replicas.lost(exc)
            finally:
                with contextlib.suppress(*FAILURES):
                    # typed through a Callable: untyped in older redis-py stubs, typed in newer
                    close_pubsub: Callable[[], Awaitable[None]] = pubsub.aclose
                    await close_pubsub()

    def _on_message(self, message: dict[str, Any]) -> None:
        """One message to its channel's handler (whose failure is logged, and the listener
        goes on)."""
        channel = message.get("channel")
        if isinstance(channel, bytes):
            channel = channel.decode(errors="replace")
        handler = self._handlers.get(channel) if isinstance(channel, str) else None
        if handler is None:
            return
        try:
            handler(message.get("data"))
        except Exception:
            log.exception("a pub/sub message on %r could not be handled", channel)
