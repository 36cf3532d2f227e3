"""What signaling asks of the SFU (DESIGN.md: "room placement / control"): put a device of a
call in the call's room from its offer, take it out, close the room, say who is in it, and
tell signaling when a device's receive slots change hands, when who is in the room changes
(a device joins, joins again, leaves, or is dropped by the SFU itself: gone silent, its
transport closed), and when the room's dominant speaker changes. Signaling never touches media: this
interface is all it knows of the SFU. :class:`facecall.sfu.control.InProcessSfu` implements it
over the rooms of this process (:mod:`facecall.sfu.rooms`); :class:`facecall.sfu.placement.ClusterSfu`
over the rooms of the nodes sharing a Redis bus (each call's room on one node, its owner).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from .errors import ErrorCode


@dataclass(frozen=True, slots=True)
class Slot:
    """One receive slot of a device (one ``recvonly`` m-line of its offer: ``mid``, ``kind``)
    and the device whose media it carries now (``user_id``/``device_id``; None: empty)."""

    mid: str
    kind: str
    user_id: str | None = None
    device_id: str | None = None

    def to_wire(self) -> dict[str, str | None]:
        return {"mid": self.mid, "kind": self.kind, "user_id": self.user_id,
                "device_id": self.device_id}


@dataclass(frozen=True, slots=True)
class Member:
    """A device with a place in a call's room, and ``joined``: the number the SFU gave its
    latest join of the room. Every join, a device's join again included (a new peer connection,
    which holds none of the keys of the old one), gets a greater number than any join before it
    on this SFU, so a device whose number changed is a new member."""

    user_id: str
    device_id: str
    joined: int

    def to_wire(self) -> dict[str, str | int]:
        return {"user_id": self.user_id, "device_id": self.device_id, "joined": self.joined}


@dataclass(frozen=True, slots=True)
class Speaker:
    """The device the SFU holds for the room's dominant speaker (RFC 6464 levels)."""

    user_id: str
    device_id: str

    def to_wire(self) -> dict[str, str]:
        return {"user_id": self.user_id, "device_id": self.device_id}


@dataclass(frozen=True, slots=True)
class SfuJoined:
    """The SFU took the device: its ``answer`` SDP, its slots (empty until its media
    connects), the room's ``members`` as its join left them (the device included), and its
    dominant ``speaker`` then (None: nobody yet)."""

    answer: str
    slots: tuple[Slot, ...]
    members: tuple[Member, ...] = ()
    speaker: Speaker | None = None


class SfuRefused(Exception):
    """The SFU did not take the device; nothing changed. ``code``: ``offer_refused`` (the
    offer does not fit docs/sfu.md's slot model: ``message`` says why), ``sfu_full`` (too many
    rooms, or the room is full), ``call_ended`` (the room closed while the device joined)."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


#: ``listener(call_id, user_id, device_id, slots)``: that device's slots changed hands
SlotsListener = Callable[[str, str, str, tuple[Slot, ...]], None]
#: ``listener(call_id, joiner, members)``: who is in the call's room changed; ``members`` is
#: everyone in it now, in the order they joined. ``joiner``: the device whose join (or join
#: again) made this change -- its :meth:`SfuControl.join` returns the same list -- else None
#: (a device left, or the SFU dropped it). Not called when a room closes or becomes empty.
MembersListener = Callable[[str, str | None, tuple[Member, ...]], None]
#: ``listener(call_id, speaker)``: the room's dominant speaker changed (None: nobody now, the
#: last one left). Not called when a room closes.
SpeakerListener = Callable[[str, Speaker | None], None]


class JoinHolds(Protocol):
    """Signaling's hold on the events of a joining device (:class:`GroupMedia`), for an SFU
    that takes a device's join on another node than the one answering its ``sfu.join``: the
    events the room's node sends the device wait until that node's :meth:`release`."""

    def hold(self, device_id: str) -> None:
        """A join of the device begins here: hold its events."""

    def joined(self, call_id: str, device_id: str) -> None:
        """Its join of the call's room returned (what is held about the speaker is older)."""

    def release(self, device_id: str) -> None:
        """Its join was answered (or failed): send what was held (one :meth:`hold` each)."""


class SfuControl(Protocol):
    """The SFU as signaling sees it. Rooms are named by call id, participants by device."""

    #: whether the rooms are shared by every node of a shared bus (one room per call across
    #: them); an SFU that is not serves only a node alone
    spans_nodes: bool

    async def join(self, call_id: str, user_id: str, device_id: str,
                   offer_sdp: str) -> SfuJoined:
        """Put the device in the call's room (made on the first join); a device already in it
        is replaced (its old transport closed). Raises :class:`SfuRefused`."""
        ...

    async def leave(self, call_id: str, device_id: str) -> bool:
        """Take the device out of the call's room (closed with its last one); False if it was
        not in it."""
        ...

    async def close(self, call_id: str) -> bool:
        """Close the call's room (the call ended); False if it had none."""
        ...

    def members(self, call_id: str) -> frozenset[str]:
        """The devices in the call's room now, if the room is on this node (else none)."""
        ...

    async def devices(self, call_id: str) -> frozenset[str]:
        """The devices in the call's room now, wherever the room is."""
        ...

    def answered(self, call_id: str, device_id: str) -> None:
        """The reply to the device's ``sfu.join`` is queued: the events its join held on the
        room's node may go (nothing to do where the room is this node's)."""
        ...

    def hold_joins_with(self, holds: JoinHolds) -> None:
        """Have ``holds`` hold the events of devices whose joins other nodes ask of this one."""
        ...

    def on_slots(self, listener: SlotsListener) -> None:
        """Have ``listener`` told whenever a device's slots change hands."""
        ...

    def on_members(self, listener: MembersListener) -> None:
        """Have ``listener`` told whenever who is in a room changes, in the order of the
        changes, at the moment each happens (before the call that made it returns)."""
        ...

    def on_speaker(self, listener: SpeakerListener) -> None:
        """Have ``listener`` told whenever a room's dominant speaker changes."""
        ...

    async def shutdown(self) -> None:
        """Close every room (the node stops)."""
        ...
