"""The in-process SFU: :class:`facecall.signaling.sfu_control.SfuControl` over this process's
rooms (:class:`facecall.sfu.rooms.RoomRegistry`). Rooms are call ids, participants device ids;
this adapter keeps which user each device is, to name them in the slots and the member lists,
and turns the registry's refusals into :class:`~facecall.signaling.sfu_control.SfuRefused`
codes.

It imports only the interface module of signaling (no service, no store): the SFU stays
ignorant of calls beyond their ids.
"""

from __future__ import annotations

from facecall.sfu.rooms import RoomClosed, RoomMember, RoomRegistry, RoomsError, SlotFill
from facecall.sfu.sdp import SfuOfferError
from facecall.signaling.errors import ErrorCode
from facecall.signaling.sfu_control import (
    JoinHolds,
    Member,
    MembersListener,
    SfuJoined,
    SfuRefused,
    Slot,
    SlotsListener,
    Speaker,
    SpeakerListener,
)


class InProcessSfu:
    """The rooms of this process, as signaling's :class:`SfuControl`."""

    spans_nodes = False

    def __init__(self, registry: RoomRegistry | None = None) -> None:
        self.registry = registry if registry is not None else RoomRegistry()  # empty: len 0
        self._users: dict[tuple[str, str], str] = {}  # (call id, device id) -> user id
        self._listener: SlotsListener | None = None
        self._members_listener: MembersListener | None = None
        self._speaker_listener: SpeakerListener | None = None
        # (call id, device id) -> the members its join made (told before the join returns)
        self._joined_members: dict[tuple[str, str], tuple[Member, ...]] = {}
        self.registry.on_slots(self._slots_changed)
        self.registry.on_members(self._members_changed)
        self.registry.on_speaker(self._speaker_changed)

    async def join(self, call_id: str, user_id: str, device_id: str,
                   offer_sdp: str) -> SfuJoined:
        self._users[(call_id, device_id)] = user_id
        try:
            answer, fills = await self.registry.join(call_id, device_id, offer_sdp)
        except SfuOfferError as exc:
            self._forget(call_id, device_id)
            raise SfuRefused(ErrorCode.OFFER_REFUSED, f"the SFU cannot use this offer: {exc}") from None
        except RoomsError as exc:  # too many rooms, the room full, or closed meanwhile
            self._forget(call_id, device_id)
            code = ErrorCode.CALL_ENDED if isinstance(exc, RoomClosed) else ErrorCode.SFU_FULL
            raise SfuRefused(code, str(exc)) from None
        except BaseException:
            self._forget(call_id, device_id)
            raise
        finally:
            members = self._joined_members.pop((call_id, device_id), None)
        if members is None:  # (its join changed nothing the registry could tell: not expected)
            members = self._members(call_id, self.registry.members(call_id))
        return SfuJoined(answer, self._named(call_id, fills), members,
                         self._speaker(call_id, self.registry.speaker(call_id)))

    async def leave(self, call_id: str, device_id: str) -> bool:
        left = await self.registry.leave(call_id, device_id)
        self._forget(call_id, device_id)
        return left

    async def close(self, call_id: str) -> bool:
        closed = await self.registry.close(call_id)
        for key in [k for k in self._users if k[0] == call_id]:
            del self._users[key]
        return closed

    def members(self, call_id: str) -> frozenset[str]:
        return self.registry.participants(call_id)

    async def devices(self, call_id: str) -> frozenset[str]:
        return self.registry.participants(call_id)

    def answered(self, call_id: str, device_id: str) -> None:
        """Nothing: the events of a join here are held where it is answered."""

    def hold_joins_with(self, holds: JoinHolds) -> None:
        """Nothing: every join here is one this node's signaling answers."""

    def on_slots(self, listener: SlotsListener) -> None:
        self._listener = listener

    def on_members(self, listener: MembersListener) -> None:
        self._members_listener = listener

    def on_speaker(self, listener: SpeakerListener) -> None:
        self._speaker_listener = listener

    async def shutdown(self) -> None:
        await self.registry.close_all()
        self._users.clear()

    def _named(self, call_id: str, fills: tuple[SlotFill, ...]) -> tuple[Slot, ...]:
        return tuple(Slot(f.mid, f.kind, None, None) if f.source is None
                     else Slot(f.mid, f.kind, self._users.get((call_id, f.source)), f.source)
                     for f in fills)

    def _slots_changed(self, call_id: str, device_id: str, fills: tuple[SlotFill, ...]) -> None:
        user_id = self._users.get((call_id, device_id))
        if self._listener is not None and user_id is not None:
            self._listener(call_id, user_id, device_id, self._named(call_id, fills))

    def _members(self, call_id: str, members: tuple[RoomMember, ...]) -> tuple[Member, ...]:
        """The registry's members named with their users (every one joined through
        :meth:`join`, which names it first)."""
        return tuple(Member(user_id, m.participant, m.joined) for m in members
                     if (user_id := self._users.get((call_id, m.participant))) is not None)

    def _members_changed(self, call_id: str, joiner: str | None,
                         members: tuple[RoomMember, ...]) -> None:
        named = self._members(call_id, members)
        if joiner is not None:  # the list its join returns
            self._joined_members[(call_id, joiner)] = named
        if self._members_listener is not None:
            self._members_listener(call_id, joiner, named)

    def _speaker(self, call_id: str, device_id: str | None) -> Speaker | None:
        user_id = None if device_id is None else self._users.get((call_id, device_id))
        return None if device_id is None or user_id is None else Speaker(user_id, device_id)

    def _speaker_changed(self, call_id: str, device_id: str | None) -> None:
        if self._speaker_listener is not None:
            self._speaker_listener(call_id, self._speaker(call_id, device_id))

    def _forget(self, call_id: str, device_id: str) -> None:
        """Drop the device's user unless the device is (still) in the call's room."""
        if device_id not in self.registry.participants(call_id):
            self._users.pop((call_id, device_id), None)
