"""Events fed to :class:`facecall.signaling.machine.CallMachine` by the driver.

Each event names the acting device as ``(user_id, device_id)`` — the authenticated identity of
the WebSocket session the request came from, never a value read from the message. Events are
immutable; :meth:`CallMachine.handle` either applies one completely or raises
:class:`~facecall.signaling.errors.ProtocolError` and changes nothing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from .protocol import CallCandidate, CallKey, CallMedia, CallRejoin, CallSdp
from .reasons import EndReason

RelayKind = Literal["call.sdp", "call.candidate", "call.media", "call.rejoin", "call.key"]
#: The requests relayed from one joined device to another, unchanged but for the sender.
RELAY_KINDS: frozenset[str] = frozenset(RelayKind.__args__)  # type: ignore[attr-defined]


@dataclass(frozen=True, slots=True)
class Answer:
    """A ringing device answers (``call.answer``)."""

    user_id: str
    device_id: str


@dataclass(frozen=True, slots=True)
class Decline:
    """A ringing device declines for its user (``call.decline``); ``busy``: in another call."""

    user_id: str
    device_id: str
    busy: bool = False


@dataclass(frozen=True, slots=True)
class Cancel:
    """The caller's device gives up before any callee answered (``call.cancel``)."""

    user_id: str
    device_id: str


@dataclass(frozen=True, slots=True)
class Hangup:
    """A joined device leaves (``call.hangup``), with ``reason``: ``hung_up``, or ``no_media``
    / ``connection_lost`` when its client gave up on the media, or ``identity_check_failed``
    when it refused the other device's SDP. From the caller before anyone
    answered it is a cancel."""

    user_id: str
    device_id: str
    reason: EndReason = EndReason.HUNG_UP


@dataclass(frozen=True, slots=True)
class Handoff:
    """A device takes over its user's place in an answered call from another of the user's
    devices (``call.handoff``)."""

    user_id: str
    device_id: str


@dataclass(frozen=True, slots=True)
class Watch:
    """A device of a user in the call that the call did not know (registered since the user
    came in) connected: it hears ``call.elsewhere`` from now on. Sent by the driver."""

    user_id: str
    device_id: str


@dataclass(frozen=True, slots=True)
class Invite:
    """A joined device rings more users into the call (``call.invite``).

    :param callees: user id → the device ids to ring (looked up by the driver; an empty list
        makes that user ``unavailable`` at once).
    :param busy_users: invitees already in another call: their ring says ``call_waiting``.
    """

    user_id: str
    device_id: str
    callees: Mapping[str, Sequence[str]]
    busy_users: frozenset[str] = field(default_factory=frozenset)


@dataclass(frozen=True, slots=True)
class Relay:
    """SDP, an ICE candidate, a media state, a request to set the media up anew or a sealed
    SFrame sender key, from one joined device to another joined device.

    :param kind: one of :data:`RELAY_KINDS`.
    :param body: the JSON-safe payload fields copied into the relayed event:
        ``{"description": {...}, "ice_restart": bool, "signature": str | None}``,
        ``{"candidate": {...} | None}``, ``{"audio": bool, "video": bool, "screen": bool}``,
        ``{}`` (``call.rejoin``) or ``{"key": {...}}`` (``call.key``: the sealed key message as
        sent; the machine checks that its sender is the sending device).
    """

    user_id: str
    device_id: str
    to_device: str
    kind: RelayKind
    body: Mapping[str, Any]

    @classmethod
    def from_message(cls, user_id: str, device_id: str,
                     message: CallSdp | CallCandidate | CallMedia | CallRejoin | CallKey) -> Relay:
        """The relay event for a validated ``call.sdp`` / ``call.candidate`` / ``call.media``
        / ``call.rejoin`` / ``call.key``."""
        if isinstance(message, CallSdp):
            body: dict[str, Any] = {
                "description": message.description.model_dump(mode="json"),
                "ice_restart": message.ice_restart,
                "signature": message.signature,
            }
        elif isinstance(message, CallMedia):
            body = {"audio": message.audio, "video": message.video, "screen": message.screen}
        elif isinstance(message, CallRejoin):
            body = {}
        elif isinstance(message, CallKey):
            body = {"key": message.key}
        else:
            cand = message.candidate
            body = {"candidate": None if cand is None else cand.model_dump(mode="json")}
        return cls(user_id, device_id, message.to_device, message.type, body)


@dataclass(frozen=True, slots=True)
class DeviceLost:
    """The device's connection dropped and it did not resume within the grace period, or
    (``removed``) the device was removed: it signed out or its owner removed it."""

    user_id: str
    device_id: str
    removed: bool = False


@dataclass(frozen=True, slots=True)
class Abort:
    """The driver ends the call (glare lost, device removed, server shutdown, error)."""

    reason: EndReason


#: Every event :meth:`CallMachine.handle` accepts.
Event = Answer | Decline | Cancel | Hangup | Handoff | Watch | Invite | Relay | DeviceLost | Abort
