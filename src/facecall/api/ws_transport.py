"""The signaling WebSocket served straight on websockets' sans-I/O protocol, as uvicorn's ``ws=``.

uvicorn hands every WebSocket upgrade to the protocol class named by ``Config(ws=...)``.
:class:`SignalingWebSocket` is that class: it runs RFC 6455 with :class:`websockets.server.
ServerProtocol` (handshake §4.2, framing §5, fragmentation §5.4, control frames §5.5, closing
§7) and feeds whole messages to a :class:`~facecall.signaling.session.DeviceSession` — no ASGI
event dicts, no receive queue, no reader or writer task per connection. The common frames skip
the parser object (:mod:`facecall.api.ws_frames`): a whole, masked, unfragmented TEXT/BINARY
frame that arrived in one read is unmasked here, and replies are framed here; every other frame
goes to websockets, whole or with the count of its bytes still due, so that parser only ever
starts at a frame boundary. A connection costs one
protocol object, its websockets parser and its session. A message is handled right where it is
read (``data_received`` steps :meth:`DeviceSession.handle_frame` by hand): most finish without
suspending and cost no task; one that suspends (a store write) goes on as a task, and what the
device sends meanwhile waits in order behind it. What a read makes the session queue for this
connection is written once, when the read ends (``reading`` and
:meth:`DeviceSession.end_of_read`). HTTP routes are untouched (FastAPI behind uvicorn's HTTP
protocol).

What a client sees is what docs/protocol.md says of ``/v1/signaling``: the device token comes in
``Authorization: Bearer`` or, from a browser (which cannot set headers on a WebSocket), in a
``facecall.token.<token>`` subprotocol offered beside ``facecall.v1``, which the server selects;
never in the URL, which proxies log. The handshake is accepted,
then a missing/wrong/expired/revoked token closes with 4401 and an account token with 4403;
frames over ``Settings.max_message_bytes`` get ``too_large``; a message over the transport limit
(uvicorn's ``ws_max_size``) closes with 1009 (§7.4.1); a text message that is not UTF-8 closes
with 1007 (§8.1); server pings every ``ws_ping_interval`` s, and no pong within
``ws_ping_timeout`` s closes with 1011. Any other WebSocket path is refused with 404.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Coroutine, Generator, Sequence
from typing import Any
from urllib.parse import parse_qs

from fastapi import HTTPException
from websockets.exceptions import InvalidHeader, NegotiationError
from websockets.frames import Frame, Opcode
from websockets.headers import parse_subprotocol
from websockets.http11 import Request
from websockets.protocol import OPEN
from websockets.server import ServerProtocol
from websockets.typing import Subprotocol

from facecall.api.auth import resolve_bearer, unauthorized
from facecall.api.ws_frames import FIN_BINARY, FIN_TEXT, apply_mask, encode_text_frames, frame_at
from facecall.logs import get_logger
from facecall.signaling.session import DeviceSession

log = get_logger(__name__)

SIGNALING_PATH = "/v1/signaling"
CLOSE_UNAUTHORIZED = 4401  # the token is missing, wrong, expired or revoked
CLOSE_NOT_A_DEVICE = 4403  # an account token: signaling needs a device token
CLOSE_GOING_AWAY = 1001  # RFC 6455 §7.4.1
CLOSE_INVALID_DATA = 1007  # RFC 6455 §7.4.1: a text message that is not UTF-8
CLOSE_INTERNAL = 1011  # RFC 6455 §7.4.1 (also used for a missed keepalive pong)
CLOSE_RESTART = 1012  # service restart (IANA WebSocket close code registry)
CLOSE_TIMEOUT = 10.0  # seconds to wait for the peer's Close before dropping TCP (§7.1.1)
INBOX_LIMIT = 64  # whole messages waiting for the session before reading is paused
SUBPROTOCOL = Subprotocol("facecall.v1")  # the one the server selects when any are offered
TOKEN_SUBPROTOCOL = "facecall.token."  # + the device token: how a browser sends it
_PING = b"facecall"
#: request header fields whose values never reach the log (websockets logs them all at DEBUG)
_SECRET_FIELDS = frozenset({"authorization", "sec-websocket-protocol", "cookie"})


class _RedactHandshake(logging.Filter):
    """websockets logs the opening handshake's request line and every header field at DEBUG
    (RFC 6455 §4.1). Keep credentials out: the query of the request line (an old client's
    ``?token=``), ``Authorization``, ``Sec-WebSocket-Protocol`` (the token subprotocol) and
    ``Cookie`` are logged as ``[redacted]``."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if record.levelno != logging.DEBUG or not isinstance(args, tuple):
            return True
        if record.msg == "< %s: %s" and str(args[0]).lower() in _SECRET_FIELDS:
            record.args = (args[0], "[redacted]")
        elif record.msg == "< %s %s %s" and "?" in str(args[1]):
            record.args = (args[0], str(args[1]).partition("?")[0] + "?[redacted]", args[2])
        return True


