"""The service: the gateway and what a deployment runs beside it, started and stopped in order.

``async with Service(settings) as svc:`` starts, in this order:

1. the gateway's parts (``taogate._assembly``): with Redis, the replicas (joining, or local
   mode if Redis is down), the pub/sub listener and the shared degrade override; the secret
   files;
2. the gateway itself: the degraded-mode watcher and the dispatcher;
3. with Redis and ``[jobs] enabled``, the bulk-job store and this replica's job worker, which
   looks chunks up through the gateway at bulk priority.

Closing stops them in reverse. ``svc.gateway`` is there from the start (not started until
then), ``svc.replicas`` and ``svc.jobs`` once started (``None`` without Redis, and ``jobs``
without ``[jobs] enabled``). ``taogate serve`` runs one per process; a library user who needs
no job worker can use :class:`~taogate.Gateway` alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Callable
from typing import TYPE_CHECKING, Self

from taogate._breaker import BreakerPolicy
from taogate._gateway import Gateway
from taogate._settings import Settings
from taogate.providers.base import Provider

if TYPE_CHECKING:  # Redis and jobs are integrations: imported only where they are configured
    from taogate._redis import RedisClient
    from taogate.jobs._store import JobStore
    from taogate.jobs._worker import JobWorker
    from taogate.replicas import Replicas

__all__ = ["Service"]

#: Seconds the job worker's blocking stream read waits for new chunks.
JOBS_BLOCK_S = 1.0
#: Seconds closing waits for the job worker's loop to end.
JOBS_CLOSE_WAIT_S = 5.0


class Service:
    """The gateway, its replicas and its job worker as one unit. Use it as an async context
    manager (or :meth:`start` and :meth:`aclose`)."""

    def __init__(
        self,
        settings: Settings,
        *,
        provider: Provider | None = None,
        breaker_policy: BreakerPolicy | None = None,
        clock: Callable[[], float] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.settings = settings
        self.gateway = Gateway(
            settings, provider=provider, breaker_policy=breaker_policy, clock=clock, rng=rng
        )
        #: the replicas on Redis, once started (``None`` without Redis)
        self.replicas: Replicas | None = None
        #: the bulk-job store, once started (``None`` without Redis or ``[jobs] enabled``)
        self.jobs: JobStore | None = None
        self._worker: JobWorker | None = None
        self._worker_task: asyncio.Task[None] | None = None
        self._reader: RedisClient | None = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    @property
    def started(self) -> bool:
        """Whether the service is started and not yet closed."""
        return self.gateway.started

    async def start(self) -> None:
        """Start the gateway (and its parts), then the job worker."""
        if self.gateway.started:
            return
        await self.gateway.start()
        parts = self.gateway.parts
        self.replicas = parts.replicas
        s = self.settings
        if parts.redis is None or parts.replicas is None or not s.jobs.enabled:
            return
        from taogate._redis import connect
        from taogate.jobs._store import JobStore
        from taogate.jobs._worker import JobWorker

        self.jobs = JobStore(
            parts.redis,
            prefix=s.redis.prefix,
            result_ttl_s=s.jobs.result_ttl_s,
            on_malformed=parts.replicas.note_malformed,
        )
        # XREADGROUP blocks: its own client, with a socket timeout longer than the block
        self._reader = connect(
            s.redis.model_copy(update={"timeout_s": JOBS_BLOCK_S + max(1.0, s.redis.timeout_s)})
        )
        self._worker = JobWorker(
            self.gateway,
            self.jobs,
            parts.redis,
            replicas=parts.replicas,
            concurrency=s.jobs.concurrency,
            claim_idle_s=s.jobs.claim_idle_s,
            deadline_s=s.jobs.deadline_s,
            max_attempts=s.jobs.max_attempts,
            reader=self._reader,
            block_s=JOBS_BLOCK_S,
        )
        loop = asyncio.get_running_loop()
        self._worker_task = loop.create_task(self._worker.run(), name="taogate-jobs")

    async def aclose(self) -> None:
        """Stop the job worker (its chunks in progress stay pending for others), then the
        gateway and its parts."""
        task, self._worker_task = self._worker_task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                await asyncio.wait_for(task, timeout=JOBS_CLOSE_WAIT_S)
        worker, self._worker = self._worker, None
        if worker is not None:
            await worker.aclose()
        reader, self._reader = self._reader, None
        if reader is not None:
            from taogate._redis import close

            await close(reader)
        await self.gateway.aclose()
