"""The SFU rooms of one process, by room id (signaling uses the call id): a room is made on
its first join and closed when its last participant leaves (or when it is closed outright: the
call ended), with a cap on the rooms and on the participants of each.

The registry knows nothing of calls, users or devices: participants are opaque ids (signaling
uses device ids). It tells its listener when what fills a participant's receive slots changes
(:data:`SlotListener`), read from :meth:`Room.slot_sources <facecall.sfu.room.Room.slot_sources>`
each time the room says its slots may have changed (``Room(on_slots=...)``); the listener hears
a participant only after its join returned, and only changes from what the join returned.

It also tells its member listener (:data:`MemberListener`) whenever who is in a room changes:
a join, a join again, a leave, or a participant the room let go by itself (gone silent, its
transport closed or failed; the room's ``on_slots`` runs after every leave). Each join is
numbered (:attr:`RoomMember.joined`) from a counter of the whole registry that starts at the
clock in microseconds: a later join has a greater number, also after a restart, and a
participant that joins again is told as a new member. Nothing is told when a room closes
(:meth:`RoomRegistry.close`) or when its last participant leaves.

A participant that joins again (its client made a new peer connection) **replaces** its old
self: the new offer is checked first (a refused offer changes nothing), then the old transport
is closed and the new one joins. Joins of one participant run one at a time.

Imports neither signaling, store nor e2ee (DESIGN.md): signaling reaches this through
:class:`facecall.signaling.sfu_control.SfuControl` (:mod:`facecall.sfu.control`).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from aiortc.rtcicetransport import RTCIceServer

from facecall.sfu.participant import KINDS
from facecall.sfu.room import SLOTS, Room, RoomError
from facecall.sfu.sdp import parse_offer

logger = logging.getLogger(__name__)

#: rooms one process holds at once (a 4-party call costs ~4 % of a core: docs/sfu.md)
MAX_ROOMS = 50
#: participants of one room (each forwards to every other: the cost grows with the square)
MAX_PARTICIPANTS = 8


class RoomsError(Exception):
    """The registry cannot take this participant; the message says why."""


class TooManyRooms(RoomsError):
    """Every room this process may hold is in use."""


class RoomFull(RoomsError):
    """The room has as many participants as it may."""


class RoomClosed(RoomsError):
    """The room was closed while the participant joined it."""


@dataclass(frozen=True, slots=True)
class SlotFill:
    """One receive slot of a participant: its m-line's ``mid`` and ``kind``, and the
    participant whose media it carries now (``source``; None: empty)."""

    mid: str
    kind: str
    source: str | None


#: ``listener(room_id, participant_id, slots)``: the participant's slots changed hands
SlotListener = Callable[[str, str, tuple[SlotFill, ...]], None]


@dataclass(frozen=True, slots=True)
class RoomMember:
    """A participant in a room and the number of its latest join (see the module docstring)."""

    participant: str
    joined: int


#: ``listener(room_id, joiner, members)``: who is in the room changed; ``members``: all of
#: them now, in the order they joined; ``joiner``: the participant whose join made the change
#: (else None: someone left or was let go)
MemberListener = Callable[[str, str | None, tuple[RoomMember, ...]], None]
#: ``listener(room_id, participant)``: the room's dominant speaker is now ``participant``
#: (None: nobody, the last one left); not told for a closing room
SpeakerListener = Callable[[str, str | None], None]


@dataclass(eq=False)
class _Entry:
    room: Room
    kinds: dict[str, dict[str, str]] = field(default_factory=dict)
    """participant → its slots' mid → kind (from its offer)"""
    shown: dict[str, tuple[SlotFill, ...]] = field(default_factory=dict)
    """participant → the slots it was last told of (set when its join returns)"""
    joined: dict[str, int] = field(default_factory=dict)
    """participant → the number of its latest join (set when that join succeeded)"""
    replacing: set[str] = field(default_factory=set)
    """participants joining again: a member all along, though out of the room meanwhile"""
    told: tuple[RoomMember, ...] = ()
    """the members the member listener was last told of"""
    joining: int = 0
    closing: asyncio.Future[None] | None = None


