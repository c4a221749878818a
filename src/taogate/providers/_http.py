"""The pooled keep-alive HTTP client session that every provider uses."""

from __future__ import annotations

from collections.abc import Mapping

import aiohttp

from taogate._errors import UpstreamTransient

__all__ = ["PooledSession"]


class PooledSession:
    """A keep-alive session made on first use (inside the event loop) and closed once.

    One TCP/TLS handshake per pooled connection, not per call. ``timeout_s`` bounds a whole call,
    ``connect_timeout_s`` the connection set-up. A session passed in is used and never closed.
    """

    def __init__(
        self,
        *,
        timeout_s: float,
        connect_timeout_s: float,
        max_connections: int,
        local_address: str | None = None,
        session: aiohttp.ClientSession | None = None,
    ) -> None:
        self._timeout = aiohttp.ClientTimeout(total=timeout_s, sock_connect=connect_timeout_s)
        self._max_connections = max_connections
        self._local_address = local_address
        self._session = session
        self._owned = session is None

    def get(self) -> aiohttp.ClientSession:
        """The session, created on the first call."""
        if self._session is None:
            connector = aiohttp.TCPConnector(
                limit=self._max_connections,
                limit_per_host=self._max_connections,
                ttl_dns_cache=300,
                local_addr=(self._local_address, 0) if self._local_address else None,
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                timeout=self._timeout,
                headers={"User-Agent": "taogate"},
            )
        return self._session

    async def aclose(self) -> None:
        """Close the session if this object made it."""
        if self._owned and self._session is not None:
            session, self._session = self._session, None
            await session.close()

    async def call(
        self,
        method: str,
        url: str,
        *,
        credential: str,
        params: Mapping[str, str] | None = None,
        data: Mapping[str, str] | None = None,
    ) -> bytes:
        """The body of a 200 answer; transport failures and other statuses are transient.

        No exception raised here chains or carries the client's own (neither ``__cause__`` nor
        ``__context__``): its message and request info could carry a secret from the URL
        (resellers put the secret in the query string).
        """
        failure: str | None = None
        try:
            async with self.get().request(method, url, params=params, data=data) as resp:
                body = await resp.read()
                status = resp.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            failure = f"transport failure ({type(exc).__name__})"
        if failure is not None:  # raised outside the handler: no __context__ to leak through
            raise UpstreamTransient(failure, credential=credential)
        if status != 200:
            raise UpstreamTransient(f"HTTP {status}", credential=credential, code=f"http_{status}")
        return body
