"""Upstream providers: TOP and reseller APIs behind one small protocol."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from taogate.providers.base import Credential, Egress, Provider
from taogate.providers.reseller import ResellerProvider
from taogate.providers.top import TopProvider

if TYPE_CHECKING:
    from taogate._settings import UpstreamSettings

__all__ = ["Credential", "Egress", "Provider", "ResellerProvider", "TopProvider", "build_provider"]


def build_provider(upstream: UpstreamSettings, egresses: Sequence[Egress] = ()) -> Provider:
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
