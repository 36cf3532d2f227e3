"""HTTP/1.1 connections with the limits uvicorn leaves to a reverse proxy.

uvicorn's httptools protocol accepts a request head of any size (llhttp buffers a header value
until it ends), starts no timer before a connection's first response, and accepts connections
until the process runs out of file descriptors. One client holding a few thousand half-sent
heads would take the node down (DESIGN.md invariant 3: size limits everywhere).
:class:`GuardedHttpProtocol` is uvicorn's protocol with those limits added:

- a request head (request line and header fields, RFC 9112 §2.1) over
  ``Settings.http_max_head_bytes`` is answered ``431 Request Header Fields Too Large``
  (RFC 6585 §5) and the connection closed;
- a head must arrive within ``Settings.http_head_timeout`` seconds of the connection opening or
  of its first byte: else ``408 Request Timeout`` (RFC 9110 §15.5.9), or a plain close when the
  client sent nothing at all;
- a body announced by the head must arrive within ``Settings.http_body_timeout`` seconds: else
  the connection is closed and the route sees the client gone;
- at most ``Settings.max_connections`` connections (HTTP and WebSocket together) are open: one
  more is answered ``503 Service Unavailable`` and closed, so that the node keeps descriptors
  for its database and sockets.

Limits per client address are a reverse proxy's job (docs/operations.md).
"""

from __future__ import annotations

import asyncio
import json
import resource
from typing import Any

from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from facecall.config import Settings

#: descriptors kept out of ``max_connections`` when it is derived from the process's limit
RESERVED_DESCRIPTORS = 256


def connection_limit(settings: Settings) -> int:
    """``Settings.max_connections``, or when that is 0 the open-file limit less a reserve."""
    if settings.max_connections > 0:
        return settings.max_connections
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return max(64, soft - RESERVED_DESCRIPTORS)


def _refusal(status: int, detail: str) -> bytes:
    body = json.dumps({"detail": detail}).encode()
    return b"".join([
        STATUS_LINE[status], b"content-type: application/json\r\n",
        b"content-length: ", str(len(body)).encode(), b"\r\n", b"connection: close\r\n\r\n", body,
    ])


class HeadTooLarge(Exception):
    """Raised from a parser callback to stop parsing a head over the limit."""


class GuardedHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with bounded heads, head/body deadlines and a connection cap
    (uvicorn ``http=`` class; see the module docstring)."""

    def __init__(self, config: Any, server_state: Any, app_state: dict[str, Any],
                 _loop: asyncio.AbstractEventLoop | None = None) -> None:
        super().__init__(config, server_state, app_state, _loop)
        settings: Settings = config.app.state.settings
        self._max_head = settings.http_max_head_bytes
        self._head_timeout = settings.http_head_timeout
        self._body_timeout = settings.http_body_timeout
        self._max_connections = connection_limit(settings)
        self._reading_head = True  # between requests or inside a head
        self._head_bytes = 0  # bytes of the head being read (an upper bound: whole reads)
        self._heads = 0  # request heads completed on this connection
        self._head_size = 0  # bytes of the request line and fields parsed so far
        self._oversized = False
        self._deadline: asyncio.TimerHandle | None = None

    # -- asyncio.Protocol --------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self._max_connections:
            self.logger.warning("Refused a connection: %d are open.", len(self.connections) - 1)
            self._refuse(503, "too many connections; retry later")
            return
        self._arm(self._head_timeout, self._head_timed_out)

    def data_received(self, data: bytes) -> None:
        heads, reading_head = self._heads, self._reading_head
        if reading_head and self._deadline is None:  # a keep-alive request's first bytes
            self._arm(self._head_timeout, self._head_timed_out)
        super().data_received(data)
        # a head still unfinished after this read is counted in raw bytes (llhttp buffers a
        # field until it ends, so the parsed size alone would let one endless field through);
        # a read that finished a head may hold the start of the next: counted from the next
        # (a read that began inside a body and finished it is the body's, not a head's)
        if reading_head and self._reading_head and heads == self._heads \
                and not self.transport.is_closing():
            self._head_bytes += len(data)
            if self._head_bytes > self._max_head:
                self._refuse(431, f"request head larger than {self._max_head} bytes")

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def send_400_response(self, msg: str) -> None:
        """uvicorn's answer to a head the parser rejects; a head we stopped for its size
        gets 431 instead."""
        if self._oversized:
            self._refuse(431, f"request head larger than {self._max_head} bytes")
        else:
            super().send_400_response(msg)

    # -- httptools parser callbacks ----------------------------------------------------------

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_size = 0

    def on_url(self, url: bytes) -> None:
        self._count_head(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count_head(len(name) + len(value) + 4)  # ": " and CRLF
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._reading_head = False
        self._head_bytes = 0
        self._heads += 1
        self._disarm()
        upgrading = self.parser.should_upgrade() and self._should_upgrade()
        super().on_headers_complete()
        if not upgrading:  # a WebSocket keeps its own timers (ws_transport)
            self._arm(self._body_timeout, self._body_timed_out)

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._disarm()
        self._reading_head = True  # what comes next is the next request's head

    # -- internals ---------------------------------------------------------------------------

    def _count_head(self, size: int) -> None:
        """Count a parsed part of the head; past the limit, stop the parser (uvicorn then
        calls :meth:`send_400_response`, which answers 431)."""
        self._head_size += size
        if self._head_size > self._max_head:
            self._oversized = True
            raise HeadTooLarge(self._head_size)

    def _arm(self, delay: float, callback: Any) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(delay, callback)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _refuse(self, status: int, detail: str) -> None:
        """Answer ``status`` and close, unless a response is under way on this connection
        (pipelining): then close without one."""
        self._disarm()
        if self.transport.is_closing():
            return
        if self.cycle is None or self.cycle.response_complete:
            self.transport.write(_refusal(status, detail))
        self.transport.close()

    def _head_timed_out(self) -> None:
        self._deadline = None
        if self._head_bytes:  # a head was begun: say why it is cut off
            self._refuse(408, f"no complete request head within {self._head_timeout:g} s")
        elif not self.transport.is_closing():
            self.transport.close()  # an idle connection: nothing to answer

    def shutdown(self) -> None:
        """uvicorn is stopping. An idle connection over TLS is dropped at once: closing it
        properly waits for the client's close_notify (RFC 8446 §6.1), which a client that is
        not reading its pooled connection never sends, and that would hold the shutdown for
        asyncio's SSL shutdown timeout (30 s). Between requests there is nothing to lose."""
        idle = self.cycle is None or self.cycle.response_complete
        if idle and self.transport.get_extra_info("sslcontext") is not None:
            self.transport.abort()
            return
        super().shutdown()

    def _body_timed_out(self) -> None:
        self._deadline = None
        if not self.transport.is_closing():
            self.logger.info("Closed a connection whose request body did not arrive in time.")
            self.transport.close()
