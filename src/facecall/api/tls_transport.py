"""HTTPS on the node's own port, with the TLS handshake inside the node's connection limits.

Given a certificate, uvicorn would hand it to ``loop.create_server(ssl=...)``: the event loop
then runs every connection's TLS handshake (RFC 8446 §4) before uvicorn's protocol exists, for
up to asyncio's 60 s, and counts it nowhere. A client opening thousands of TCP connections and
sending no ClientHello (or half of one) would hold a descriptor and a TLS object each, past
``Settings.max_connections`` and ``Settings.http_head_timeout``.

:class:`TlsHandshakeGuard` is the protocol uvicorn creates instead (``Config(http=...)``, the
listening socket without ``ssl``). It counts the connection among uvicorn's open connections
from its first moment — one over ``max_connections`` is closed at once, before any handshake
(nothing can be answered before TLS) — and runs the handshake with ``loop.start_tls`` within
``Settings.http_head_timeout``. Then the connection is :class:`~facecall.api.http_transport.
GuardedHttpProtocol`'s, as over plain TCP: the same head limits and deadlines, the same
WebSocket upgrade to ``/v1/signaling``.
"""

from __future__ import annotations

import asyncio
import ssl
from typing import Any

from facecall.api.http_transport import GuardedHttpProtocol, connection_limit
from facecall.config import Settings
from facecall.logs import get_logger

log = get_logger(__name__)


class TlsHandshakeGuard(asyncio.Protocol):
    """One connection until its TLS handshake is done (uvicorn ``http=`` factory, see the module
    docstring). Build it with :meth:`factory`.

    It is the connection's protocol twice over: on the TCP transport until ``start_tls`` takes
    it, then on the TLS transport until the HTTP protocol takes over — what arrives between the
    handshake's end and that hand-over (a client sends its request right behind its Finished)
    is kept here and handed on in order."""

    __slots__ = ("_app_state", "_config", "_context", "_early", "_eof", "_handshake", "_loop",
                 "_lost", "_server_state", "_transport")

    def __init__(self, context: ssl.SSLContext, config: Any, server_state: Any,
                 app_state: dict[str, Any], _loop: asyncio.AbstractEventLoop | None = None) -> None:
        self._context = context
        self._config = config
        self._server_state = server_state
        self._app_state = app_state
        self._loop = _loop or asyncio.get_running_loop()
        self._transport: asyncio.Transport | None = None
        self._handshake: asyncio.Task[None] | None = None
        self._early: list[bytes] = []  # application data read before the hand-over
        self._eof = False
        self._lost = False

    @classmethod
    def factory(cls, context: ssl.SSLContext) -> Any:
        """The ``http=`` class for uvicorn: called as uvicorn calls its protocol classes."""

        def create(config: Any, server_state: Any, app_state: dict[str, Any],
                   _loop: asyncio.AbstractEventLoop | None = None) -> TlsHandshakeGuard:
            return cls(context, config, server_state, app_state, _loop)

        return create

    # -- asyncio.Protocol --------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        settings: Settings = self._config.app.state.settings
        connections = self._server_state.connections
        if len(connections) >= connection_limit(settings):
            log.warning("Refused a connection before its TLS handshake: %d are open.",
                        len(connections))
            transport.close()
            return
        self._transport = transport
        connections.add(self)
        transport.pause_reading()  # the ClientHello is for start_tls's protocol, not this one
        self._handshake = self._loop.create_task(self._run_handshake(transport, settings))

    def data_received(self, data: bytes) -> None:
        self._early.append(data)

    def eof_received(self) -> bool:
        self._eof = True
        return True  # the HTTP protocol decides, once it has the connection

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        self._end()

    # -- uvicorn's connection interface ------------------------------------------------------

    def shutdown(self) -> None:
        """uvicorn is stopping: a connection still in its handshake has nothing to finish."""
        if self._handshake is not None:
            self._handshake.cancel()
        if self._transport is not None:
            self._transport.abort()
        self._end()

    # -- internals ---------------------------------------------------------------------------

    async def _run_handshake(self, transport: asyncio.Transport, settings: Settings) -> None:
        try:
            tls = await self._loop.start_tls(
                transport, self, self._context, server_side=True,
                ssl_handshake_timeout=settings.http_head_timeout)
        except OSError as exc:  # ssl.SSLError, a reset, the timeout (ConnectionAbortedError)
            log.debug("TLS handshake with %s failed: %r",
                      transport.get_extra_info("peername"), exc)
            transport.abort()
            return
        finally:
            self._end()
        if tls is None or self._lost:  # the connection ended as the handshake did
            return
        http = GuardedHttpProtocol(config=self._config, server_state=self._server_state,
                                   app_state=self._app_state, _loop=self._loop)
        tls.set_protocol(http)
        http.connection_made(tls)  # type: ignore[arg-type]
        if self._early and not tls.is_closing():
            http.data_received(b"".join(self._early))
        self._early.clear()
        if self._eof and not tls.is_closing() and not http.eof_received():
            tls.close()

    def _end(self) -> None:
        self._server_state.connections.discard(self)
        self._transport = None
