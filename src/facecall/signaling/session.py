"""One device's signaling session: hello/resume, request dedupe, ordered delivery, rate limit.

The transport (a WebSocket, :class:`Link`) hands whole messages to
:meth:`DeviceSession.handle_frame`, one at a time. Replies and events are queued and written in
order, the frames of one event-loop iteration in one write; while the transport's buffer is full
(:meth:`DeviceSession.pause`) they wait here, and a device too far behind is disconnected (its
mailbox keeps the events). Events reach the session through the `Bus` (the device's mailbox
numbers them), so a device that drops and comes back within the resume grace gets every event it
missed (docs/protocol.md, "Resume").
"""

from __future__ import annotations

import asyncio
import functools
import uuid
from typing import TYPE_CHECKING, Any, Protocol

import orjson

from facecall.logs import get_logger
from facecall.signaling.errors import ErrorCode, ProtocolError
from facecall.signaling.protocol import CLOSE_REMOVED, parse_client_message
from facecall.signaling.replies import CLAIMED_ACROSS_NODES, claim_across_nodes, internal_error
from facecall.store import NotFound

if TYPE_CHECKING:
    from facecall.signaling.service import CallService

log = get_logger(__name__)

CLOSE_SLOW_CONSUMER = 4008
CLOSE_INTERNAL_ERROR = 1011  # RFC 6455 §7.4.1: the server failed answering hello; reconnect


class Link(Protocol):
    """What a session needs of its transport."""

    #: True while the transport is handing this session what it just read; frames queued
    #: meanwhile are written when the read is done (the transport calls
    #: :meth:`DeviceSession.end_of_read`), not from a callback of their own
    reading: bool

    def write_frames(self, texts: list[bytes]) -> None:
        """Send these text messages (UTF-8 JSON), in order."""

    def close(self, code: int, reason: str) -> None:
        """Close the connection with ``code`` after what was written."""


#: events a fresh start never carries over: a device that holds a call needs no ring for it,
#: and ``welcome.elsewhere`` says where the user's calls are now (an older ``call.elsewhere``
#: would bring back a call that has moved or ended)
_NOT_CARRIED = frozenset({"call.ring", "call.elsewhere"})


def _about_calls(calls: frozenset[str], text: bytes) -> bool:
    """Whether the event ``text`` is about one of ``calls`` and worth carrying over."""
    event = orjson.loads(text)
    return event.get("call_id") in calls and event.get("type") not in _NOT_CARRIED


