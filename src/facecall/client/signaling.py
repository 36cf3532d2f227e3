"""The client side of the signaling protocol: requests with replies, events, acks and resume.

Used by the SDK's `Device` and by the test-suite. It keeps the last ``seq`` it saw and the
requests not yet answered; after a dropped connection :meth:`SignalingConnection.resume`
reconnects, says ``hello{resume_from}``, and resends the unanswered requests with their ids (the
server answers a repeated id from its cache instead of acting twice). docs/protocol.md, "Resume".
When the server cannot resume (a fresh start: its cache is gone too), only the requests of
:data:`RESENDABLE_AFTER_FRESH_START` are resent; the others fail with ``connection_lost``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import uuid
from collections.abc import Iterable
from typing import Any

import websockets
from websockets.asyncio.client import ClientConnection

from facecall.logs import get_logger

log = get_logger(__name__)


class SignalingError(Exception):
    """The server refused a request; ``code`` is the stable error code of docs/protocol.md."""

    def __init__(self, code: str, message: str, re: str | None = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code, self.message, self.re = code, message, re


class ConnectionClosed(Exception):
    """The signaling connection closed (``code``/``reason`` from the WebSocket close frame)."""

    def __init__(self, code: int | None, reason: str) -> None:
        super().__init__(f"connection closed ({code}): {reason}")
        self.code, self.reason = code, reason


#: requests whose outcome does not change when they are sent twice: resent after a fresh start
#: (docs/protocol.md, "A fresh start"), when the server no longer knows whether it answered them
#: (its reply may have died with a restarted node). ``call.answer`` is idempotent for the device
#: that answered, and ``call.handoff`` for the device that took the call ("Moving a call to
#: another device": a resent one changes nothing and gets the same ``ok``); a second decline,
#: cancel or hang-up is refused with ``call_ended`` or ``invalid_state``, which the caller takes
#: as done. Any other request (a ``call.start`` would ring a second call, a relayed SDP could
#: cross a renegotiation) fails with ``connection_lost``.
RESENDABLE_AFTER_FRESH_START = frozenset(
    {"call.answer", "call.decline", "call.cancel", "call.hangup", "call.handoff", "ping"})


def _outcome_taken(future: asyncio.Future[Any]) -> None:
    """Mark a request's outcome as seen, so that asyncio does not report an error that the
    request's caller (gone by then) was never there to take."""
    if not future.cancelled():
        future.exception()


