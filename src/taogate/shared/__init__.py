"""State shared by every replica through Redis: limits, L2, invalidations, membership.

Imported only when ``[redis] url`` is set; ``import taogate`` never opens a connection.
"""

from taogate.shared._limits import SharedLimits

__all__ = ["SharedLimits"]
