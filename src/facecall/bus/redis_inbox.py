"""The listener of a device attached to a RedisBus node, fed in seq order from two paths.

A node gets every seq of a device attached to it either from its own ``deliver`` (the DELIVER
script says "it is attached here") or from its pub/sub channel (another node's DELIVER
PUBLISHed it), and the two paths can pass each other. An :class:`Inbox` keeps the next seq its
listener expects and holds any later one. A gap is filled after a barrier (see
:meth:`Source.barrier`: the missing seqs in flight to this node are read meanwhile), from the
mailbox, where a message is stored before it is published; what the mailbox no longer holds
(trimmed, acknowledged, numbered anew by a replay, lost with Redis) is skipped. A seq below the
expected one is a late duplicate, dropped.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, Protocol

from facecall.bus.base import Listener
from facecall.logs import get_logger

log = get_logger(__name__)


class Source(Protocol):
    """What an inbox needs of its bus."""

    def is_current(self, inbox: Inbox) -> bool:
        """Whether ``inbox`` is still its device's on this node."""

    async def barrier(self) -> None:
        """Return once everything published to this node before the call has been read."""

    async def fetch(self, device_id: str, low: int, high: int) -> list[tuple[int, bytes]]:
        """The kept messages with ``low <= seq <= high``, minus those a replay numbered anew."""

    def spawn(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        """Run ``coro`` as a task the bus cancels when it closes."""


class Inbox:
    """One attached connection of a device: its listener, the next seq it expects, the later
    ones held for a gap."""

    def __init__(self, source: Source, device_id: str, connection_id: str, listener: Listener) -> None:
        self.source = source
        self.device_id = device_id
        self.connection_id = connection_id
        self.listener = listener
        self.next_seq: int | None = None  # None until ATTACH answered: hold everything meanwhile
        self.pending: dict[int, bytes] = {}  # seq -> text
        self._draining = False
        self._filling: asyncio.Task[None] | None = None

    async def open(self, last: int) -> None:
        """ATTACH answered: the listener gets every seq after ``last``."""
        self.next_seq = last + 1
        for seq in [seq for seq in self.pending if seq <= last]:
            del self.pending[seq]
        if self.pending:
            first = min(self.pending)
            await self.offer(first, self.pending[first], wait=False)

    def renumbered(self, last: int, count: int) -> None:
        """A replay numbered ``count`` messages anew after ``last``: they are not pushed."""
        if self.next_seq == last + 1:
            self.next_seq = last + 1 + count

    async def offer(self, seq: int, text: bytes, *, wait: bool) -> None:
        """Push ``seq`` in order; a gap starts a fill (awaited when ``wait``: a local
        ``deliver`` returns once its message is pushed, as InProcessBus's does)."""
        if self.next_seq is not None and seq < self.next_seq:
            return  # a late duplicate: already pushed, or from before the attach
        self.pending.setdefault(seq, text)
        await self._drain()
        if self.pending and self.next_seq is not None and self.next_seq not in self.pending:
            if self._filling is None or self._filling.done():
                self._filling = self.source.spawn(self.fill(), f"bus-fill-{self.device_id[:40]}")
            if wait:
                await asyncio.shield(self._filling)

    async def _drain(self) -> None:
        """Push what is next in order. If a push is under way (perhaps this call's own caller:
        a listener that delivers), that one pushes this too, after its own."""
        if self._draining:
            return
        self._draining = True
        try:
            while self.next_seq is not None \
                    and (text := self.pending.pop(self.next_seq, None)) is not None:
                seq, self.next_seq = self.next_seq, self.next_seq + 1
                if not self.source.is_current(self):
                    self.pending.clear()  # detached meanwhile
                    return
                try:
                    await self.listener(seq, text)
                except Exception as exc:  # a dead socket: the message stays kept for resume
                    log.info("bus.push_failed", device_id=self.device_id, seq=seq, error=repr(exc))
        finally:
            self._draining = False

    async def fill(self, *, catch_up: bool = False) -> None:
        """Fill the gap before the held seqs; with ``catch_up`` (pub/sub was lost), first fetch
        everything after what was pushed."""
        try:
            await self.source.barrier()
        except (ConnectionError, TimeoutError) as exc:
            log.info("bus.barrier_failed", device_id=self.device_id, error=str(exc))
        if catch_up and self.next_seq is not None:
            await self._fetch(self.next_seq, 2**62)
        while self.source.is_current(self) and self.pending and self.next_seq is not None \
                and self.next_seq not in self.pending:
            low = self.next_seq
            await self._fetch(low, min(self.pending) - 1)
            if self.next_seq == low and low not in self.pending and self.pending:
                self.next_seq = min(self.pending)  # the rest of the gap is gone
            await self._drain()

    async def _fetch(self, low: int, high: int) -> None:
        try:
            found = await self.source.fetch(self.device_id, low, high)
        except ConnectionError as exc:
            log.warning("bus.gap_lost", device_id=self.device_id, error=str(exc))
            return
        for seq, text in found:
            if self.next_seq is not None and seq >= self.next_seq:
                self.pending.setdefault(seq, text)
        await self._drain()
