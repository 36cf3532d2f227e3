"""Group media through the SFU, as signaling places it (docs/protocol.md, "Group media (SFU)"):
``sfu.join`` / ``sfu.leave``, the ``sfu.slots`` events, and the call's room following the call.

* **Who may join.** Only a joined device of the call (the same rule as for relaying SDP):
  a user never in the call learns nothing of it (``unknown_call``), a device that is not
  joined gets ``not_in_call``, an ended call ``call_ended``. The check is made again once the
  SFU took the device: one that left the call meanwhile is taken out again and refused.
* **Following the call.** After every saved change of a call (:meth:`GroupMedia.follow`, from
  the service's core loop) the devices in its room that are no longer joined in the call
  leave the room (hang-up, connection lost for good, handed off, removed), and an ended call's
  room is closed. Signaling tells the SFU this through :class:`.sfu_control.SfuControl` only.
* **Slots.** The SFU says when a device's slots change hands; ``sfu.slots`` events go out
  through the bus, one at a time in the order the SFU said them.
* **Members.** The ``ok`` of ``sfu.join`` lists the devices in the room as that join left
  them (``members``: ``user_id``, ``device_id``, and ``joined``, the number of the device's
  latest join: a device that joins again is a new member). Whenever the list changes after
  that -- a device joins or joins again, leaves, leaves the call, or the SFU drops it -- every
  device in the room gets ``sfu.members`` with the whole list, through the same outbox as
  ``sfu.slots``: in the order of the changes. The device whose join made a change gets no
  event for it (its ``ok`` has the list); events for it that come while its ``sfu.join`` is
  under way are held until its ``ok`` is out, and those older than its join dropped. A room
  that closes (the call ended) or empties tells nobody.
* **Speaker.** The ``ok`` of ``sfu.join`` names the room's dominant speaker (``speaker``:
  ``user_id``, ``device_id``, or null), and every device in the room gets ``sfu.speaker``
  whenever the SFU's choice changes (null: nobody, the speaker left), through the same outbox;
  held for a joining device like the others, and dropped when older than its ``ok``.
* **Several nodes.** On a shared bus the SFU must span the nodes (``spans_nodes``:
  :class:`facecall.sfu.placement.ClusterSfu`, each call's room on one owner node); one that
  does not would split a call's devices between the nodes' rooms, so ``sfu.join`` is refused
  (``sfu_unavailable``) then. The owner node's signaling sends the events, through the bus;
  a join it takes for another node holds the device's events there (:meth:`hold`,
  :meth:`joined`, :meth:`release`) until that node has queued the reply
  (:meth:`SfuControl.answered`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from facecall.bus import Bus
from facecall.logs import get_logger
from facecall.signaling.errors import ErrorCode, ProtocolError
from facecall.signaling.protocol import PROTOCOL_VERSION
from facecall.signaling.records import LegState
from facecall.signaling.sfu_control import Member, SfuControl, SfuRefused, Slot, Speaker

if TYPE_CHECKING:
    from facecall.signaling.call_view import CallView

log = get_logger(__name__)

#: the kinds of requests handled here
SFU_KINDS = frozenset({"sfu.join", "sfu.leave"})
Loader = Callable[[str], Awaitable["tuple[int, CallView] | None"]]


@dataclass(eq=False, slots=True)
class _Hold:
    """The events for a device whose ``sfu.join`` is under way, kept until its ``ok``."""

    joins: int = 0
    """its ``sfu.join`` requests under way"""
    events: list[dict[str, Any]] = field(default_factory=list)


class GroupMedia:
    """``sfu.*`` requests and events of one node.

    :param control: the SFU (None: this node has none; every ``sfu.*`` is ``sfu_unavailable``).
    :param bus: where events go; a shared one (several nodes) refuses group media.
    :param load: the service's call loader (cached machine of a call id, or None).
    """

    def __init__(self, control: SfuControl | None, bus: Bus, load: Loader) -> None:
        self.control = control
        self.bus = bus
        self._load = load
        self._outbox: asyncio.Queue[tuple[str, dict[str, Any]]] = asyncio.Queue()
        self._sender: asyncio.Task[None] | None = None
        self._holds: dict[str, _Hold] = {}  # device id -> its events held during its sfu.join
        if control is not None:
            control.on_slots(self._slots_changed)
            control.on_members(self._members_changed)
            control.on_speaker(self._speaker_changed)
            control.hold_joins_with(self)

    async def handle(self, user_id: str, device_id: str, message: Any) -> dict[str, Any]:
        """Act on a validated ``sfu.join`` / ``sfu.leave``; the ``ok`` fields or ProtocolError."""
        control = self._control()
        if message.type == "sfu.join":
            await self._joined_device(user_id, device_id, message.call_id)
            self.hold(device_id)
            try:
                reply = await self._join(control, user_id, device_id, message.call_id, message.sdp)
                self.joined(message.call_id, device_id)
                return reply
            finally:  # after this, nothing yields before the session queues the reply
                self.release(device_id)
                control.answered(message.call_id, device_id)  # (another node's hold: a task)
        entry = await self._load(message.call_id)
        if entry is None or entry[1].participant(user_id) is None:
            raise ProtocolError(ErrorCode.UNKNOWN_CALL, "no such call")
        try:
            left = await control.leave(message.call_id, device_id)
        except SfuRefused as exc:  # (several nodes: the room's node failed to answer)
            raise ProtocolError(exc.code, exc.message) from None
        if not left:
            if entry[1].ended:
                raise ProtocolError(ErrorCode.CALL_ENDED, f"call {message.call_id} has ended")
            raise ProtocolError(ErrorCode.INVALID_STATE,
                                "this device is not in the call's group media")
        return {}

    async def _join(self, control: SfuControl, user_id: str, device_id: str, call_id: str,
                    sdp: str) -> dict[str, Any]:
        """``sfu.join`` of a joined device: the ``ok`` fields (``sdp``, ``slots``, ``members``)."""
        try:
            joined = await control.join(call_id, user_id, device_id, sdp)
        except SfuRefused as exc:
            raise ProtocolError(exc.code, exc.message) from None
        try:  # it may have left the call while the SFU took it
            await self._joined_device(user_id, device_id, call_id)
        except ProtocolError:
            with contextlib.suppress(SfuRefused):  # (the room's node gone: its room too)
                await control.leave(call_id, device_id)
            raise
        return {"sdp": joined.answer, "slots": [slot.to_wire() for slot in joined.slots],
                "members": [member.to_wire() for member in joined.members],
                "speaker": joined.speaker.to_wire() if joined.speaker is not None else None}

    def hold(self, device_id: str) -> None:
        """A join of the device begins: its events wait (:meth:`release`)."""
        self._holds.setdefault(device_id, _Hold()).joins += 1

    def joined(self, call_id: str, device_id: str) -> None:
        """Its join of the call's room returned: what was held about the speaker is older
        than the reply's (read last)."""
        if (hold := self._holds.get(device_id)) is not None:
            hold.events = [e for e in hold.events if e["type"] != "sfu.speaker"
                           or e["call_id"] != call_id]

    def release(self, device_id: str) -> None:
        """A join of the device was answered: once none is under way, queue what was held."""
        if (hold := self._holds.get(device_id)) is None:
            return
        hold.joins -= 1
        if hold.joins == 0:
            self._release(device_id, self._holds.pop(device_id))

    def _usable(self) -> bool:
        """An SFU that may serve this node: any when alone, one spanning the nodes else."""
        return self.control is not None and (not self.bus.shared or self.control.spans_nodes)

    async def in_use(self, call_id: str) -> bool:
        """Whether the call's media goes through the SFU: its room has devices (the
        ``group_media`` of ``call.handoff``'s ``ok``: the device that takes the call joins it)."""
        if not self._usable() or self.control is None:
            return False
        try:
            return bool(await self.control.devices(call_id))
        except SfuRefused:  # (several nodes: Redis failed)
            return False

    def _control(self) -> SfuControl:
        if self.control is None or not self._usable():
            raise ProtocolError(ErrorCode.SFU_UNAVAILABLE, "group media needs the single-node "
                                "server or an SFU spanning the nodes (this one shares a bus "
                                "with other nodes)" if self.control is not None
                                else "this server runs no SFU")
        return self.control

    async def _joined_device(self, user_id: str, device_id: str, call_id: str) -> None:
        """Raise the ProtocolError a device that may not join the call's room gets."""
        entry = await self._load(call_id)
        machine = entry[1] if entry is not None else None
        if machine is None or machine.participant(user_id) is None:
            raise ProtocolError(ErrorCode.UNKNOWN_CALL, "no such call")
        if machine.ended:
            raise ProtocolError(ErrorCode.CALL_ENDED, f"call {call_id} has ended")
        leg = machine.active_leg(user_id, device_id)
        if leg is None or leg.state is not LegState.JOINED:
            raise ProtocolError(ErrorCode.NOT_IN_CALL,
                                "only a joined device of the call can join its group media")

    async def follow(self, machine: CallView) -> None:
        """The call changed (saved): devices no longer joined leave its room; an ended call's
        room closes."""
        if not self._usable() or self.control is None:
            return
        try:
            if not (members := await self.control.devices(machine.call_id)):
                return
            if machine.ended:
                await self.control.close(machine.call_id)
                return
            joined = {leg.device_id for leg in machine.joined_legs()}
            for device_id in sorted(members - joined):
                await self.control.leave(machine.call_id, device_id)
        except Exception:  # the call's change stands; the SFU drops silent devices by itself
            log.exception("sfu.follow_failed", call_id=machine.call_id)

    def _slots_changed(self, call_id: str, user_id: str, device_id: str,
                       slots: tuple[Slot, ...]) -> None:
        """The SFU's slots listener: queue the ``sfu.slots`` event (sent in order by one task)."""
        self._queue(device_id, {"v": PROTOCOL_VERSION, "type": "sfu.slots", "call_id": call_id,
                                "slots": [slot.to_wire() for slot in slots]})

    def _members_changed(self, call_id: str, joiner: str | None,
                         members: tuple[Member, ...]) -> None:
        """The SFU's members listener: queue ``sfu.members`` for every device in the room but
        ``joiner`` (its ``ok`` carries the list; what was held for it is older than that)."""
        event = {"v": PROTOCOL_VERSION, "type": "sfu.members", "call_id": call_id,
                 "members": [member.to_wire() for member in members]}
        if joiner is not None and (hold := self._holds.get(joiner)) is not None:
            hold.events = [e for e in hold.events
                           if e["type"] != "sfu.members" or e["call_id"] != call_id]
        for member in members:
            if member.device_id != joiner:
                self._queue(member.device_id, event)

    def _speaker_changed(self, call_id: str, speaker: Speaker | None) -> None:
        """The SFU's speaker listener: queue ``sfu.speaker`` for every device in the room."""
        if self.control is None:
            return
        event = {"v": PROTOCOL_VERSION, "type": "sfu.speaker", "call_id": call_id,
                 "user_id": speaker.user_id if speaker is not None else None,
                 "device_id": speaker.device_id if speaker is not None else None}
        for device_id in sorted(self.control.members(call_id)):
            self._queue(device_id, event)

    def _queue(self, device_id: str, event: dict[str, Any]) -> None:
        """Send ``event`` to the device after every event queued before it; held while the
        device's ``sfu.join`` is under way (:meth:`_release`)."""
        if (hold := self._holds.get(device_id)) is not None:
            hold.events.append(event)
            return
        self._outbox.put_nowait((device_id, event))
        if self._sender is None or self._sender.done():
            self._sender = asyncio.create_task(self._send(), name="facecall-sfu-events")

    def _release(self, device_id: str, hold: _Hold) -> None:
        """The device's ``sfu.join`` is answered: queue what was held for it, about the rooms
        it is still in (a refused join that took it out of the room drops them). The outbox's
        task sends them after the reply, which the session queues without yielding."""
        if not hold.events or self.control is None:
            return
        rooms: dict[str, bool] = {}
        for event in hold.events:
            call_id = event["call_id"]
            if call_id not in rooms:
                rooms[call_id] = device_id in self.control.members(call_id)
            if rooms[call_id]:
                self._queue(device_id, event)

    async def _send(self) -> None:
        while True:
            device_id, event = await self._outbox.get()
            try:
                await self.bus.deliver(device_id, event)
            except Exception:
                log.exception("sfu.event_not_delivered", device_id=device_id, type=event["type"])

    async def stop(self) -> None:
        """Stop sending events (the node stops; the SFU's owner closes its rooms)."""
        if self._sender is not None:
            self._sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sender
            self._sender = None
