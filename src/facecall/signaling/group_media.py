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
* **One node only.** On a shared bus (several nodes) each node would hold its own rooms and
  split a call's devices between them: ``sfu.join`` is refused (``sfu_unavailable``) there.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from facecall.bus import Bus
from facecall.logs import get_logger
from facecall.signaling.errors import ErrorCode, ProtocolError
from facecall.signaling.protocol import PROTOCOL_VERSION
from facecall.signaling.records import LegState
from facecall.signaling.sfu_control import SfuControl, SfuRefused, Slot

if TYPE_CHECKING:
    from facecall.signaling.call_view import CallView

log = get_logger(__name__)

#: the kinds of requests handled here
SFU_KINDS = frozenset({"sfu.join", "sfu.leave"})
Loader = Callable[[str], Awaitable["tuple[int, CallView] | None"]]


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
        if control is not None:
            control.on_slots(self._slots_changed)

    async def handle(self, user_id: str, device_id: str, message: Any) -> dict[str, Any]:
        """Act on a validated ``sfu.join`` / ``sfu.leave``; the ``ok`` fields or ProtocolError."""
        control = self._control()
        if message.type == "sfu.join":
            await self._joined_device(user_id, device_id, message.call_id)
            try:
                joined = await control.join(message.call_id, user_id, device_id, message.sdp)
            except SfuRefused as exc:
                raise ProtocolError(exc.code, exc.message) from None
            try:  # it may have left the call while the SFU took it
                await self._joined_device(user_id, device_id, message.call_id)
            except ProtocolError:
                await control.leave(message.call_id, device_id)
                raise
            return {"sdp": joined.answer, "slots": [slot.to_wire() for slot in joined.slots]}
        entry = await self._load(message.call_id)
        if entry is None or entry[1].participant(user_id) is None:
            raise ProtocolError(ErrorCode.UNKNOWN_CALL, "no such call")
        if not await control.leave(message.call_id, device_id):
            if entry[1].ended:
                raise ProtocolError(ErrorCode.CALL_ENDED, f"call {message.call_id} has ended")
            raise ProtocolError(ErrorCode.INVALID_STATE,
                                "this device is not in the call's group media")
        return {}

    def _control(self) -> SfuControl:
        if self.control is None or self.bus.shared:
            raise ProtocolError(ErrorCode.SFU_UNAVAILABLE, "group media needs the single-node "
                                "server for now (this one shares a bus with other nodes)"
                                if self.bus.shared else "this server runs no SFU")
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
        if self.control is None or not (members := self.control.members(machine.call_id)):
            return
        try:
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
        """The SFU's listener: queue the ``sfu.slots`` event (sent in order by one task)."""
        event = {"v": PROTOCOL_VERSION, "type": "sfu.slots", "call_id": call_id,
                 "slots": [slot.to_wire() for slot in slots]}
        self._outbox.put_nowait((device_id, event))
        if self._sender is None or self._sender.done():
            self._sender = asyncio.create_task(self._send(), name="facecall-sfu-slots")

    async def _send(self) -> None:
        while True:
            device_id, event = await self._outbox.get()
            try:
                await self.bus.deliver(device_id, event)
            except Exception:
                log.exception("sfu.slots_not_delivered", device_id=device_id)

    async def stop(self) -> None:
        """Stop sending events (the node stops; the SFU's owner closes its rooms)."""
        if self._sender is not None:
            self._sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sender
            self._sender = None
