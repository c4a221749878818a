"""The pooled keep-alive HTTP client session that every provider uses."""

from __future__ import annotations

from collections.abc import Mapping

import aiohttp

from taogate._credentials import DEFAULT_EGRESS, Egress
from taogate._errors import EgressUnreachable, UpstreamTransient

__all__ = ["DEFAULT_MAX_RESPONSE_BYTES", "PooledSession"]

#: The largest answer read from an upstream (a full 40-item answer is some 40 KiB).
DEFAULT_MAX_RESPONSE_BYTES = 8 * 1024 * 1024
_CHUNK = 64 * 1024


class _TooLarge(Exception):
    """An answer past the size cap (turned into :class:`UpstreamTransient` by the caller)."""


class PooledSession:
    """Keep-alive sessions made on first use (inside the event loop) and closed once.

    One TCP/TLS handshake per pooled connection, not per call. ``timeout_s`` bounds a whole call,
    ``connect_timeout_s`` the connection set-up. Each egress gets a session of its own (bound
    to its local address; its proxy named on each request). A session passed in is used for
    every egress and never closed. An answer is read up to ``max_response_bytes`` only, and a
    redirect is never followed (it would send the signed request somewhere else).
    """

    def __init__(
        self,
        *,
        timeout_s: float,
        connect_timeout_s: float,
        max_connections: int,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
        egresses: Mapping[str, Egress] | None = None,
        session: aiohttp.ClientSession | None = None,
    ) -> None:
        if max_response_bytes < 1:
            raise ValueError("max_response_bytes must be at least 1")
        self._max_bytes = max_response_bytes
        self._timeout = aiohttp.ClientTimeout(total=timeout_s, sock_connect=connect_timeout_s)
        self._max_connections = max_connections
        self._egresses = dict(egresses or {})
        self._given = session
        self._sessions: dict[str, aiohttp.ClientSession] = {}

    def get(self, egress: str | None = None) -> aiohttp.ClientSession:
        """The session of ``egress`` (the default one for ``None``), created on first use."""
        if self._given is not None:
            return self._given
        name = egress or DEFAULT_EGRESS
        session = self._sessions.get(name)
        if session is None:
            route = self._egresses.get(name)
            local = route.local_address if route is not None else None
            connector = aiohttp.TCPConnector(
                limit=self._max_connections,
                limit_per_host=self._max_connections,
                ttl_dns_cache=300,
                local_addr=(local, 0) if local else None,
            )
            session = aiohttp.ClientSession(
                connector=connector,
                timeout=self._timeout,
                headers={"User-Agent": "taogate"},
            )
            self._sessions[name] = session
        return session

    async def aclose(self) -> None:
        """Close the sessions this object made."""
        sessions, self._sessions = list(self._sessions.values()), {}
        for session in sessions:
            await session.close()

    async def call(
        self,
        method: str,
        url: str,
        *,
        credential: str,
        params: Mapping[str, str] | None = None,
        data: Mapping[str, str] | None = None,
        egress: str | None = None,
    ) -> bytes:
        """The body of a 200 answer; transport failures, other statuses (redirects too) and
        answers larger than ``max_response_bytes`` are transient.

        No exception raised here chains or carries the client's own (neither ``__cause__`` nor
        ``__context__``): its message and request info could carry a secret from the URL
        (resellers put the secret in the query string).
        """
        failure: str | None = None
        unreachable = False
        route = self._egresses.get(egress or DEFAULT_EGRESS)
        proxy = route.proxy if route is not None else None
        body = b""
        try:
            async with self.get(egress).request(
                method, url, params=params, data=data, proxy=proxy, allow_redirects=False
            ) as resp:
                status = resp.status
                if status == 200:  # another status says all it has to say; its body is not read
                    body = await self._read_capped(resp)
        except _TooLarge as exc:
            failure = f"answer larger than {self._max_bytes} bytes ({exc})"
        except (aiohttp.ClientConnectorError, aiohttp.ClientHttpProxyError) as exc:
            # no connection from here (the proxy, the bound address, or the upstream from it)
            failure = f"no connection through egress {egress or DEFAULT_EGRESS!r}"
            failure += f" ({type(exc).__name__})"
            unreachable = True
        except (aiohttp.ClientError, TimeoutError) as exc:
            failure = f"transport failure ({type(exc).__name__})"
        if failure is not None:  # raised outside the handler: no __context__ to leak through
            if unreachable:
                raise EgressUnreachable(
                    failure, egress=egress or DEFAULT_EGRESS, credential=credential
                )
            raise UpstreamTransient(failure, credential=credential)
        if status != 200:
            text = f"HTTP {status}"
            if 300 <= status < 400:
                text += " (a redirect; not followed)"
            raise UpstreamTransient(text, credential=credential, code=f"http_{status}")
        return body

    async def _read_capped(self, resp: aiohttp.ClientResponse) -> bytes:
        """The body, refused as soon as it is known to be larger than the cap."""
        declared = resp.content_length
        if declared is not None and declared > self._max_bytes:
            raise _TooLarge(f"Content-Length {declared}")
        chunks: list[bytes] = []
        size = 0
        while chunk := await resp.content.read(_CHUNK):
            size += len(chunk)
            if size > self._max_bytes:
                raise _TooLarge("read past the cap")
            chunks.append(chunk)
        return b"".join(chunks)