_WS_LOGGER = logging.getLogger("facecall.ws")
_WS_LOGGER.addFilter(_RedactHandshake())


def offered_subprotocols(request: Request) -> list[Subprotocol]:
    """The subprotocols the client offers, in order, from all its ``Sec-WebSocket-Protocol``
    fields (RFC 6455 §4.1, §11.3.4: tokens, comma-separated). Raises
    :class:`~websockets.exceptions.InvalidHeader` when a field is not such a list."""
    return [protocol for value in request.headers.get_all("Sec-WebSocket-Protocol")
            for protocol in parse_subprotocol(value)]


def select_subprotocol(conn: ServerProtocol,
                       offered: Sequence[Subprotocol]) -> Subprotocol | None:
    """The subprotocol of the handshake's answer (RFC 6455 §4.2.2, /subprotocol/): none when
    none was offered (a client sending ``Authorization``), else ``facecall.v1`` — never the
    token one, which would show the token in the response. A browser fails a connection whose
    answer selects none of the subprotocols it offered (§4.1), so an offer without
    ``facecall.v1`` is refused with 400 rather than accepted without a subprotocol."""
    if not offered:
        return None
    if SUBPROTOCOL in offered:
        return SUBPROTOCOL
    raise NegotiationError(f"the {SUBPROTOCOL} subprotocol is not offered")


def bearer_token(request: Request, offered: Sequence[Subprotocol]) -> str | None:
    """The device token: from ``Authorization: Bearer`` (RFC 6750 §2.1), else from the
    ``facecall.token.<token>`` subprotocol among ``offered`` (browsers cannot set headers on a
    WebSocket; RFC 6455 §4.1 lets them offer subprotocols). Raises a 401 (the connection is
    closed with 4401) for a ``token`` in the query — a URL ends up in proxy access logs and in
    browser consoles, so it is refused even beside a good header — and for several token
    subprotocols."""
    _, _, query = request.path.partition("?")
    if query and "token" in parse_qs(query, keep_blank_values=True):
        raise unauthorized("the token belongs in Authorization: Bearer or a "
                           f"{TOKEN_SUBPROTOCOL} subprotocol, not in the URL")
    value = request.headers.get("Authorization")
    if value is not None and value[:7].lower() == "bearer ":
        return value[7:].strip()
    tokens = [p[len(TOKEN_SUBPROTOCOL):] for p in offered if p.startswith(TOKEN_SUBPROTOCOL)]
    if len(tokens) > 1:
        raise unauthorized(f"more than one {TOKEN_SUBPROTOCOL} subprotocol")
    return tokens[0] if tokens else None