class DeviceSession:
    """The server side of one device connection."""

    __slots__ = (
        "_bucket",
        "_close_sent",
        "_flush_scheduled",
        "_held",
        "_kick",
        "_link",
        "_paused",
        "_pending",
        "_queue_limit",
        "attached",
        "closed",
        "connection_id",
        "device_id",
        "hello_done",
        "leaving",
        "max_bytes",
        "service",
        "user_id",
    )

    def __init__(self, service: CallService, user_id: str, device_id: str, link: Link) -> None:
        self.service = service
        self.user_id = user_id
        self.device_id = device_id
        self.connection_id = uuid.uuid4().hex
        self._link = link
        self._pending: list[bytes] = []  # frames for the next write
        self._flush_scheduled = False
        self._paused = False  # the transport's buffer is full
        settings = service.settings
        self._bucket = service.message_bucket(device_id)
        # frames held for a reader that does not keep up before it is cut off: half its
        # mailbox, so that what it missed is still kept when it resumes
        self._queue_limit = max(16, settings.outbox_limit // 2)
        self._held: list[tuple[int, bytes]] | None = None  # events that came during hello
        self.attached = False  # the bus delivers to this session (set by the service)
        self.hello_done = False
        self.leaving = False  # said bye: a page unloading (see Bye)
        self.closed = False
        self._kick: tuple[int, str] | None = None  # the close to send once the queue is out
        self._close_sent = False
        self.max_bytes = settings.max_message_bytes

    # -- outbound -------------------------------------------------------------------------
    def enqueue(self, text: bytes) -> None:
        """Queue a frame; a device too far behind (its transport's buffer full, and this many
        frames waiting here) is cut off: it can resume, its mailbox still has the events."""
        if self.closed:
            return
        if self._paused and len(self._pending) >= self._queue_limit:
            log.warning("session.slow_consumer", device_id=self.device_id)
            self.kick("too far behind; resume", CLOSE_SLOW_CONSUMER)
            return
        self._pending.append(text)
        self._schedule_flush()

    def _schedule_flush(self) -> None:
        if not self._flush_scheduled and not self._paused:
            self._flush_scheduled = True
            if not self._link.reading:  # else end_of_read writes them
                asyncio.get_running_loop().call_soon(self.flush)

    def end_of_read(self) -> None:
        """The transport is done with what it read: write what that queued (one write for
        the replies and events of a whole read)."""
        if self._flush_scheduled:
            self.flush()

    def flush(self) -> None:
        """Write what is queued (one write); after a kick, then close."""
        self._flush_scheduled = False
        if self._paused or self._close_sent:
            return
        if self._pending:
            batch, self._pending = self._pending, []
            self._link.write_frames(batch)
        if self._kick is not None:
            self._close_sent = True
            self._link.close(*self._kick)

    def pause(self) -> None:
        """The transport's write buffer is full: hold frames here."""
        self._paused = True

    def resume(self) -> None:
        """The transport drained: write what was held."""
        self._paused = False
        self.flush()

    async def _on_event(self, seq: int, text: bytes) -> None:
        if self._held is not None:  # hello is under way: after the welcome and the replay
            self._held.append((seq, text))
            return
        self.enqueue(text)

    def kick(self, reason: str, code: int) -> None:
        """Close this connection after what is queued (replaced, or the device was removed)."""
        if self.closed:
            return
        self._kick = (code, reason)
        self.closed = True
        if code == CLOSE_SLOW_CONSUMER:
            self._pending.clear()  # the mailbox keeps the events; the device resumes
        if self._paused:  # a peer that does not read would never get the close: send it now
            self._close_sent = True
            self._link.close(code, reason)
            return
        self._schedule_flush()

    def reply(self, message: dict[str, Any]) -> None:
        self.enqueue(orjson.dumps(message))

    # -- inbound --------------------------------------------------------------------------
    async def handle_frame(self, raw: str | bytes) -> None:
        """Parse, authorise and act on one client frame; every failure gets an error reply."""
        msg_id: str | None = None
        in_flight = False  # this request's reply is awaited by its resends (see below)
        claimed = False  # claimed on the shared bus: its outcome is told there too
        try:
            message = parse_client_message(raw, self.max_bytes)
            msg_id = message.id
            # answered with the id, so the client can retry it; a connection's first hello is
            # not refused, or a device that spent its bucket could not reconnect
            if (message.type != "hello" or self.hello_done) and not self._bucket.take():
                raise ProtocolError(ErrorCode.RATE_LIMITED, "too many messages; slow down and retry")
            cached = self.service.replies.cached(self.device_id, msg_id)
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
            elif message.type == "bye":
                self.leaving = True
                result = None
            else:
                # resent on this connection while an older one still handles it: the reply
                # is not cached yet, so wait for it rather than act twice
                pending = self.service.replies.pending(self.device_id, msg_id)
                if pending is not None:
                    answered = await pending
                    self.enqueue(answered if answered is not None else internal_error(msg_id))
                    return
                if self.service.bus.shared and message.type in CLAIMED_ACROSS_NODES:
                    # resent to this node while another acted on it, or acts on it still
                    earlier = await claim_across_nodes(self.service.bus, self.device_id, msg_id)
                    if earlier is not None:
                        self.enqueue(earlier)
                        return
                    claimed = True
                self.service.replies.started(self.device_id, msg_id)
                in_flight = True
                result = await self.service.handle_request(self.user_id, self.device_id, message)
            reply = {"v": 1, "type": "ok", "re": msg_id, **(result or {})}
        except ProtocolError as exc:
            reply = exc.with_re(exc.re or msg_id).to_wire()
        except Exception:
            log.exception("session.internal_error", device_id=self.device_id, re=msg_id)
            reply = ProtocolError(ErrorCode.INTERNAL, "internal error; retry", msg_id).to_wire()
        except BaseException:  # cancelled (shutdown): its resends are not left waiting
            if in_flight and msg_id is not None:
                self.service.replies.finished(self.device_id, msg_id, None)
            raise
        text = orjson.dumps(reply)
        if claimed and msg_id is not None:
            try:
                if reply["type"] == "ok":
                    await self.service.bus.request_answered(self.device_id, msg_id, text)
                else:
                    await self.service.bus.request_released(self.device_id, msg_id)
            except Exception:  # the reply stands; the claim lapses by itself
                log.exception("session.claim_not_told", device_id=self.device_id, re=msg_id)
        if msg_id is not None and reply["type"] == "ok":
            self.service.replies.remember(self.device_id, msg_id, text)
        if in_flight and msg_id is not None:
            self.service.replies.finished(self.device_id, msg_id, text)
        self.enqueue(text)

    async def _hello(self, message: Any) -> None:
        """Attach, then answer ``welcome`` and replay what the device missed, in seq order,
        before any event that arrives meanwhile (held until then; docs/protocol.md, "Resume").
        One hello of a device at a time: a second connection's waits for the first's."""
        if self.hello_done:
            raise ProtocolError(ErrorCode.INVALID_STATE, "hello was already sent")
        async with self.service.hello_turn(self.device_id):
            await self._hello_in_turn(message)

    async def _hello_in_turn(self, message: Any) -> None:
        self._held = []
        try:
            if not await self.service.device_attached(self.user_id, self.device_id, self,
                                                      self._on_event):
                return  # the connection closed meanwhile
            # if it cannot resume, what its mailbox had about the calls it holds is carried over
            replay = await self.service.bus.replay(
                self.device_id, message.resume_from,
                functools.partial(_about_calls, frozenset(message.calls)) if message.calls else None)
            resumed = replay.complete  # only ever with a resume_from
            still_in = [] if resumed else await self.service.held_calls(
                self.user_id, self.device_id, message.calls)
            elsewhere = await self.service.calls_elsewhere(self.user_id, self.device_id)
            self.hello_done = True
            self.reply({
                "v": 1, "type": "welcome", "re": message.id, "user_id": self.user_id,
                "device_id": self.device_id, "resumed": resumed, "last_seq": replay.last_seq,
                "calls": still_in, "elsewhere": elsewhere,
            })
            newest = message.resume_from if resumed else replay.last_seq
            for seq, text in replay.messages:
                self.enqueue(text)
                newest = seq
            if not resumed:  # it keeps only what it still holds; the rest must ring it or end
                try:
                    await self.service.fresh_start(
                        self.user_id, self.device_id, {call["call_id"] for call in still_in},
                        functools.partial(self._rung_after, newest))
                except Exception:
                    # its calls are not sorted out: it must start afresh again, on a new
                    # connection (its next hello is not a resume; the held events stay kept)
                    log.exception("session.fresh_start_failed", device_id=self.device_id)
                    await self.service.bus.end_session(self.device_id)
                    self.kick("internal error; reconnect", CLOSE_INTERNAL_ERROR)
                    return
            held, self._held = self._held, None
            for seq, text in held:
                if seq > newest:  # else replayed, or stale
                    self.enqueue(text)
        except NotFound:
            self.kick("device removed", CLOSE_REMOVED)
        finally:
            self._held = None

    def _rung_after(self, newest: int, call_id: str) -> bool:
        """Whether a ``call.ring`` of ``call_id`` numbered after ``newest`` is among the events
        held during the hello (it goes out after the welcome; older ones do not)."""
        for seq, text in self._held or ():
            if seq > newest:
                event = orjson.loads(text)
                if event.get("type") == "call.ring" and event.get("call_id") == call_id:
                    return True
        return False

    async def detach(self) -> None:
        """The transport is gone: stop, and let the service start the resume grace."""
        self.closed = True
        self._close_sent = True  # nothing more is written
        self._pending.clear()
        if self.attached:  # also in the middle of hello: it must not stay "online"
            await self.service.device_detached(self.user_id, self.device_id, self)
