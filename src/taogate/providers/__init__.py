"""Upstream providers: TOP and reseller APIs behind one small protocol."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

from taogate._ids import IdPolicy
from taogate.providers.base import Credential, Egress, Provider
from taogate.providers.reseller import ResellerProvider
from taogate.providers.top import SignMethod, TopProvider

__all__ = [
    "Credential",
    "Egress",
    "Provider",
    "ResellerProvider",
    "TopProvider",
    "UpstreamConfig",
    "build_provider",
]


class UpstreamConfig(Protocol):
    """What :func:`build_provider` reads of an upstream's description (``Settings.upstream``
    is one); providers take plain values and know nothing of the settings."""

    @property
    def kind(self) -> str: ...  # "top" or "reseller"
    @property
    def url(self) -> str: ...
    @property
    def method(self) -> str: ...
    @property
    def sign_method(self) -> SignMethod: ...
    @property
    def simplify(self) -> bool: ...
    @property
    def params(self) -> Mapping[str, str]: ...
    @property
    def timeout_s(self) -> float: ...
    @property
    def connect_timeout_s(self) -> float: ...
    @property
    def max_connections(self) -> int: ...
    @property
    def max_response_bytes(self) -> int: ...
    @property
    def id_policy(self) -> IdPolicy: ...


def build_provider(upstream: UpstreamConfig, egresses: Sequence[Egress] = ()) -> Provider:
    """The provider that ``[upstream]`` describes, calling out through ``egresses`` (it opens
    no connection until the first call)."""
    if upstream.kind == "reseller":
        return ResellerProvider(
            url=upstream.url,
            timeout_s=upstream.timeout_s,
            connect_timeout_s=upstream.connect_timeout_s,
            max_connections=upstream.max_connections,
            max_response_bytes=upstream.max_response_bytes,
            id_policy=upstream.id_policy,
            egresses=egresses,
        )
    return TopProvider(
        url=upstream.url,
        method=upstream.method,
        sign_method=upstream.sign_method,
        simplify=upstream.simplify,
        params=upstream.params,
        timeout_s=upstream.timeout_s,
        connect_timeout_s=upstream.connect_timeout_s,
        max_connections=upstream.max_connections,
        max_response_bytes=upstream.max_response_bytes,
        id_policy=upstream.id_policy,
        egresses=egresses,
    )
