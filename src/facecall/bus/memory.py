"""The in-process `Bus`: one node, all devices' mailboxes in memory."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass

import orjson

from facecall.bus.base import AnnouncementHandler, Bus, Kicker, Listener, LockTimeout, Replay
from facecall.logs import get_logger

log = get_logger(__name__)


@dataclass(slots=True)
class _Mailbox:
    last_seq: int = 0
    # (seq, text, kept_at); made on the first delivery: an idle device's empty deque would cost
    # ~600 bytes
    kept: deque[tuple[int, bytes, float]] | None = None
    trimmed_through: int = 0  # every seq <= this one is gone
    session_ended: bool = False  # see Bus.end_session; cleared by the next replay
    connection_id: str | None = None
    listener: Listener | None = None


def first_seq() -> int:
    """Where a new mailbox starts numbering: the wall clock in microseconds. A mailbox lives in
    this process's memory; after a restart the device's old numbers are all below the new
    ones (a device gets far fewer than a million events a second), so a resume from an old
    number is seen for what it is -- not complete -- instead of being taken for a new one.
    Below 2**53 until the year 2255, so JavaScript clients count them exactly."""
    return time.time_ns() // 1000


class _NamedLock:
    """A lock of :meth:`InProcessBus.exclusive`, with the number of those holding it or waiting
    for it (the entry is dropped at zero)."""

    __slots__ = ("lock", "users")

    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.users = 0


class InProcessBus(Bus):
    """Mailboxes in a dict; each keeps at most ``limit`` unacknowledged messages for ``ttl`` s."""

    def __init__(self, limit: int = 512, ttl: float = 300.0) -> None:
        self.limit = limit
        self.ttl = ttl
        self._boxes: dict[str, _Mailbox] = {}
        self._kicker: Kicker | None = None
        self._announced: AnnouncementHandler | None = None
        self._locks: dict[str, _NamedLock] = {}

    def _box(self, device_id: str) -> _Mailbox:
        box = self._boxes.get(device_id)
        if box is None:
            base = first_seq()
            box = self._boxes[device_id] = _Mailbox(last_seq=base, trimmed_through=base)
        return box

    def _trim(self, box: _Mailbox, now: float) -> None:
        while box.kept and (len(box.kept) > self.limit or now - box.kept[0][2] > self.ttl):
            box.trimmed_through = box.kept.popleft()[0]

    async def deliver(self, device_id: str, message: dict[str, object]) -> int:
        box = self._box(device_id)
        box.last_seq += 1
        seq = box.last_seq
        text = orjson.dumps({**message, "seq": seq})
        now = time.monotonic()
        if box.kept is None:
            box.kept = deque()
        box.kept.append((seq, text, now))
        self._trim(box, now)
        if box.listener is not None:
            try:
                await box.listener(seq, text)
            except Exception as exc:  # a dead socket: the message stays kept for resume
                log.info("bus.push_failed", device_id=device_id, seq=seq, error=repr(exc))
        return seq

    async def attach(self, device_id: str, connection_id: str, listener: Listener) -> None:
        box = self._box(device_id)
        box.connection_id = connection_id
        box.listener = listener

    async def end_session(self, device_id: str) -> None:
        if (box := self._boxes.get(device_id)) is not None:
            box.session_ended = True

    async def detach(self, device_id: str, connection_id: str) -> bool:
        box = self._boxes.get(device_id)
        if box is None or box.connection_id != connection_id:
            return False
        box.connection_id = None
        box.listener = None
        return True

    async def replay(self, device_id: str, after_seq: int | None,
                     carry: Callable[[bytes], bool] | None = None) -> Replay:
        box = self._box(device_id)
        self._trim(box, time.monotonic())
        complete = after_seq is not None and not box.session_ended \
            and box.trimmed_through <= after_seq <= box.last_seq
        box.session_ended = False  # said once: the device starts afresh from here
        if not complete:  # what is kept belongs to a view the device no longer has
            seen = after_seq if after_seq is not None and after_seq <= box.last_seq else None
            carried = [text for seq, text, _ in box.kept or ()
                       if carry is not None and (seen is None or seq > seen) and carry(text)]
            box.kept = None
            box.trimmed_through = start = box.last_seq
            messages = []
            for text in carried:  # numbered anew, before anything delivered after this
                message = orjson.loads(text)
                box.last_seq += 1
                message["seq"] = box.last_seq
                text = orjson.dumps(message)
                if box.kept is None:
                    box.kept = deque()
                box.kept.append((box.last_seq, text, time.monotonic()))
                messages.append((box.last_seq, text))
            return Replay(complete=False, last_seq=start, messages=messages)
        messages = [(seq, text) for seq, text, _ in box.kept or () if seq > after_seq]
        return Replay(complete=True, last_seq=box.last_seq, messages=messages)

    async def ack(self, device_id: str, seq: int) -> None:
        box = self._boxes.get(device_id)
        if box is None:
            return
        while box.kept and box.kept[0][0] <= seq:
            box.trimmed_through = box.kept.popleft()[0]

    async def online(self, device_ids: Iterable[str]) -> set[str]:
        return {d for d in device_ids if (b := self._boxes.get(d)) and b.listener is not None}

    async def forget(self, device_id: str) -> None:
        self._boxes.pop(device_id, None)

    def on_kick(self, kicker: Kicker) -> None:
        self._kicker = kicker

    async def kick(self, device_id: str, reason: str, code: int) -> None:
        box = self._boxes.get(device_id)
        if box is not None and box.listener is not None and self._kicker is not None:
            await self._kicker(device_id, reason, code)

    def on_announce(self, handler: AnnouncementHandler) -> None:
        self._announced = handler

    async def announce(self, topic: str, key: str) -> None:
        if self._announced is not None:
            await self._announced(topic, key)

    @contextlib.asynccontextmanager
    async def exclusive(self, name: str, timeout: float = 5.0) -> AsyncIterator[None]:
        held = self._locks.get(name)
        if held is None:
            held = self._locks[name] = _NamedLock()
        held.users += 1  # the entry goes when no one holds or waits for it
        try:
            try:
                await asyncio.wait_for(held.lock.acquire(), timeout)
            except TimeoutError:
                raise LockTimeout(f"{name} is held by another request") from None
            try:
                yield
            finally:
                held.lock.release()
        finally:
            held.users -= 1
            if not held.users:
                del self._locks[name]
