"""uvicorn's httptools protocol with a deadline and a size limit on each request's headers.

uvicorn bounds the time between requests (``timeout_keep_alive``) but not the time a client takes
to send a request's line and headers, nor their size on httptools. Here a timer starts when a
connection opens and when a request's first byte arrives, and stops when its headers are
complete: past ``[server] header_timeout_s`` the connection is answered 408 and closed (one that
sent nothing is just closed). Headers past ``[server] max_header_bytes`` are answered 431 and the
connection closed. The body's own deadline is the edge's (``_body``), where it is answered with
a problem document.

uvicorn builds a protocol per connection from its ``Config``: :class:`ServiceConfig` carries
the limits, and :class:`GuardedHttpToolsProtocol` (its ``http``) reads them there.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import httptools
import orjson
import uvicorn
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol
from uvicorn.server import ServerState

from taogate.http._problems import Problem

__all__ = ["ConnectionLimits", "GuardedHttpToolsProtocol", "ServiceConfig"]

#: a header line's bytes besides its name and value: ": " and CRLF
_LINE_OVERHEAD = 4


@dataclass(frozen=True, slots=True, kw_only=True)
class ConnectionLimits:
    """Bounds on receiving one request's line and headers."""

    header_timeout_s: float = 10.0
    max_header_bytes: int = 16 * 1024


class ServiceConfig(uvicorn.Config):
    """uvicorn's ``Config`` with the :class:`ConnectionLimits` the protocol reads.

    Picklable (module-level classes, plain attributes), so ``--workers N`` passes it on.
    """

    def __init__(self, app: Any, *, limits: ConnectionLimits, **kwargs: Any) -> None:
        kwargs.setdefault("http", GuardedHttpToolsProtocol)
        kwargs.setdefault("h11_max_incomplete_event_size", limits.max_header_bytes)
        super().__init__(app, **kwargs)
        self.limits = limits


class _HeadersTooLarge(Exception):
    """Raised from a parser callback to stop parsing headers past the limit."""


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """``HttpToolsProtocol`` with a header deadline and a header size limit."""

    def __init__(
        self,
        config: uvicorn.Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        limits = config.limits if isinstance(config, ServiceConfig) else ConnectionLimits()
        self._header_timeout_s = limits.header_timeout_s
        self._max_header_bytes = limits.max_header_bytes
        self._header_timer: asyncio.TimerHandle | None = None
        #: between a request's first byte (or the connection's start) and its complete headers
        self._reading_headers = False
        #: bytes of the request line and headers parsed so far (exact)
        self._header_size = 0
        #: bytes received while the headers were incomplete: bounds a single huge header line
        #: that the parser keeps whole before any callback sees it (may count a pipelined
        #: previous request's tail too; it only errs towards refusing)
        self._header_bytes_received = 0
        self._headers_too_large = False
        self._received_any = False

    # the header phase

    def _begin_headers(self) -> None:
        if self._reading_headers:
            return
        self._reading_headers = True
        self._header_size = 0
        self._header_bytes_received = 0
        self._header_timer = self.loop.call_later(self._header_timeout_s, self._headers_too_slow)

    def _end_headers(self) -> None:
        self._reading_headers = False
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _count_header_bytes(self, size: int) -> None:
        self._header_size += size
        if self._header_size > self._max_header_bytes:
            self._headers_too_large = True
            raise _HeadersTooLarge

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._begin_headers()

    def connection_lost(self, exc: Exception | None) -> None:
        self._end_headers()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._headers_too_large:
            return
        self._received_any = True
        self._unset_keepalive_if_required()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return
        except httptools.HttpParserError:
            self._end_headers()
            if self._headers_too_large:
                self._refuse(431, "headers-too-large", self._too_large_detail())
            else:
                msg = "Invalid HTTP request received."
                self.logger.warning(msg)
                self.send_400_response(msg)
            return
        if self._reading_headers:
            self._header_bytes_received += len(data)
            if self._header_bytes_received > self._max_header_bytes:
                self._headers_too_large = True
                self._end_headers()
                self._refuse(431, "headers-too-large", self._too_large_detail())

    # httptools parser callbacks

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._begin_headers()

    def on_url(self, url: bytes) -> None:
        self._count_header_bytes(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count_header_bytes(len(name) + len(value) + _LINE_OVERHEAD)
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._end_headers()
        super().on_headers_complete()

    # refusals

    def _too_large_detail(self) -> str:
        return f"the request line and headers may hold at most {self._max_header_bytes} bytes"

    def _headers_too_slow(self) -> None:
        self._header_timer = None
        self._reading_headers = False
        if self.transport.is_closing():
            return
        if not self._received_any:
            self.transport.close()  # a connection that never sent a byte: nothing to answer
            return
        detail = f"the request headers did not arrive within {self._header_timeout_s:g} s"
        self._refuse(408, "request-timeout", detail)

    def _refuse(self, status: int, slug: str, detail: str) -> None:
        """Answer ``status`` with a problem document and close, unless an answer is under way."""
        if self.transport.is_closing():
            return
        if self.cycle is not None and not self.cycle.response_complete:
            self.transport.close()  # a pipelined request's answer is still being written
            return
        body = orjson.dumps(Problem(slug, detail).body("", None))
        head = [STATUS_LINE[status]]
        for name, value in self.server_state.default_headers:
            head += [name, b": ", value, b"\r\n"]
        head += [
            b"content-type: application/problem+json\r\n",
            b"content-length: %d\r\n" % len(body),
            b"cache-control: no-store\r\n",
            b"connection: close\r\n\r\n",
        ]
        self.transport.write(b"".join(head) + body)
        self.transport.close()
