"""The replicas on one Redis as one unit: membership (heartbeat, live count), shared or local
mode (announced to whoever subscribes), the pub/sub channels they tell each other through, and
the degraded-mode override they share.

The limits shared through Redis live in ``taogate.quota.redis``, the L2 tier in
``taogate.cache.redis``, the Redis client in ``taogate._redis``; ``taogate._assembly`` wires
them. Imported only when ``[redis] url`` is set; ``import taogate`` never opens a connection.
"""

from taogate.replicas._override import SharedOverride
from taogate.replicas._pubsub import PubSubListener
from taogate.replicas._replicas import MALFORMED_SOURCES, Replicas, ReplicasStats

__all__ = ["MALFORMED_SOURCES", "PubSubListener", "Replicas", "ReplicasStats", "SharedOverride"]
