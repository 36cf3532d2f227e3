"""What a device's ``hello`` asks of the signaling service beyond attaching it: the calls its
client still holds (``welcome.calls``), the user's calls on other devices (``welcome.elsewhere``),
a fresh start's clean-up, and one hello per device at a time (docs/protocol.md, "Connection",
"A fresh start", "Moving a call to another device")."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

from facecall.bus import Bus, LockTimeout
from facecall.signaling.errors import ErrorCode, ProtocolError
from facecall.signaling.events import DeviceLost, Event, Watch
from facecall.signaling.records import LegState
from facecall.store import Store

if TYPE_CHECKING:
    from facecall.signaling.machine import CallMachine

HELLO_WAIT = 30.0  # seconds a hello waits for an earlier hello of its device


class DeviceHello:
    """The hello-time steps of :class:`~facecall.signaling.service.CallService`, which is
    built on this class and owns the attributes declared here."""

    store: Store
    bus: Bus
    _names: dict[str, str]

    if TYPE_CHECKING:  # the service's own
        async def _load(self, call_id: str) -> tuple[int, CallMachine] | None: ...
        async def _apply(self, call_id: str, event: Event | None, *, persist: bool = True,
                         timer: bool = False) -> dict[str, Any]: ...
        async def _named(self, fields: dict[str, Any]) -> dict[str, Any]: ...

    async def held_calls(self, user_id: str, device_id: str, declared: list[str]
                         ) -> list[dict[str, Any]]:
        """The calls of ``declared`` (``hello.calls``: what the device's client still holds)
        that the device is still in, as ``welcome.calls`` entries. A call the device is not in
        (or that does not exist) is left out and tells the device nothing more."""
        held = []
        for call_id in declared:
            entry = await self._load(call_id)
            if entry is not None and (view := entry[1].held_by(user_id, device_id)) is not None:
                held.append(view)
        return held

    async def calls_elsewhere(self, user_id: str, device_id: str) -> list[dict[str, Any]]:
        """The answered calls the user is in on another device, as ``welcome.elsewhere``
        entries: what this device may take over (``call.handoff``)."""
        found = []
        for call_id in await self.store.joined_calls_of_user(user_id):
            entry = await self._load(call_id)
            if entry is None or (view := entry[1].elsewhere_for(user_id, device_id)) is None:
                continue
            participant = entry[1].participant(user_id)
            if participant is not None and device_id not in participant.devices:
                try:  # a device newer than the call: it must hear where the call goes next
                    await self._apply(call_id, Watch(user_id, device_id))
                except ProtocolError:
                    continue  # the user left it meanwhile
            found.append(await self._named(view))
        return found

    async def fresh_start(self, user_id: str, device_id: str, kept: set[str],
                          already_rung: Callable[[str], bool]) -> None:
        """The device starts afresh (its welcome said ``resumed: false``: a new app, a lost
        session, or a node that restarted and lost its mailboxes). It holds only the calls of
        ``kept`` (its ``welcome.calls``): it leaves the other calls it was joined in
        (``connection_lost``, as its client ends them), and it is rung again for each other
        call that rings it unless ``already_rung`` (a ring since its welcome) -- an incoming
        call still shows."""
        for call_id in await self.store.live_calls_of_user(user_id):
            if call_id in kept:
                continue
            entry = await self._load(call_id)
            leg = entry[1].active_leg(user_id, device_id) if entry is not None else None
            if entry is None or leg is None:
                continue
            if leg.state is LegState.JOINED:
                with contextlib.suppress(ProtocolError):  # it ended meanwhile
                    await self._apply(call_id, DeviceLost(user_id, device_id))
            elif not already_rung(call_id) and (ring := entry[1].ring_message(user_id, device_id)):
                await self.bus.deliver(device_id, {**ring,
                                                   "from_name": self._names.get(ring["from_user"])})

    @contextlib.asynccontextmanager
    async def hello_turn(self, device_id: str) -> AsyncIterator[None]:
        """One ``hello`` of a device at a time, on every node sharing the bus (two connections
        racing must not act on the device's calls at once: the older one's fresh start would
        undo the newer's welcome). Raises :class:`ProtocolError` ``internal`` when the other
        hello holds the turn too long."""
        try:
            async with self.bus.exclusive(f"hello:{device_id}", HELLO_WAIT):
                yield
        except LockTimeout as exc:
            raise ProtocolError(ErrorCode.INTERNAL, "another connection of this device is "
                                "saying hello; retry") from exc
