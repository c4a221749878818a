"""``taogate serve`` never opens an API without clients to the network by accident."""

from __future__ import annotations

import pytest

from taogate import ConfigurationError, Settings
from taogate.http._serve import check_exposure, is_loopback

CLIENT = {"name": "site", "token": "site-token-for-the-exposure-test-0001"}


@pytest.mark.parametrize("host", ["127.0.0.1", "127.1.2.3", "::1", "[::1]", "localhost"])
def test_loopback_is_always_allowed(host: str) -> None:
    assert is_loopback(host)
    check_exposure(Settings(), host)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "10.0.0.5", "gateway.internal", ""])  # noqa: S104
def test_a_network_address_needs_clients_or_allow_anonymous(host: str) -> None:
    assert not is_loopback(host)
    with pytest.raises(ConfigurationError, match="allow_anonymous") as caught:
        check_exposure(Settings(), host)
    assert caught.value.field == "server.allow_anonymous"
    check_exposure(Settings(server={"clients": [CLIENT]}), host)
    check_exposure(Settings(server={"allow_anonymous": True}), host)
