"""The `Bus`: deliver messages to a device wherever it is connected, and presence.

Every message to a device goes through its mailbox, which numbers it (the per-device ``seq`` of
the signaling protocol) and keeps it until the device acknowledges it, so that a device that
reconnects — to this node or another one — resumes with nothing lost. The bus knows nothing of
calls: it moves opaque JSON objects, numbered and encoded once as UTF-8 JSON bytes.
"""

from __future__ import annotations

import abc
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

Listener = Callable[[int, bytes], Awaitable[None]]
"""Called with (seq, UTF-8 JSON text) for every new message to an attached device."""


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

    async def start(self) -> None:  # noqa: B027 - optional hook
        """Connect to the backing service, if any."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release the backing service, if any."""

    @abc.abstractmethod
    async def deliver(self, device_id: str, message: dict[str, object]) -> int:
        """Number ``message`` with the next seq, keep it, push it if attached; return the seq."""

    @abc.abstractmethod
    async def attach(self, device_id: str, connection_id: str, listener: Listener) -> None:
        """Make ``listener`` the device's one live connection (a newer one replaces older)."""

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
        """Drop the device's mailbox (device removed)."""
