"""The Redis client: one pooled redis-py asyncio client for a node, a Sentinel master or a
Cluster, shared by the replicas, the shared limits, the L2 tier and the job store (``connect``,
``close``). Imported only when ``[redis] url`` is set."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from taogate._errors import ConfigurationError
from taogate._settings import RedisSettings

__all__ = ["FAILURES", "RedisClient", "close", "connect"]

RedisClient = Redis | RedisCluster
#: What a failed Redis call raises.
FAILURES = (RedisError, OSError, TimeoutError)
MAX_CONNECTIONS = 32
_SENTINELS: dict[int, Sentinel] = {}


def connect(settings: RedisSettings) -> RedisClient:
    """A client for ``settings.url``; no connection is opened until the first command."""
    if not settings.url:
        raise ConfigurationError("[redis] url is not set", field="redis.url")
    options: dict[str, Any] = {
        "socket_timeout": settings.timeout_s,
        "socket_connect_timeout": settings.timeout_s,
    }
    if settings.cluster:
        return RedisCluster.from_url(settings.url, **options)
    # one immediate retry on a broken connection (after a Redis restart the pool's idle
    # connections are dead, and the first command on each must not count as an outage);
    # never on a timeout, which would double the time a request can wait on Redis
    options["retry"] = Retry(NoBackoff(), retries=1, supported_errors=(RedisConnectionError,))
    if settings.url.startswith("redis+sentinel://"):
        parts = urlsplit(settings.url)
        hosts = []
        for hostport in parts.netloc.rsplit("@", 1)[-1].split(","):
            host, _, port = hostport.partition(":")
            hosts.append((host, int(port or 26379)))
        service = parts.path.strip("/") or "mymaster"
        # typed through a Callable so it checks with and without typed redis-py stubs
        make_sentinel: Callable[..., Sentinel] = Sentinel
        sentinel = make_sentinel(hosts, sentinel_kwargs=options, **options)
        master: Redis = sentinel.master_for(service, **options)
        _SENTINELS[id(master)] = sentinel  # its connections to the sentinels close with it
        return master
    # a bounded pool: a burst waits (within the timeout) for a connection instead of opening
    # hundreds; Redis work is batched, so a few connections carry it
    pool = BlockingConnectionPool.from_url(
        settings.url, max_connections=MAX_CONNECTIONS, timeout=settings.timeout_s, **options
    )
    return Redis.from_pool(pool)  # the client owns the pool: aclose() disconnects it


async def close(client: RedisClient) -> None:
    """Close ``client``, its pool, and for Sentinel the connections to the sentinels."""
    await client.aclose()
    sentinel = _SENTINELS.pop(id(client), None)
    if sentinel is not None:
        for node in sentinel.sentinels:
            await node.aclose()
