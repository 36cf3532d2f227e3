"""The server → client frames of the signaling protocol (version 1): replies (``ok``,
``error``, ``welcome``, ``pong``), which answer a client message, and events, which the delivery
layer numbers per device (docs/protocol.md, "Server → client events")."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints, WithJsonSchema

from facecall.e2ee.media_keys import MESSAGE_FIELDS, MediaKeyError, parse_sender_key

from .errors import ErrorCode
from .frames import Frame, IceCandidate, Id, Media, NonNegInt, SessionDescription
from .reasons import EndReason


def _sealed_sender_key(value: dict[str, Any]) -> dict[str, Any]:
    """Refuse what :func:`facecall.e2ee.media_keys.parse_sender_key` refuses (shape and size:
    the signature and the sealed keys are the receiving devices' to check)."""
    try:
        parse_sender_key(value)
    except MediaKeyError as exc:
        raise ValueError(f"not a sealed sender key message (docs/sframe.md): {exc}") from None
    return value


#: A sealed SFrame sender key message, in the wire form of :mod:`facecall.e2ee.media_keys`
#: (``call.key``, both ways): a JSON object whose shape and size are checked, and which the
#: server relays as it came, without reading the keys in it (it holds none).
SealedSenderKey = Annotated[
    dict[str, Any],
    AfterValidator(_sealed_sender_key),
    WithJsonSchema({
        "type": "object",
        "required": list(MESSAGE_FIELDS),
        "description": "A sealed SFrame sender key message (docs/sframe.md, \"Key distribution "
                       "(the core)\"): {v, call_id, sender_user, sender_device, kid, epk, "
                       "recipients: [{user, device, sealed}], signature}, strings only; at most "
                       "64 recipients.",
    }),
]

# ======================================================================================
# server → client: replies
# ======================================================================================


class Ok(Frame):
    """Success reply to the client message ``re``; request-specific result fields
    (e.g. ``call_id`` for ``call.start``) sit next to ``re``."""

    model_config = ConfigDict(extra="allow", strict=True, frozen=True)

    type: Literal["ok"]
    re: Id


class Error(Frame):
    """Failure reply: nothing changed. ``re`` is null when the id could not be read."""

    type: Literal["error"]
    re: Id | None
    code: ErrorCode
    message: str


class JoinedDevice(BaseModel):
    """A device in a call."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    user_id: Id
    device_id: Id


class HeldCall(BaseModel):
    """A call of ``hello.calls`` that the device is still in, as it stands now: whether this
    device rings or is joined, and the other devices joined."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    call_id: Id
    media: Media
    state: Literal["ringing", "joined"]
    participants: list[JoinedDevice]


class OtherUser(BaseModel):
    """Another user of a call, with their display name when the server knows it."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    user_id: Id
    name: Annotated[str, StringConstraints(max_length=64)] | None = None


class ElsewhereCall(BaseModel):
    """An answered call that this device's user is in on another of their devices
    (``device_id``): it can move to this device with ``call.handoff``. ``role``: the user's
    (who placed the call); ``participants``: the other users joined when this was sent."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    call_id: Id
    device_id: Id
    media: Media
    role: Literal["caller", "callee"]
    participants: list[OtherUser]


class Welcome(Frame):
    """Reply to ``hello``: who this connection is, whether the previous session was resumed
    (events after ``resume_from`` follow), and the last ``seq`` assigned to this device.
    ``calls`` (only when not resumed): the calls of ``hello.calls`` the device is still in.
    ``elsewhere``: the answered calls its user is in on another device, which it may take
    over (``call.handoff``)."""

    type: Literal["welcome"]
    re: Id
    user_id: Id
    device_id: Id
    resumed: bool
    last_seq: NonNegInt
    calls: list[HeldCall] = []
    elsewhere: list[ElsewhereCall] = []


class Pong(Frame):
    """Reply to ``ping``."""

    type: Literal["pong"]
    re: Id


# ======================================================================================
# server → client: events (sequenced per device)
# ======================================================================================


class _Event(Frame):
    seq: NonNegInt = Field(description="Per-device sequence number (delivery layer).")
    call_id: Id


class CallRing(_Event):
    """An incoming call rings on this device. ``participants``: the user ids in the call
    (joined or ringing, caller first); ``call_waiting``: the user is already in another call."""

    type: Literal["call.ring"]
    from_user: Id
    from_device: Id
    from_name: Annotated[str, StringConstraints(max_length=64)] | None = Field(
        default=None, description="The display name of `from_user`, for the incoming-call screen.")
    media: Media
    participants: list[Id]
    call_waiting: bool


class CallRinging(_Event):
    """To joined devices: ``devices`` devices of ``user_id`` are ringing, ``online`` of them
    connected right now (0: the user is offline; their devices ring when they connect, until
    the ring times out)."""

    type: Literal["call.ringing"]
    user_id: Id
    devices: NonNegInt
    online: NonNegInt | None = None


class CallAnswered(_Event):
    """To joined devices: ``user_id`` answered on ``device_id`` and is now in the call."""

    type: Literal["call.answered"]
    user_id: Id
    device_id: Id


class CallStopRinging(_Event):
    """To a ringing device: stop ringing (``answered_elsewhere``, ``declined_elsewhere``,
    ``cancelled``, ``ring_timeout``, ``glare``, …)."""

    type: Literal["call.stop_ringing"]
    reason: EndReason


class CallDeclined(_Event):
    """To joined devices: ``user_id`` will not join (``declined``, ``busy``, ``ring_timeout``,
    ``unavailable``, ``connection_lost``)."""

    type: Literal["call.declined"]
    user_id: Id
    reason: EndReason


class CallParticipantLeft(_Event):
    """To the remaining joined devices: a joined device left; the call goes on."""

    type: Literal["call.participant_left"]
    user_id: Id
    device_id: Id
    reason: EndReason


class CallEndedEvent(_Event):
    """To every device still joined when the call ends."""

    type: Literal["call.ended"]
    reason: EndReason


class CallHandedOff(_Event):
    """Another user's call moved between their devices (``call.handoff``): ``from_device``
    has left the call (close the peer connection with it; keep showing its last picture until
    the new one carries media), ``to_device`` is in the call in its place: offer to it, as to a
    device that has just answered. The call itself goes on: it did not end, nobody left."""

    type: Literal["call.handed_off"]
    user_id: Id
    from_device: Id
    to_device: Id


class CallElsewhere(_Event):
    """To the other devices of a user, about that user's own answered call on one of their
    devices: ``active`` -- the call is on ``device_id`` now (answered there, or moved there)
    and may move to this device with ``call.handoff``; ``ended`` -- the user is no longer in
    it. Sent only to devices connected at the time; a device that connects later finds these
    calls in ``welcome.elsewhere``."""

    type: Literal["call.elsewhere"]
    state: Literal["active", "ended"]
    device_id: Id | None = None
    media: Media | None = None
    role: Literal["caller", "callee"] | None = None
    participants: list[OtherUser] = []


class CallSdpRelayed(_Event):
    """An SDP offer/answer from another joined device of the call, with the sender's
    ``signature`` as it sent it (None: it sent none)."""

    type: Literal["call.sdp"]
    from_user: Id
    from_device: Id
    description: SessionDescription
    ice_restart: bool
    signature: str | None = None


class CallCandidateRelayed(_Event):
    """An ICE candidate (``null``: end of candidates) from another joined device."""

    type: Literal["call.candidate"]
    from_user: Id
    from_device: Id
    candidate: IceCandidate | None


class CallMediaRelayed(_Event):
    """What another joined device sends now: its microphone (``audio``), its camera
    (``video``), and whether that video is its screen (``screen``)."""

    type: Literal["call.media"]
    from_user: Id
    from_device: Id
    audio: bool
    video: bool
    screen: bool = False


class CallRejoinRelayed(_Event):
    """Another joined device lost its peer connection with this one (a reloaded page, a
    restarted app) and is still in the call: close the peer connection with it and offer to it
    anew, as to a device that has just joined."""

    type: Literal["call.rejoin"]
    from_user: Id
    from_device: Id


class CallKeyRelayed(_Event):
    """A sealed SFrame sender key from another joined device of the call (``from_device``, the
    key's ``sender_device``), as it sent it: open this device's entry with the sender device's
    pinned identity key (:func:`facecall.e2ee.media_keys.open_sender_key`)."""

    type: Literal["call.key"]
    from_user: Id
    from_device: Id
    key: SealedSenderKey


class SlotFill(BaseModel):
    """One receive slot of a device in group media: its m-line (``mid``, ``kind``) and the
    device whose media it carries (``user_id``, ``device_id``; both null: empty)."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    mid: Annotated[str, StringConstraints(min_length=1, max_length=32)]
    kind: Media
    user_id: Id | None
    device_id: Id | None


class SfuSlots(_Event):
    """To a device in the call's group media (``sfu.join``): who fills each of its receive
    slots now, every slot listed, whenever one changes hands (someone joined, left, or started
    talking while the slots were all taken)."""

    type: Literal["sfu.slots"]
    slots: list[SlotFill]


class RoomMember(BaseModel):
    """A device with a place in the call's group media room, and ``joined``: the number of
    its latest join of the room. A device that joins again (a new peer connection, which holds
    no keys) gets a greater number: it is a new member."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    user_id: Id
    device_id: Id
    joined: NonNegInt


class SfuMembers(_Event):
    """To every device in the call's group media room: who is in it now (``members``, this
    device included, in the order they joined), whenever that changes -- a device joined or
    joined again, left, left the call, or the SFU dropped it. Each sender device makes a new
    SFrame sender key and seals it to these members (docs/sframe.md, "Rotation")."""

    type: Literal["sfu.members"]
    members: list[RoomMember]


class SfuSpeaker(_Event):
    """To every device in the call's group media room: the device the SFU now takes for the
    dominant speaker (from the RFC 6464 audio levels of every sender), or nobody (both null:
    the speaker left), whenever that changes. The ``ok`` of ``sfu.join`` has the one at the
    join (``speaker``: ``{user_id, device_id}`` or null)."""

    type: Literal["sfu.speaker"]
    user_id: Id | None
    device_id: Id | None


#: Any server → client frame, discriminated by ``type``.
ServerMessage = Annotated[
    Ok
    | Error
    | Welcome
    | Pong
    | CallRing
    | CallRinging
    | CallAnswered
    | CallStopRinging
    | CallDeclined
    | CallParticipantLeft
    | CallEndedEvent
    | CallSdpRelayed
    | CallCandidateRelayed
    | CallMediaRelayed
    | CallRejoinRelayed
    | CallKeyRelayed
    | CallHandedOff
    | CallElsewhere
    | SfuSlots
    | SfuMembers
    | SfuSpeaker,
    Field(discriminator="type"),
]
