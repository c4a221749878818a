"""Ending background tasks within a bound, for the parts that own some (Redis work above all)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable

__all__ = ["CLOSE_WAIT_S", "cancel_within"]

#: How long closing a part waits for its background tasks by default, in seconds.
CLOSE_WAIT_S = 3.0


async def cancel_within(
    tasks: Iterable[asyncio.Task[None]],
    wait_s: float = CLOSE_WAIT_S,
    *,
    log: logging.Logger,
    what: str,
) -> None:
    """Cancel ``tasks`` and wait at most ``wait_s`` for them to end.

    Bounded: a task stuck inside the Redis client (a cancelled wait for a pooled connection has
    been seen not to end) must not hang the shutdown. What the ended tasks raised is retrieved
    and dropped: a failure at shutdown says nothing new.
    """
    tasks = list(tasks)
    for task in tasks:
        task.cancel()
    if not tasks:
        return
    done, pending = await asyncio.wait(tasks, timeout=wait_s)
    for task in done:
        if not task.cancelled():
            task.exception()
    if pending:
        log.warning("%d %s did not stop within %.0f s", len(pending), what, wait_s)
