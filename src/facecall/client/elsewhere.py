"""What a device knows of its user's calls on the user's other devices (docs/protocol.md,
"Moving a call to another device", step 1, "Where the call is").

When the user's part of a call is answered on one device, the user's other connected devices
get ``call.elsewhere {state: "active", device_id, media, participants}`` (again, naming the new
device, each time the call moves), and ``call.elsewhere {state: "ended"}`` once the user is no
longer in it. Every ``welcome`` carries the whole list as it stands (``welcome.elsewhere``), so
a device that was away, or connects for the first time, finds it there. :class:`ElsewhereCalls`
keeps that list for a :class:`~facecall.client.device.Device` (``device.calls_elsewhere``),
from which an app offers "a call is on your other device — move it here"
(``device.take_call``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from facecall.logs import get_logger

log = get_logger(__name__)


@dataclass(frozen=True, slots=True)
class OtherUser:
    """Another user in a call, with their display name (None if the server did not know it)."""

    user_id: str
    name: str | None


@dataclass(frozen=True, slots=True)
class CallElsewhere:
    """An answered call the user is in on another of their devices, which this device may take
    over (:meth:`Device.take_call <facecall.client.device.Device.take_call>`)."""

    call_id: str
    device_id: str
    """The user's device that has the call now."""
    media: str
    """``"audio"`` or ``"video"``."""
    participants: tuple[OtherUser, ...]
    """The other users in the call (as they were when it was answered or last moved)."""
    role: str = "callee"
    """The user's: ``"caller"`` (the user placed the call) or ``"callee"``."""

    @property
    def video(self) -> bool:
        return self.media == "video"

    @classmethod
    def from_fields(cls, call_id: str, fields: Mapping[str, Any]) -> CallElsewhere:
        """From a ``welcome.elsewhere`` entry or an ``active`` ``call.elsewhere`` event.

        :raises KeyError, TypeError: a field is missing or of the wrong shape.
        """
        device_id, media = fields["device_id"], fields["media"]
        if not isinstance(device_id, str) or not isinstance(media, str):
            raise TypeError("device_id and media must be strings")
        role = fields.get("role", "callee")
        if role not in ("caller", "callee"):
            raise TypeError("role must be caller or callee")
        return cls(call_id, device_id, media,
                   tuple(OtherUser(str(other["user_id"]), other.get("name"))
                         for other in fields["participants"]), role)


Change = tuple[str, CallElsewhere | None]
"""A call id and what is known of it now elsewhere (None: nothing, any more)."""


class ElsewhereCalls:
    """The user's calls on their other devices, by call id, as this device was last told.

    An entry naming this device (the last welcome's ``device_id``) is not elsewhere: the call is
    here. Each method returns the changes it made, to be emitted.
    """

    def __init__(self) -> None:
        self._calls: dict[str, CallElsewhere] = {}
        self.view: Mapping[str, CallElsewhere] = MappingProxyType(self._calls)
        """A read-only live view of the calls."""
        self._here: str | None = None
        self._as_of: int | None = None
        """The last welcome's ``last_seq``: events up to it are older than its list."""

    def welcome(self, welcome: Mapping[str, Any]) -> list[Change]:
        """Every ``welcome`` lists the calls as they stand (``elsewhere``): take that as the
        whole truth. The events a resume replays after it were numbered up to its ``last_seq``
        before the list was made: :meth:`update` leaves those ``call.elsewhere`` out."""
        self._here = welcome.get("device_id")
        last_seq = welcome.get("last_seq")
        self._as_of = last_seq if isinstance(last_seq, int) else None
        return self._reset(welcome.get("elsewhere") or [])

    def clear(self) -> list[Change]:
        """The device stopped: it knows nothing any more."""
        return self._reset([])

    def _reset(self, entries: Iterable[Mapping[str, Any]]) -> list[Change]:
        here = self._here
        now: dict[str, CallElsewhere] = {}
        for entry in entries:
            try:
                where = CallElsewhere.from_fields(entry["call_id"], entry)
            except (KeyError, TypeError, AttributeError) as exc:
                log.warning("device.bad_elsewhere", error=repr(exc))
                continue
            if where.device_id != here:
                now[where.call_id] = where
        changes: list[Change] = [(call_id, None) for call_id in self._calls if call_id not in now]
        changes += [(call_id, where) for call_id, where in now.items()
                    if self._calls.get(call_id) != where]
        self._calls.clear()
        self._calls.update(now)
        return changes

    def update(self, event: Mapping[str, Any]) -> Change | None:
        """Apply a ``call.elsewhere`` event; None if it changed nothing (or it is older than
        the welcome)."""
        call_id, seq = event["call_id"], event.get("seq")
        if isinstance(seq, int) and self._as_of is not None and seq <= self._as_of:
            return None  # replayed after a welcome that already says how things stand
        if event.get("state") == "active":
            try:
                where = CallElsewhere.from_fields(call_id, event)
            except (KeyError, TypeError, AttributeError) as exc:
                log.warning("device.bad_elsewhere", call_id=call_id, error=repr(exc))
                return None
            if where.device_id != self._here:
                if self._calls.get(call_id) == where:
                    return None
                self._calls[call_id] = where
                return call_id, where
        return self.forget(call_id)

    def forget(self, call_id: str) -> Change | None:
        """The call is not elsewhere any more (it ended for the user, or it is here now)."""
        if self._calls.pop(call_id, None) is None:
            return None
        return call_id, None