class SignalingConnection:
    """One device's signaling connection to a facecall server."""

    def __init__(self, ws_url: str, token: str, *, ack_every: int = 16) -> None:
        self.ws_url = ws_url
        self.token = token
        self.ack_every = ack_every
        self.events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.welcome: dict[str, Any] | None = None
        self.last_seq: int | None = None
        self._ws: ClientConnection | None = None
        self._reader: asyncio.Task[None] | None = None
        self._pending: dict[str, tuple[dict[str, Any], asyncio.Future[dict[str, Any]]]] = {}
        self._ids = itertools.count(1)
        self._prefix = uuid.uuid4().hex[:8]
        self._closed: ConnectionClosed | None = None

    @property
    def connected(self) -> bool:
        return self._ws is not None and self._closed is None

    async def connect(self, calls: Iterable[str] = ()) -> dict[str, Any]:
        """Open the connection and say hello (resuming if a seq was seen before). ``calls``: the
        calls this device still holds; if the server cannot resume, ``welcome.calls`` says which
        of them the device is still in (docs/protocol.md, "A fresh start")."""
        self._closed = None
        self._ws = await websockets.connect(
            self.ws_url, additional_headers={"Authorization": f"Bearer {self.token}"},
            max_size=2**20, open_timeout=10,
        )
        hello_id = self._next_id()
        hello: dict[str, Any] = {"v": 1, "id": hello_id, "type": "hello",
                                 "resume_from": self.last_seq}
        if held := list(calls):
            hello["calls"] = held
        frame = await self._hello(hello)
        self.welcome = frame
        if not frame.get("resumed"):  # a fresh start (or the server lost track): count anew
            last_seq = frame.get("last_seq")
            self.last_seq = last_seq if isinstance(last_seq, int) else None
        self._reader = asyncio.create_task(self._read())
        resumed = bool(frame.get("resumed"))
        for msg_id, (request, future) in list(self._pending.items()):  # never answered
            if resumed or request.get("type") in RESENDABLE_AFTER_FRESH_START:
                await self._ws.send(json.dumps(request))  # answered once (resumed: the same id)
                continue
            del self._pending[msg_id]
            if not future.done():
                future.set_exception(SignalingError(
                    "connection_lost", "the connection was lost before the server answered; "
                    "the request may or may not have taken effect", msg_id))
        return frame

    resume = connect

    async def _hello(self, hello: dict[str, Any]) -> dict[str, Any]:
        """Send ``hello`` and return the ``welcome``; the server refusing it raises
        :class:`SignalingError`, closing the connection instead (say, 4401: the token is refused)
        :class:`ConnectionClosed` with the close code."""
        assert self._ws is not None
        ws = self._ws
        try:
            await ws.send(json.dumps(hello))
            while True:
                frame: dict[str, Any] = json.loads(await ws.recv())
                if frame.get("type") == "welcome":
                    return frame
                if frame.get("type") == "error":
                    raise SignalingError(frame["code"], frame["message"], frame.get("re"))
        except websockets.ConnectionClosed as exc:
            code = exc.rcvd.code if exc.rcvd is not None else None
            reason = exc.rcvd.reason if exc.rcvd is not None else "connection lost"
            raise ConnectionClosed(code, reason or "connection lost") from exc

    def _next_id(self) -> str:
        return f"{self._prefix}-{next(self._ids)}"

    async def request(self, type_: str, timeout: float = 10.0, **fields: Any) -> dict[str, Any]:
        """Send a request and wait for its ``ok`` (returned) or ``error`` (raised)."""
        if self._ws is None or self._closed is not None:
            raise ConnectionClosed(None, "not connected")
        msg_id = self._next_id()
        request = {"v": 1, "id": msg_id, "type": type_, **fields}
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        # a caller that stopped waiting (its timeout) leaves the request pending, to be resent
        # and answered: its outcome, an error included, is then nobody's to log
        future.add_done_callback(_outcome_taken)
        self._pending[msg_id] = (request, future)
        await self._ws.send(json.dumps(request))
        try:
            return await asyncio.wait_for(asyncio.shield(future), timeout)
        finally:
            if future.done():
                self._pending.pop(msg_id, None)

    async def next_event(self, type_: str | None = None, timeout: float = 10.0) -> dict[str, Any]:
        """The next event (of ``type_``, skipping others when given)."""
        while True:
            event = await asyncio.wait_for(self.events.get(), timeout)
            if type_ is None or event.get("type") == type_:
                return event

    async def _read(self) -> None:
        assert self._ws is not None
        ws = self._ws
        try:
            async for raw in ws:
                frame = json.loads(raw)
                kind = frame.get("type")
                if kind in ("ok", "error", "pong") and frame.get("re") in self._pending:
                    _, future = self._pending.pop(frame["re"])
                    if not future.done():
                        if kind == "error":
                            future.set_exception(SignalingError(
                                frame["code"], frame["message"], frame.get("re")))
                        else:
                            future.set_result(frame)
                    continue
                seq = frame.get("seq")
                if isinstance(seq, int):
                    if self.last_seq is not None and seq <= self.last_seq:
                        continue  # replayed and already seen
                    self.last_seq = seq
                    if seq % self.ack_every == 0:
                        await ws.send(json.dumps(
                            {"v": 1, "id": self._next_id(), "type": "ack", "seq": seq}))
                await self.events.put(frame)
        except websockets.ConnectionClosed:
            pass
        finally:
            self._closed = ConnectionClosed(ws.close_code, ws.close_reason or "connection lost")
            await self.events.put({"type": "connection.closed", "code": self._closed.code,
                                   "reason": self._closed.reason})

    async def drop(self) -> None:
        """Break the transport without saying goodbye (tests of resume use this)."""
        if self._ws is not None:
            self._ws.transport.abort()
        if self._reader is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader

    async def close(self) -> None:
        """Close politely; unanswered requests fail with ConnectionClosed."""
        if self._ws is not None:
            await self._ws.close()
        if self._reader is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        for _, future in self._pending.values():
            if not future.done():
                future.set_exception(ConnectionClosed(1000, "closed"))
        self._pending.clear()
