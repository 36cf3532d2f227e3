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

The ClientHello may be read before ``start_tls`` has taken the transport: uvloop starts reading
a new connection right after ``connection_made``, whatever the protocol asked for there, and
the handshake starts on the next turn of the loop. Those bytes are kept and handed to the TLS
protocol first, before the transport reads on (:func:`started` and :func:`feed`).
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Awaitable, Coroutine, Generator
from typing import Any, Generic, TypeVar

from facecall.api.http_transport import GuardedHttpProtocol, connection_limit
from facecall.config import Settings
from facecall.logs import get_logger

log = get_logger(__name__)
T = TypeVar("T")


class _Rest(Generic[T]):
    """The rest of a coroutine that :func:`started` ran up to its first suspension."""

    __slots__ = ("_coro", "_waiting_on")

    def __init__(self, coro: Coroutine[Any, Any, T], waiting_on: Any) -> None:
        self._coro = coro
        self._waiting_on = waiting_on

    def __await__(self) -> Generator[Any, Any, T]:
        coro, signal = self._coro, self._waiting_on
        while True:
            try:
                value = yield signal  # the awaiting task waits for what the coroutine waits for
            except BaseException as exc:  # cancelled, or an error thrown into the task
                try:
                    signal = coro.throw(exc)
                except StopIteration as done:
                    return done.value  # type: ignore[no-any-return]
            else:
                try:
                    signal = coro.send(value)
                except StopIteration as done:
                    return done.value  # type: ignore[no-any-return]


def started(coro: Coroutine[Any, Any, T]) -> Awaitable[T]:
    """Run ``coro`` now, up to its first suspension, and return what finishes it (await it in
    the same task). ``loop.start_tls`` switches the transport to its TLS protocol and queues
    that protocol's ``connection_made`` and the transport's ``resume_reading`` before it first
    waits: once this returns, a callback queued with ``call_soon`` runs right after those two,
    before the transport reads anything."""
    try:
        waiting_on = coro.send(None)
    except StopIteration as done:
        result: T = done.value
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        future.set_result(result)
        return future
    return _Rest(coro, waiting_on)


def feed(protocol: asyncio.BaseProtocol, data: bytes) -> None:
    """Hand ``data`` to ``protocol`` as its transport would: through ``get_buffer`` and
    ``buffer_updated`` for a buffered protocol (asyncio's and uvloop's TLS protocols are),
    else ``data_received``."""
    get_buffer = getattr(protocol, "get_buffer", None)
    if get_buffer is None:
        protocol.data_received(data)  # type: ignore[attr-defined]
        return
    view = memoryview(data)
    while view:
        buffer = get_buffer(len(view))
        n = min(len(buffer), len(view))
        buffer[:n] = view[:n]
        protocol.buffer_updated(n)  # type: ignore[attr-defined]
        view = view[n:]


class TlsHandshakeGuard(asyncio.Protocol):
    """One connection until its TLS handshake is done (uvicorn ``http=`` factory, see the module
    docstring). Build it with :meth:`factory`.

    It is the connection's protocol twice over: on the TCP transport until ``start_tls`` takes
    it (what it reads then is the start of the handshake: kept for the TLS protocol), then on
    the TLS transport until the HTTP protocol takes over (what it reads then is application
    data — a client sends its request right behind its Finished: kept and handed on in
    order)."""

    __slots__ = ("_app_state", "_config", "_context", "_early", "_handshake", "_hello",
                 "_loop", "_lost", "_server_state", "_tls", "_transport")

    def __init__(self, context: ssl.SSLContext, config: Any, server_state: Any,
                 app_state: dict[str, Any], _loop: asyncio.AbstractEventLoop | None = None) -> None:
        self._context = context
        self._config = config
        self._server_state = server_state
        self._app_state = app_state
        self._loop = _loop or asyncio.get_running_loop()
        self._transport: asyncio.Transport | None = None
        self._handshake: asyncio.Task[None] | None = None
        self._tls = False  # start_tls has the transport: what arrives now is application data
        self._hello: list[bytes] = []  # handshake bytes read before start_tls took the transport
        self._early: list[bytes] = []  # application data read before the hand-over
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
            log.warning("tls.connection_refused", open_connections=len(connections))
            transport.close()
            return
        self._transport = transport
        connections.add(self)
        transport.pause_reading()  # asyncio honours this; uvloop reads on all the same
        self._handshake = self._loop.create_task(self._run_handshake(transport, settings))

    def data_received(self, data: bytes) -> None:
        if self._tls:
            self._early.append(data)
        else:
            self._hello.append(data)
            if self._transport is not None:
                self._transport.pause_reading()

    def eof_received(self) -> None:
        """The client left (before its handshake, or with a close_notify before the hand-over):
        the transport closes. Over TLS it would whatever this returned (and asyncio warns
        about a true value)."""
        return None

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
        if self._lost or transport.is_closing():
            self._end()
            return
        self._tls = True
        try:
            handshake = started(self._loop.start_tls(
                transport, self, self._context, server_side=True,
                ssl_handshake_timeout=settings.http_head_timeout))
            if self._hello:  # runs after the TLS protocol's connection_made, before any read
                self._loop.call_soon(feed, transport.get_protocol(), b"".join(self._hello))
                self._hello.clear()
            tls = await handshake
        except OSError as exc:  # ssl.SSLError, a reset, the timeout (ConnectionAbortedError)
            log.debug("tls.handshake_failed", peer=transport.get_extra_info("peername"),
                      error=repr(exc))
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

    def _end(self) -> None:
        self._server_state.connections.discard(self)
        self._transport = None
