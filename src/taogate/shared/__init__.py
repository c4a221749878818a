"""The replicas on one Redis: the client, membership (heartbeat, live count), shared or local
mode (announced to the credential pool, the L2 tier and degraded mode), and pub/sub.

The limits shared through Redis live in ``taogate.quota.redis``, the L2 tier in
``taogate.cache.redis``.

Imported only when ``[redis] url`` is set; ``import taogate`` never opens a connection.
"""
