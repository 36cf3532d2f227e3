"""One device's signaling session: hello/resume, request dedupe, ordered delivery, rate limit.

The transport (a WebSocket) hands frames to :meth:`DeviceSession.handle_frame` and runs
:meth:`DeviceSession.run_writer`, which sends replies and events in order. Events reach the
session through the `Bus` (the device's mailbox numbers them), so a device that drops and comes
back within the resume grace gets every event it missed (docs/protocol.md, "Resume").
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from facecall.logs import get_logger
from facecall.signaling.errors import ErrorCode, ProtocolError
from facecall.signaling.protocol import parse_client_message

if TYPE_CHECKING:
    from facecall.signaling.service import CallService

log = get_logger(__name__)

SEND_QUEUE_LIMIT = 1024  # a device this far behind is disconnected; its mailbox keeps the rest
CLOSE_SLOW_CONSUMER = 4008
CLOSE_REPLACED = 4009


class _TokenBucket:
    def __init__(self, rate: float, burst: float) -> None:
        self.rate, self.burst, self.tokens, self.at = rate, burst, burst, time.monotonic()

    def take(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
        self.at = now
        if self.tokens < 1.0:
            return False
        self.tokens -= 1.0
        return True


def _dumps(message: dict[str, Any]) -> str:
    return json.dumps(message, separators=(",", ":"))


class DeviceSession:
    """The server side of one device connection."""

    def __init__(
        self,
        service: CallService,
        user_id: str,
        device_id: str,
        send_text: Callable[[str], Awaitable[None]],
        close: Callable[..., Awaitable[None]],
    ) -> None:
        self.service = service
        self.user_id = user_id
        self.device_id = device_id
        self.connection_id = uuid.uuid4().hex
        self._send_text = send_text
        self._close = close
        # Frames waiting for the writer, and the future it sleeps on when there are none: a
        # list and a future cost far less per idle connection than an asyncio.Queue.
        self._pending: list[str] = []
        self._wakeup: asyncio.Future[None] | None = None
        settings = service.settings
        self._bucket = _TokenBucket(settings.messages_per_second, settings.message_burst)
        self.hello_done = False
        self.closed = False
        self._kick: tuple[int, str] = (1000, "bye")
        self.max_bytes = service.settings.max_message_bytes

    # -- outbound -------------------------------------------------------------------------
    def _wake(self) -> None:
        if self._wakeup is not None and not self._wakeup.done():
            self._wakeup.set_result(None)

    def enqueue(self, text: str) -> None:
        """Queue a frame for the writer; a device too far behind is cut off (it can resume)."""
        if self.closed:
            return
        if len(self._pending) >= SEND_QUEUE_LIMIT:
            log.warning("session.slow_consumer", device_id=self.device_id)
            self.kick("too far behind; resume", CLOSE_SLOW_CONSUMER)
            return
        self._pending.append(text)
        self._wake()

    async def _on_event(self, seq: int, text: str) -> None:
        self.enqueue(text)

    def kick(self, reason: str, code: int = CLOSE_REPLACED) -> None:
        """Close this connection after what is queued (replaced, or the device was removed)."""
        if self.closed:
            return
        self._kick = (code, reason)
        self.closed = True
        if code == CLOSE_SLOW_CONSUMER:
            self._pending.clear()  # the mailbox keeps the events; the device resumes
        self._wake()

    async def run_writer(self) -> None:
        """Send queued frames in order; after a kick, send what is queued, then close."""
        loop = asyncio.get_running_loop()
        while True:
            while self._pending:
                batch, self._pending = self._pending, []
                for text in batch:
                    await self._send_text(text)
            if self.closed:
                code, reason = self._kick
                await self._close(code, reason)
                return
            self._wakeup = loop.create_future()
            await self._wakeup
            self._wakeup = None

    def reply(self, message: dict[str, Any]) -> None:
        self.enqueue(_dumps(message))

    # -- inbound --------------------------------------------------------------------------
    async def handle_frame(self, raw: str | bytes) -> None:
        """Parse, authorise and act on one client frame; every failure gets an error reply."""
        msg_id: str | None = None
        try:
            message = parse_client_message(raw, self.max_bytes)
            msg_id = message.id
            if not self._bucket.take():  # answered with the id, so the client can retry it
                raise ProtocolError(ErrorCode.RATE_LIMITED, "too many messages; slow down and retry")
            cached = self.service.cached_reply(self.device_id, msg_id)
            if cached is not None:  # a resent request: answer as before, do nothing again
                self.enqueue(cached)
                return
            if message.type == "hello":
                await self._hello(message)
                return
            if not self.hello_done:
                raise ProtocolError(ErrorCode.HELLO_REQUIRED, "send hello first")
            if message.type == "ack":
                await self.service.bus.ack(self.device_id, message.seq)
                return  # acks are not answered
            elif message.type == "ping":
                result = {"type": "pong"}
            else:
                result = await self.service.handle_request(self.user_id, self.device_id, message)
            reply = {"v": 1, "type": "ok", "re": msg_id, **(result or {})}
        except ProtocolError as exc:
            reply = exc.with_re(exc.re or msg_id).to_wire()
        except Exception:
            log.exception("session.internal_error", device_id=self.device_id, re=msg_id)
            reply = ProtocolError(ErrorCode.INTERNAL, "internal error; retry", msg_id).to_wire()
        text = _dumps(reply)
        if msg_id is not None and reply["type"] == "ok":
            self.service.remember_reply(self.device_id, msg_id, text)
        self.enqueue(text)

    async def _hello(self, message: Any) -> None:
        if self.hello_done:
            raise ProtocolError(ErrorCode.INVALID_STATE, "hello was already sent")
        replay = await self.service.bus.replay(self.device_id, message.resume_from)
        await self.service.device_attached(self.user_id, self.device_id, self, self._on_event)
        self.hello_done = True
        # welcome first, then what the device missed, in seq order.
        self.reply({
            "v": 1, "type": "welcome", "re": message.id, "user_id": self.user_id, "device_id": self.device_id,
            "resumed": message.resume_from is not None and replay.complete,
            "last_seq": replay.last_seq,
        })
        for _, text in replay.messages:
            self.enqueue(text)

    async def detach(self) -> None:
        """The transport is gone: stop, and let the service start the resume grace."""
        self.closed = True
        if self.hello_done:
            await self.service.device_detached(self.user_id, self.device_id, self)