class SignalingWebSocket(asyncio.Protocol):
    """One signaling connection (uvicorn ``ws=`` protocol class)."""

    __slots__ = (
        "_app",
        "_awaiting_pong",
        "_busy",
        "_conn",
        "_fast",
        "_fragments",
        "_inbox",
        "_max_size",
        "_owed",
        "_ping_interval",
        "_ping_timeout",
        "_read_paused",
        "_rest",
        "_server_state",
        "_session",
        "_text",
        "_timer",
        "_transport",
        "reading",
    )

    def __init__(self, config: Any, server_state: Any, app_state: dict[str, Any],
                 _loop: asyncio.AbstractEventLoop | None = None) -> None:
        self._app = config.app  # the FastAPI app: its lifespan put the store and service on .state
        self._server_state = server_state
        self._conn = ServerProtocol(max_size=config.ws_max_size, logger=_WS_LOGGER,
                                    select_subprotocol=select_subprotocol)
        self._max_size: int = config.ws_max_size
        self._fast = False  # frames are split here (the connection is open, see _on_request)
        self._rest = b""  # the start of a frame header that has not all arrived
        self._owed = 0  # bytes of a frame websockets is reading that have not arrived yet
        self._transport: asyncio.Transport | None = None
        self._session: DeviceSession | None = None
        self._inbox: list[str | bytes] = []  # a list: an empty deque costs ~600 bytes
        self._busy = True  # until the session exists, messages wait in the inbox
        self._fragments: list[bytes] | None = None
        self._text = False
        self._timer: asyncio.TimerHandle | None = None
        self._awaiting_pong = False
        self._ping_interval: float | None = config.ws_ping_interval
        self._ping_timeout: float | None = config.ws_ping_timeout
        self._read_paused = False
        self.reading = False  # see Link.reading

    # -- asyncio.Protocol ---------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]
        self._server_state.connections.add(self)

    def data_received(self, data: bytes) -> None:
        self.reading = True
        try:
            if self._fast:
                self._split(data)
            else:
                self._parse(data)
                if self._fast and not data.endswith(b"\r\n\r\n"):
                    self._fast = False  # frames came with the request (§4.1: wait for the 101)
        finally:
            self.reading = False
            if self._session is not None:  # the replies of this read, in one write
                self._session.end_of_read()

    def eof_received(self) -> bool | None:
        self._hand_over()
        self._conn.receive_eof()
        self._flush()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._server_state.connections.discard(self)
        self._cancel_timer()
        self._inbox.clear()
        session, self._session = self._session, None
        if session is not None:
            asyncio.get_running_loop().create_task(session.detach())

    def pause_writing(self) -> None:
        if self._session is not None:
            self._session.pause()

    def resume_writing(self) -> None:
        if self._session is not None:
            self._session.resume()

    def shutdown(self) -> None:
        """uvicorn is stopping: close with 1012 (the device reconnects and resumes)."""
        self.close(CLOSE_RESTART, "server restart")
        if self._transport is not None:
            self._transport.close()

    # -- the session's link -------------------------------------------------------------

    def write_frames(self, texts: list[bytes]) -> None:
        """Send text messages (RFC 6455 §5.6; payloads already UTF-8), all in one write.
        Whatever websockets queues is written as soon as it is queued, so nothing of its can
        be waiting to go before these."""
        if self._conn.state is OPEN and self._transport is not None:
            self._transport.write(encode_text_frames(texts))

    def close(self, code: int, reason: str) -> None:
        """Start the closing handshake (RFC 6455 §7.1.2); drop TCP if the peer never answers."""
        if self._conn.state is not OPEN:
            return
        self._conn.send_close(code, reason[:120])
        self._flush()
        self._cancel_timer()
        self._timer = asyncio.get_running_loop().call_later(CLOSE_TIMEOUT, self._drop)

    # -- internals ----------------------------------------------------------------------

    def _split(self, data: bytes) -> None:
        """Read frames (RFC 6455 §5.2): unmask whole data frames here, hand the rest to
        websockets; once the connection is closing (§7), websockets reads everything."""
        pos = 0
        if self._owed:  # the rest of a frame websockets has begun
            pos = min(self._owed, len(data))
            self._owed -= pos
            self._parse(data[:pos] if pos < len(data) else data)
        elif self._rest:
            data, self._rest = self._rest + data, b""
        conn, end_of_data = self._conn, len(data)
        while pos < end_of_data:
            if conn.state is not OPEN:
                self._fast = False
                self._parse(data[pos:])
                return
            extent = frame_at(data, pos)
            if extent is None:  # not even the header is here yet
                self._rest = data[pos:]
                return
            start, length, masked = extent
            end = start + length
            first = data[pos]
            if (end <= end_of_data and masked and length <= self._max_size
                    and (first == FIN_TEXT or first == FIN_BINARY)
                    and self._fragments is None):
                self._text = first == FIN_TEXT
                self._deliver(apply_mask(data[start:end], data[start - 4:start]))
            elif end <= end_of_data:
                self._parse(data[pos:end])  # control, fragment, RSV bits, unmasked, too big
            else:
                self._owed = end - end_of_data
                self._parse(data[pos:])
                return
            pos = end

    def _hand_over(self) -> None:
        """Give websockets the bytes held here; it reads all that follows (EOF, closing)."""
        self._fast = False
        rest, self._rest = self._rest, b""
        if rest:
            self._parse(rest)

    def _parse(self, data: bytes) -> None:
        """Feed websockets' parser, act on what it read and write what it answered."""
        conn = self._conn
        conn.receive_data(data)
        for event in conn.events_received():
            if isinstance(event, Frame):
                self._on_frame(event)
            elif isinstance(event, Request):
                self._on_request(event)
        self._flush()

    def _flush(self) -> None:
        """Write what the protocol has queued; an empty chunk means "close TCP" (the server
        closes first, RFC 6455 §7.1.1)."""
        chunks = self._conn.data_to_send()
        if not chunks or self._transport is None:
            return
        eof = not chunks[-1]
        data = b"".join(chunks)
        if data:
            self._transport.write(data)
        if eof:
            self._cancel_timer()
            self._transport.close()

    def _drop(self) -> None:
        self._timer = None
        if self._transport is not None:
            self._transport.close()

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _on_request(self, request: Request) -> None:
        """The opening handshake (RFC 6455 §4.2.2): websockets checks it and answers, with
        ``facecall.v1`` as /subprotocol/ when subprotocols are offered
        (:func:`select_subprotocol`). A malformed ``Sec-WebSocket-Protocol`` gets 400 from here,
        without the field's value (websockets' own answer and log would quote it)."""
        conn = self._conn
        if request.path.partition("?")[0] != SIGNALING_PATH:
            conn.send_response(conn.reject(404, "no WebSocket endpoint here\n"))
            return
        try:
            offered = offered_subprotocols(request)
        except InvalidHeader:
            conn.send_response(conn.reject(400, "invalid Sec-WebSocket-Protocol header\n"))
            return
        response = conn.accept(request)
        conn.send_response(response)
        if response.status_code != 101:
            return
        self._fast = True
        self._schedule_ping(self._ping_interval)
        task = asyncio.get_running_loop().create_task(self._open(request, offered))
        self._server_state.tasks.add(task)
        task.add_done_callback(self._server_state.tasks.discard)

    async def _open(self, request: Request, offered: list[Subprotocol]) -> None:
        """Authenticate the device; then handle what arrived meanwhile."""
        state = self._app.state
        try:
            principal = await resolve_bearer(state.store, bearer_token(request, offered))
        except HTTPException as exc:
            self.close(CLOSE_UNAUTHORIZED, str(exc.detail))
            return
        if principal.device_id is None:
            self.close(CLOSE_NOT_A_DEVICE, "a device token is required")
            return
        if self._transport is None or self._transport.is_closing():
            return
        self._session = DeviceSession(state.signaling, principal.user_id, principal.device_id,
                                      self)
        await self._drain()

    def _on_frame(self, frame: Frame) -> None:
        opcode = frame.opcode
        if opcode is Opcode.TEXT or opcode is Opcode.BINARY:
            self._text = opcode is Opcode.TEXT
            if not frame.fin:  # the first fragment (RFC 6455 §5.4)
                self._fragments = [frame.data]
                return
            self._deliver(frame.data)
        elif opcode is Opcode.CONT:
            assert self._fragments is not None  # websockets refuses a stray continuation
            self._fragments.append(frame.data)
            if frame.fin:
                data, self._fragments = b"".join(self._fragments), None
                self._deliver(data)
        elif opcode is Opcode.PONG:  # a ping (§5.5.2) is answered by websockets itself
            # once closing, the timer is the drop deadline (§7.1.1), which a pong must not undo
            if self._awaiting_pong and self._conn.state is OPEN:
                self._awaiting_pong = False
                self._schedule_ping(self._ping_interval)

    def _deliver(self, data: bytes) -> None:
        """A whole message: handle it now if the session is idle, else queue it, in order."""
        message: str | bytes = data
        if self._text:
            try:
                message = data.decode()
            except UnicodeDecodeError:  # RFC 6455 §8.1: fail the connection
                self._conn.fail(CLOSE_INVALID_DATA, "invalid UTF-8 in a text message")
                self._flush()
                return
        if self._conn.state is not OPEN:
            return
        if not self._busy and self._session is not None:  # nothing queued to overtake
            self._handle_eagerly(self._session, message)
            return
        self._inbox.append(message)
        if len(self._inbox) >= INBOX_LIMIT and not self._read_paused and self._transport:
            self._read_paused = True
            self._transport.pause_reading()

    def _handle_eagerly(self, session: DeviceSession, message: str | bytes) -> None:
        """Run ``handle_frame`` up to its first suspension, here and now; if it suspends, it
        finishes in a task and later messages queue behind it (what Python 3.12's
        ``eager_start`` tasks do, without the task when none is needed)."""
        coro = session.handle_frame(message)
        try:
            yielded = coro.send(None)
        except StopIteration:
            return
        except Exception as exc:  # handle_frame answers every failure: this is a bug
            coro.close()
            asyncio.get_running_loop().call_exception_handler({
                "message": "signaling message handler failed", "exception": exc,
                "protocol": self})
            return
        self._busy = True
        asyncio.get_running_loop().create_task(self._drain(_Resumed(coro, yielded)))

    async def _drain(self, first: Awaitable[None] | None = None) -> None:
        """Finish ``first`` (a message that suspended), then hand queued messages to the
        session one by one (a device's requests are handled in the order they were sent)."""
        session, inbox = self._session, self._inbox
        try:
            if first is not None:
                await first
            while inbox and session is not None and self._session is session:
                await session.handle_frame(inbox.pop(0))  # at most INBOX_LIMIT long
        finally:
            self._busy = False
            if self._read_paused and self._transport is not None:
                self._read_paused = False
                self._transport.resume_reading()

    # -- keepalive (RFC 6455 §5.5.2, §5.5.3) -----------------------------------------------

    def _schedule_ping(self, delay: float | None) -> None:
        self._cancel_timer()
        if delay is not None and delay > 0:
            self._timer = asyncio.get_running_loop().call_later(delay, self._keepalive)

    def _keepalive(self) -> None:
        self._timer = None
        conn = self._conn
        if conn.state is not OPEN:
            return
        if self._awaiting_pong:
            conn.fail(CLOSE_INTERNAL, "keepalive ping timeout")
            self._flush()
            return
        conn.send_ping(_PING)
        self._awaiting_pong = True
        self._flush()
        self._schedule_ping(self._ping_timeout or self._ping_interval)


class _Resumed:
    """Await the rest of a coroutine that was stepped by hand and suspended on ``yielded``:
    passes what it waits on to the running task and the results (or exceptions, cancellation
    included) back into it."""

    __slots__ = ("_coro", "_yielded")

    def __init__(self, coro: Coroutine[Any, Any, None], yielded: Any) -> None:
        self._coro, self._yielded = coro, yielded

    def __await__(self) -> Generator[Any, Any, None]:
        coro, yielded = self._coro, self._yielded
        while True:
            try:
                sent = yield yielded
            except GeneratorExit:
                coro.close()
                raise
            except BaseException as exc:  # cancellation included: the coroutine decides
                try:
                    yielded = coro.throw(exc)
                except StopIteration:
                    return
            else:
                try:
                    yielded = coro.send(sent)
                except StopIteration:
                    return
