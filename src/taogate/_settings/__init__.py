"""Configuration: one TOML file, every value overridable by ``TAOGATE_*`` environment variables.

Nested values use ``__``: ``TAOGATE_UPSTREAM__URL``, ``TAOGATE_LIMITS__SAFETY_FACTOR``; lists take
JSON (``TAOGATE_CREDENTIALS='[{"app_key": "...", "secret_env": "KEY1_SECRET"}]'``). The file and
the environment are read once, at the edge, into a frozen :class:`Settings`.

The parts: ``_upstream`` (the sections about the upstream: API, credentials, egresses, limits),
``_sections`` (the others, and their base), ``_root`` (:class:`Settings`, the whole) and
``_load`` (:func:`load_settings`). Settings import base modules only (credentials, ids,
masking), never the parts they configure.
"""

from taogate._settings._load import load_settings
from taogate._settings._root import Settings
from taogate._settings._sections import (
    MIN_TOKEN_CHARS,
    CacheSettings,
    ClientSettings,
    DegradeSettings,
    DegradeWindow,
    EdgeCacheSettings,
    JobsSettings,
    RedisSettings,
    ServerSettings,
    SimKeySettings,
    SimSettings,
)
from taogate._settings._upstream import (
    AccountSettings,
    CredentialSettings,
    EgressSettings,
    LimitsSettings,
    SecretsSettings,
    UpstreamSettings,
)

__all__ = [
    "MIN_TOKEN_CHARS",
    "AccountSettings",
    "CacheSettings",
    "ClientSettings",
    "CredentialSettings",
    "DegradeSettings",
    "DegradeWindow",
    "EdgeCacheSettings",
    "EgressSettings",
    "JobsSettings",
    "LimitsSettings",
    "RedisSettings",
    "SecretsSettings",
    "ServerSettings",
    "Settings",
    "SimKeySettings",
    "SimSettings",
    "UpstreamSettings",
    "load_settings",
]
