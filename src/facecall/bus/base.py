"""The `Bus`: deliver messages to a device wherever it is connected, and presence.

Every message to a device goes through its mailbox, which numbers it (the per-device ``seq`` of
the signaling protocol) and keeps it until the device acknowledges it, so that a device that
reconnects — to this node or another one — resumes with nothing lost. The bus knows nothing of
calls: it moves opaque JSON objects, numbered and encoded once as UTF-8 JSON bytes.
"""

from __future__ import annotations

import abc
import contextlib
from collections.abc import Awaitable, Callable, Collection, Iterable, Sequence
from dataclasses import dataclass

Listener = Callable[[int, bytes], Awaitable[None]]
"""Called with (seq, UTF-8 JSON text) for every new message to an attached device."""

Kicker = Callable[[str, str, int], Awaitable[None]]
"""Called on the node holding a device's live connection with (device id, close reason, close
code): that node closes the connection and forgets what it kept for it (see :meth:`Bus.kick`)."""

AnnouncementHandler = Callable[[str, str], Awaitable[None]]
"""Called on every node with (topic, key) of an announcement (see :meth:`Bus.announce`)."""


#: :meth:`Bus.claim_request`: another node is acting on that request right now
IN_PROGRESS = b""


class LockTimeout(Exception):
    """A cluster-wide lock (:meth:`Bus.exclusive`) was not free in time."""


@dataclass(frozen=True)
class Replay:
    """What a resuming device gets: the kept messages after its last seen ``seq``."""

    # False when the device cannot pick up where it left off: it gave no seq (a fresh start),
    # messages after ``after_seq`` were trimmed, ``after_seq`` is one this mailbox never
    # assigned (numbers from before a node restart), or the device's session was ended
    # (:meth:`Bus.end_session`). Then what was kept is dropped and the device starts afresh
    # after ``last_seq``; ``messages`` are then only those the replay was asked to carry over,
    # numbered anew after ``last_seq``.
    complete: bool
    # the newest seq assigned to this device so far (a mailbox starts anywhere); when not
    # complete, the one before the carried-over ``messages``: the device counts on from it
    last_seq: int
    messages: list[tuple[int, bytes]]  # (seq, UTF-8 JSON text)


class Bus(abc.ABC):
    """Routing and presence for device connections (in-process or Redis)."""

    #: True when other nodes share this bus: what one node caches, another may change
    shared: bool = False

    async def start(self) -> None:  # noqa: B027 - optional hook
        """Connect to the backing service, if any."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release the backing service, if any."""

    @abc.abstractmethod
    async def deliver(self, device_id: str, message: dict[str, object]) -> int:
        """Number ``message`` (which has no ``seq`` of its own) with the next seq, keep it, push
        it if attached; return the seq. A device attached to this node has it pushed before
        this returns; one attached to another node gets it from that node, in seq order."""

    async def deliver_many(self, deliveries: Sequence[tuple[str, dict[str, object]]],
                           announcing: tuple[str, str] | None = None,
                           if_attached: Collection[int] = ()) -> list[int]:
        """:meth:`announce` ``announcing`` (topic, key) if given, then :meth:`deliver` each
        ``(device id, message)`` in turn (a shared bus: all at once); their seqs. The
        deliveries whose index is in ``if_attached`` are dropped (seq 0) unless their device is
        attached to some node now: news that a device connecting later reads elsewhere."""
        if announcing is not None:
            await self.announce(*announcing)
        seqs = []
        for index, (device_id, message) in enumerate(deliveries):
            if index in if_attached and not await self.online([device_id]):
                seqs.append(0)
                continue
            seqs.append(await self.deliver(device_id, message))
        return seqs

    @abc.abstractmethod
    async def attach(self, device_id: str, connection_id: str, listener: Listener) -> None:
        """Make ``listener`` the device's one live connection (a newer one, on any node,
        replaces older; connection ids are unique across nodes). The listener gets what is
        delivered from then on, in seq order without repeats; a seq it never gets is one a
        replay handed out instead, or one trimmed or lost before it could be pushed (the
        device's next resume tells it so)."""

    @abc.abstractmethod
    async def detach(self, device_id: str, connection_id: str) -> bool:
        """Forget the connection if it is still the device's current one; True if it was."""

    @abc.abstractmethod
    async def replay(self, device_id: str, after_seq: int | None,
                     carry: Callable[[bytes], bool] | None = None) -> Replay:
        """Messages kept for the device with seq > ``after_seq``. When the replay is not
        complete (see :class:`Replay`) the kept messages are dropped, except those the device
        has not seen for which ``carry(text)`` holds: they are numbered anew, before any
        message delivered after this call, and make up the replay."""

    @abc.abstractmethod
    async def end_session(self, device_id: str) -> None:
        """The device was gone past its resume grace and has left its calls: its next replay
        is not complete (the ones after it are)."""

    @abc.abstractmethod
    async def ack(self, device_id: str, seq: int) -> None:
        """The device has everything up to ``seq``: those messages need not be kept."""

    @abc.abstractmethod
    async def online(self, device_ids: Iterable[str]) -> set[str]:
        """The subset of ``device_ids`` with a live connection on any node."""

    @abc.abstractmethod
    async def forget(self, device_id: str) -> None:
        """Drop the device's mailbox and its registration (device removed)."""

    @abc.abstractmethod
    def on_kick(self, kicker: Kicker) -> None:
        """Set this node's :data:`Kicker` (the signaling service's; one per node)."""

    @abc.abstractmethod
    async def kick(self, device_id: str, reason: str, code: int) -> None:
        """Have the node holding the device's live connection close it (its :data:`Kicker` is
        called there, on this node too); nothing when the device is connected nowhere."""

    @abc.abstractmethod
    def on_announce(self, handler: AnnouncementHandler) -> None:
        """Set this node's :data:`AnnouncementHandler`."""

    @abc.abstractmethod
    async def announce(self, topic: str, key: str) -> None:
        """Tell every node, this one included, that ``key`` of ``topic`` changed (a cache
        entry to drop). This node's handler has run when the call returns; every other node
        runs it before any message this node delivers afterwards reaches a device attached
        to that node (nothing is promised about other nodes' own deliveries)."""

    @abc.abstractmethod
    def exclusive(self, name: str, timeout: float = 5.0) -> contextlib.AbstractAsyncContextManager[None]:
        """Hold the lock ``name`` across every node sharing this bus while the ``async with``
        body runs; raises :class:`LockTimeout` when it is not free within ``timeout`` s. A
        holder that dies lets go after a bounded time."""

    async def claim_request(self, device_id: str, msg_id: str) -> bytes | None:
        """Claim the device's request ``msg_id`` for this node, so that a request resent to
        another node after a drop is acted on once across all nodes: None when claimed (act on
        it, then :meth:`request_answered` or :meth:`request_released`); the ``ok`` reply it got
        when a node answered it already; :data:`IN_PROGRESS` while another node acts on it (ask
        again shortly). A claim whose node dies lapses after a bounded time. A bus that is not
        :attr:`shared` claims every request: one node dedupes on its own
        (:mod:`facecall.signaling.replies`)."""
        return None

    async def request_answered(self, device_id: str, msg_id: str, reply: bytes) -> None:  # noqa: B027
        """The claimed request was answered ``ok`` with ``reply``: a resend gets it, on any node,
        for as long as a device's messages are kept."""

    async def request_released(self, device_id: str, msg_id: str) -> None:  # noqa: B027
        """The claimed request failed (an error reply changes nothing): a resend acts anew."""