@dataclass(eq=False)
class _Turn:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    users: int = 0
    """joins holding or waiting for the lock"""


class RoomRegistry:
    """Rooms by id.

    :param max_rooms: most rooms at once (:class:`TooManyRooms` past it).
    :param max_participants: most participants per room (:class:`RoomFull` past it).
    :param slots: receive slots per kind in each room (K of docs/sfu.md).
    :param silence_timeout: passed to each :class:`~facecall.sfu.room.Room`.
    :param ice_servers: STUN/TURN servers for the SFU's own candidates.
    :param host_addresses: the addresses its host candidates are gathered on (None: every
        interface but loopback; :mod:`facecall.ice_hosts`).
    """

    def __init__(self, *, max_rooms: int = MAX_ROOMS, max_participants: int = MAX_PARTICIPANTS,
                 slots: int = SLOTS, silence_timeout: float = 15.0,
                 ice_servers: Sequence[RTCIceServer] = (),
                 host_addresses: Sequence[str] | None = None) -> None:
        if max_rooms < 1 or max_participants < 2:
            raise ValueError("a registry needs at least one room of two participants")
        self.max_rooms = max_rooms
        self.max_participants = max_participants
        self.slots = slots
        self.silence_timeout = silence_timeout
        self.ice_servers = list(ice_servers)
        self.host_addresses = tuple(host_addresses) if host_addresses is not None else None
        self._rooms: dict[str, _Entry] = {}
        self._listener: SlotListener | None = None
        self._member_listener: MemberListener | None = None
        self._speaker_listener: SpeakerListener | None = None
        self._joins = itertools.count(time.time_ns() // 1000)  # RoomMember.joined
        self._turns: dict[tuple[str, str], _Turn] = {}  # joins of one participant, in turn
        self._closing: set[asyncio.Future[None]] = set()

    def on_slots(self, listener: SlotListener) -> None:
        """Tell ``listener`` of every change of a participant's slots."""
        self._listener = listener

    def on_members(self, listener: MemberListener) -> None:
        """Tell ``listener`` of every change of who is in a room (module docstring)."""
        self._member_listener = listener

    def on_speaker(self, listener: SpeakerListener) -> None:
        """Tell ``listener`` of every change of a room's dominant speaker."""
        self._speaker_listener = listener

    # --- reading

    def __len__(self) -> int:
        return len(self._rooms)

    def room(self, room_id: str) -> Room | None:
        """The open room ``room_id``, if there is one."""
        entry = self._rooms.get(room_id)
        return entry.room if entry is not None else None

    def participants(self, room_id: str) -> frozenset[str]:
        """Who is in room ``room_id`` now (nobody if there is no such room)."""
        entry = self._rooms.get(room_id)
        return frozenset(entry.room.participants) if entry is not None else frozenset()

    def members(self, room_id: str) -> tuple[RoomMember, ...]:
        """Who is in room ``room_id`` now with their join numbers, in the order they joined
        (nobody if there is no such room)."""
        entry = self._rooms.get(room_id)
        return self._roster(entry) if entry is not None else ()

    def speaker(self, room_id: str) -> str | None:
        """Room ``room_id``'s dominant speaker now (None: nobody yet, or no such room)."""
        entry = self._rooms.get(room_id)
        return entry.room.speaker_id if entry is not None else None

    def slots_of(self, room_id: str, participant_id: str) -> tuple[SlotFill, ...]:
        """The participant's slots and who fills them now (KeyError if not in the room)."""
        entry = self._rooms[room_id]
        return self._fills(entry, participant_id)

    # --- membership

    async def join(self, room_id: str, participant_id: str,
                   offer_sdp: str) -> tuple[str, tuple[SlotFill, ...]]:
        """Put the participant in room ``room_id`` (made if need be) from its offer; returns
        the SFU's answer and the participant's slots (empty until its media connects).

        :raises facecall.sfu.sdp.SfuOfferError: the offer does not fit; nothing changed.
        :raises TooManyRooms: no room may be made; nothing changed.
        :raises RoomFull: the room has ``max_participants``; nothing changed.
        :raises RoomClosed: the room was closed (:meth:`close`) while this join was under way.
        """
        offer = parse_offer(offer_sdp, self.slots)  # before anything changes
        kinds = {m.mid: kind for kind in KINDS for m in offer.slots(kind)}
        key = (room_id, participant_id)
        turn = self._turns.setdefault(key, _Turn())
        turn.users += 1
        try:
            async with turn.lock:
                return await self._join(room_id, participant_id, offer_sdp, kinds)
        finally:
            turn.users -= 1
            if turn.users == 0:
                del self._turns[key]

    async def _join(self, room_id: str, participant_id: str, offer_sdp: str,
                    kinds: dict[str, str]) -> tuple[str, tuple[SlotFill, ...]]:
        entry = self._rooms.get(room_id)
        if entry is None:
            if len(self._rooms) >= self.max_rooms:
                raise TooManyRooms(f"this server holds {self.max_rooms} group calls already")
            entry = _Entry(Room(self.slots, silence_timeout=self.silence_timeout,
                                ice_servers=self.ice_servers, host_addresses=self.host_addresses))
            entry.room.on_slots = lambda: self._slots_changed(room_id, entry)
            entry.room.on_speaker = lambda: self._speaker_changed(room_id, entry)
            self._rooms[room_id] = entry
        room = entry.room
        replacing = participant_id in room.participants
        if not replacing and len(room.participants) + entry.joining >= self.max_participants:
            self._retire_if_empty(room_id, entry)
            raise RoomFull(f"the group call has {self.max_participants} participants already")
        entry.joining += 1
        joined = False
        try:
            if replacing:
                logger.info("sfu rooms: %s joins %s again: its old transport goes",
                            participant_id, room_id)
                entry.replacing.add(participant_id)  # still a member while it is out
                await room.leave(participant_id)
            entry.kinds[participant_id] = kinds
            try:
                answer = await room.join(participant_id, offer_sdp)
            except RoomError as exc:  # closed while this join waited for its turn
                raise RoomClosed(f"the group call ended meanwhile ({exc})") from None
            if entry.closing is not None:  # closed while this join gathered
                await room.leave(participant_id)
                raise RoomClosed("the group call ended meanwhile")
            joined = True
        except BaseException:
            entry.kinds.pop(participant_id, None)
            raise
        finally:
            entry.joining -= 1
            entry.replacing.discard(participant_id)
            if joined and participant_id in room.participants:
                entry.joined[participant_id] = next(self._joins)
            # a join tells its new member; a failed join again tells that the old one left
            self._members_changed(room_id, entry, participant_id if joined else None)
            self._retire_if_empty(room_id, entry)
        fills = entry.shown[participant_id] = self._fills(entry, participant_id)
        return answer, fills

    async def leave(self, room_id: str, participant_id: str) -> bool:
        """Take the participant out (its transport closed); the room closes when it was the
        last. False if it was not in the room."""
        entry = self._rooms.get(room_id)
        if entry is None or participant_id not in entry.room.participants:
            return False
        await entry.room.leave(participant_id)
        self._members_changed(room_id, entry)  # (the room's on_slots told it: a no-op)
        entry.kinds.pop(participant_id, None)
        entry.shown.pop(participant_id, None)
        closing = self._retire_if_empty(room_id, entry)
        if closing is not None:
            await closing
        return True

    async def close(self, room_id: str) -> bool:
        """Close room ``room_id``: everyone out. False if there was no such room."""
        entry = self._rooms.pop(room_id, None)
        if entry is None:
            return False
        entry.closing = self._spawn_close(room_id, entry)
        await entry.closing
        return True

    async def close_all(self) -> None:
        """Close every room (the process stops)."""
        for room_id in list(self._rooms):
            await self.close(room_id)
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)

    # --- internals

    @staticmethod
    def _fills(entry: _Entry, participant_id: str) -> tuple[SlotFill, ...]:
        kinds = entry.kinds.get(participant_id, {})
        return tuple(SlotFill(mid, kinds.get(mid, ""), source)
                     for mid, source in entry.room.slot_sources(participant_id).items())

    def _slots_changed(self, room_id: str, entry: _Entry) -> None:
        """The room's ``on_slots``: tell the listener of each participant whose slots now
        differ from what it was told; forget who the room let go (gone silent, transport
        closed), tell the member listener, and close the room when that was the last one."""
        if entry.closing is not None or self._rooms.get(room_id) is not entry:
            return
        room = entry.room
        for participant_id in list(entry.shown):
            if participant_id not in room.participants:
                del entry.shown[participant_id]
                entry.kinds.pop(participant_id, None)
        self._members_changed(room_id, entry)  # every leave ends here, the room's own too
        for participant_id, shown in entry.shown.items():
            fills = self._fills(entry, participant_id)
            if fills != shown:
                entry.shown[participant_id] = fills
                if self._listener is not None:
                    try:
                        self._listener(room_id, participant_id, fills)
                    except Exception:  # a listener's failure must not stop the forwarding
                        logger.exception("sfu rooms: slot listener failed")
        if not room.participants and entry.joining == 0:
            self._retire_if_empty(room_id, entry)

    def _speaker_changed(self, room_id: str, entry: _Entry) -> None:
        """The room's ``on_speaker``: tell the listener (not for a closing room)."""
        if entry.closing is not None or self._rooms.get(room_id) is not entry:
            return
        if self._speaker_listener is not None:
            try:
                self._speaker_listener(room_id, entry.room.speaker_id)
            except Exception:  # a listener's failure must not stop the room
                logger.exception("sfu rooms: speaker listener failed")

    @staticmethod
    def _roster(entry: _Entry) -> tuple[RoomMember, ...]:
        """The room's members in the order they joined: those in it with a numbered join, and
        those joining again (out of the room for that moment)."""
        present = entry.room.participants
        return tuple(RoomMember(participant_id, number) for participant_id, number
                     in sorted(entry.joined.items(), key=lambda item: item[1])
                     if participant_id in present or participant_id in entry.replacing)

    def _members_changed(self, room_id: str, entry: _Entry, joiner: str | None = None) -> None:
        """Tell the member listener if the room's members differ from what it was last told
        (not for a closing room, nor an empty one: nobody is left to tell)."""
        if entry.closing is not None or self._rooms.get(room_id) is not entry:
            return
        for participant_id in [p for p in entry.joined
                               if p not in entry.room.participants and p not in entry.replacing]:
            del entry.joined[participant_id]  # left, or let go by the room
        members = self._roster(entry)
        if members == entry.told:
            return
        entry.told = members
        if members and self._member_listener is not None:
            try:
                self._member_listener(room_id, joiner, members)
            except Exception:  # a listener's failure must not stop the room
                logger.exception("sfu rooms: member listener failed")

    def _retire_if_empty(self, room_id: str, entry: _Entry) -> asyncio.Future[None] | None:
        """Close the room if nobody is in it or joining; returns its closing (if closing)."""
        if self._rooms.get(room_id) is entry and not entry.room.participants and entry.joining == 0:
            del self._rooms[room_id]
            entry.closing = self._spawn_close(room_id, entry)
        return entry.closing

    def _spawn_close(self, room_id: str, entry: _Entry) -> asyncio.Future[None]:
        logger.info("sfu rooms: %s closes (%d open)", room_id, len(self._rooms))
        closing = asyncio.ensure_future(entry.room.close())
        self._closing.add(closing)
        closing.add_done_callback(self._closing.discard)
        return closing
