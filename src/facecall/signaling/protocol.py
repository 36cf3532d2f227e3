"""The signaling wire protocol, version 1: message models and the client-message parser.

Versioned JSON over one WebSocket per device (``docs/protocol.md`` is the prose reference;
``docs/protocol.schema.json`` is generated from these models by ``python -m
facecall.signaling.schema``).

Three kinds of frames:

* **client messages** ``{"v": 1, "id": "<client id>", "type": "...", ...}`` — every one carries
  an id chosen by the client (1..64 printable ASCII characters); a resent message keeps its id
  and the server answers it once (deduplication by id).
* **replies** ``ok`` / ``error`` / ``welcome`` / ``pong`` carry ``"re": "<id>"``, the id of the
  client message they answer; they are not sequenced.
* **events** (``call.ring``, ``call.ended``, relayed ``call.sdp`` …) carry ``"seq"``: a per-device
  counter assigned by the delivery layer, acknowledged with ``ack`` and replayed on resume.

Validation is strict: unknown fields are refused, no type coercion (``"1"`` is not an int,
``1`` is not a bool), every string has a length limit.

The client messages and the parser are here; the limits, field types and frame base shared by
both directions in :mod:`.frames`; the server's replies and events in :mod:`.server_messages`.
Import any of them from here.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import Field, StringConstraints, TypeAdapter, ValidationError, ValidationInfo, field_validator

from .errors import ErrorCode, ProtocolError
from .frames import (
    CLOSE_REMOVED,
    CLOSE_REPLACED,
    MAX_CALLEES,
    MAX_CANDIDATE_CHARS,
    MAX_FRAME_BYTES,
    MAX_HELD_CALLS,
    MAX_SDP_CHARS,
    PROTOCOL_VERSION,
    Frame,
    HeldCallIds,
    IceCandidate,
    Id,
    Media,
    NonNegInt,
    SessionDescription,
    UserIds,
)
from .server_messages import Error, Ok, SealedSenderKey, ServerMessage

#: the names of the shared modules that other modules import from here
__all__ = [
    "CLIENT_MESSAGE_TYPES",
    "CLOSE_REMOVED",
    "CLOSE_REPLACED",
    "MAX_CALLEES",
    "MAX_CANDIDATE_CHARS",
    "MAX_FRAME_BYTES",
    "MAX_HELD_CALLS",
    "MAX_SDP_CHARS",
    "PROTOCOL_VERSION",
    "ClientMessage",
    "Error",
    "Ok",
    "ServerMessage",
    "error_reply",
    "ok_reply",
    "parse_client_message",
    "parse_server_message",
]


# ======================================================================================
# client → server
# ======================================================================================


class _ClientFrame(Frame):
    id: Id = Field(description="Client-chosen message id, echoed as `re` in the reply.")


class Hello(_ClientFrame):
    """First message on a connection. ``resume_from`` is the last event ``seq`` the device
    processed on its previous connection (``null`` for a fresh session); the server replays
    every kept event after it and answers ``welcome``. ``calls``: the calls the device's client
    still holds (ringing or joined); if the server cannot resume, the device stays in those
    it is still in (``welcome.calls``) and leaves the others."""

    type: Literal["hello"]
    resume_from: NonNegInt | None = None
    calls: HeldCallIds = []


class Ack(_ClientFrame):
    """The device has processed every event up to and including ``seq``; the server may forget
    them. Answered with ``ok``."""

    type: Literal["ack"]
    seq: NonNegInt


class Ping(_ClientFrame):
    """Keep-alive; answered with ``pong``."""

    type: Literal["ping"]


class Bye(_ClientFrame):
    """This client is going away now and may be back in a moment: a web page that unloads,
    which may be a reload. The device's resume grace becomes ``unload_grace`` (shorter), and a
    device that does not come back within it hangs up the calls it is joined in, as a closed
    page does. A reloaded page comes back naming its call and keeps it (docs/protocol.md,
    "Rejoining the media"). Answered ``ok``; the client need not wait for it."""

    type: Literal["bye"]


class CallStart(_ClientFrame):
    """Place a call to one or more users; every registered device of each rings.
    Answered with ``ok {call_id}``."""

    type: Literal["call.start"]
    to: UserIds
    media: Media


class CallAnswer(_ClientFrame):
    """Answer a ringing call on this device. Answered with ``ok {participants}``: the devices
    already joined (send them an offer or wait for theirs)."""

    type: Literal["call.answer"]
    call_id: Id


class CallDecline(_ClientFrame):
    """Decline a ringing call for this user (all of the user's devices stop ringing).
    ``busy`` says the user is in another call."""

    type: Literal["call.decline"]
    call_id: Id
    busy: bool = False


class CallCancel(_ClientFrame):
    """The caller gives up before anyone answered."""

    type: Literal["call.cancel"]
    call_id: Id


#: Why a device hangs up (``call.hangup``): the person did, or its client gave up on the media.
HangupReason = Literal["hung_up", "no_media", "connection_lost", "identity_check_failed"]


class CallHangup(_ClientFrame):
    """Leave a joined call. ``reason``: ``hung_up`` (the person hung up), ``no_media`` (the
    client gave up because the media never connected), ``connection_lost`` (the media was
    lost and did not come back) or ``identity_check_failed`` (the client refused an SDP that
    the other device's identity key did not sign: docs/security.md); the others hear it, and
    history keeps it."""

    type: Literal["call.hangup"]
    call_id: Id
    reason: HangupReason = "hung_up"


class CallInvite(_ClientFrame):
    """Ring more users into a call this device has joined."""

    type: Literal["call.invite"]
    call_id: Id
    to: UserIds


#: an Ed25519 signature (RFC 8032) as unpadded base64url: 64 bytes, 86 characters, the last
#: one carrying 2 bits and 4 zero bits (``facecall.e2ee.identity``)
Signature = Annotated[
    str, StringConstraints(min_length=86, max_length=86, pattern=r"^[A-Za-z0-9_-]{85}[AQgw]$")
]


class CallSdp(_ClientFrame):
    """Send an SDP offer/answer to another joined device of the call. ``signature``: this
    device's identity-key signature over the description (docs/security.md, "Device identity
    keys"); the server relays it untouched and does not check it — the receiving device does."""

    type: Literal["call.sdp"]
    call_id: Id
    to_device: Id
    description: SessionDescription
    ice_restart: bool = False
    signature: Signature | None = None


class CallCandidate(_ClientFrame):
    """Send an ICE candidate (``null``: end of candidates) to another joined device."""

    type: Literal["call.candidate"]
    call_id: Id
    to_device: Id
    candidate: IceCandidate | None


class CallMedia(_ClientFrame):
    """Tell another joined device what this device sends now: its microphone (``audio``) and
    its camera (``video``), so that the other side shows "muted" or "camera off" instead of
    silence or a frozen last picture (a sender that stops sending leaves the receiver's track
    live and unmuted: RTP just stops); ``screen``: the video is this device's screen, not its
    camera (shown whole and unmirrored, with a note that it is a shared screen)."""

    type: Literal["call.media"]
    call_id: Id
    to_device: Id
    audio: bool
    video: bool
    screen: bool = False


class CallRejoin(_ClientFrame):
    """Ask another joined device to set up the media with this device anew: this device is
    still in the call, but its client lost its peer connection (a reloaded page, a restarted
    app). The other device closes its peer connection with this one and offers again, as to a
    device that has just joined (docs/protocol.md, "Rejoining the media")."""

    type: Literal["call.rejoin"]
    call_id: Id
    to_device: Id


class CallKey(_ClientFrame):
    """Send a sealed SFrame sender key of this device to another joined device of the call
    (docs/sframe.md, "Key distribution (the core)"): ``key`` in the wire form of
    :mod:`facecall.e2ee.media_keys`, relayed as it is. The server holds no keys and checks no
    signature; it refuses (``invalid_field``) a key of the wrong shape or size, one for another
    call than ``call_id``, one not sealed to ``to_device``, and one whose ``sender_user`` /
    ``sender_device`` is not the sending device."""

    # shape, call and recipient are checked here; the sender where the sending device is known
    # (CallMachine, like every other check of who may relay what)
    type: Literal["call.key"]
    call_id: Id
    to_device: Id
    key: SealedSenderKey

    @field_validator("key")
    @classmethod
    def _for_this_call_and_device(cls, key: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        """``key`` (its shape checked already) is for ``call_id`` and sealed to ``to_device``."""
        call_id, to_device = info.data.get("call_id"), info.data.get("to_device")
        if call_id is not None and key["call_id"] != call_id:
            raise ValueError(f"key.call_id {key['call_id']!r} is not this message's call_id "
                             f"{call_id!r}")
        if to_device is not None and all(r["device"] != to_device for r in key["recipients"]):
            raise ValueError(f"to_device {to_device!r} is not among key.recipients: the key is "
                             "not sealed to it")
        return key


class CallHandoff(_ClientFrame):
    """Move the call to this device: the call is answered, and its user is in it on another
    of their devices. That device leaves it (``call.ended`` ``handed_off``), this one joins in
    its place; the others hear ``call.handed_off`` and offer to this device, as to one that has
    just answered (docs/protocol.md, "Moving a call to another device"). The ``ok`` carries the
    other joined devices (``participants``), ``media``, the user's ``role``, ``in_call_for``
    (seconds since the user joined the call) and ``group_media``: true when the call's media
    goes through the SFU (its room has devices), where this device then joins it with
    ``sfu.join`` (nobody offers it P2P media then). Sent by the device that already holds the
    call, it changes nothing and answers the same."""

    type: Literal["call.handoff"]
    call_id: Id


class SfuJoin(_ClientFrame):
    """Join the call's group media: ``sdp`` is an offer in the SFU's slot shape (docs/sfu.md:
    BUNDLE, rtcp-mux, every candidate in it; at most one sending Opus and one sending VP8
    m-line, and ``recvonly`` receive slots). Only a joined device of the call may. Answered
    ``ok {sdp, slots}``: the SFU's answer and the device's slots (``sfu.slots`` says who fills
    them from then on). A device already joined is replaced: its old media stops."""

    type: Literal["sfu.join"]
    call_id: Id
    sdp: Annotated[str, StringConstraints(min_length=1, max_length=MAX_SDP_CHARS)]


class SfuLeave(_ClientFrame):
    """Leave the call's group media (the call itself goes on). Answered ``ok``."""

    type: Literal["sfu.leave"]
    call_id: Id


#: Any client → server message, discriminated by ``type``.
ClientMessage = Annotated[
    Hello
    | Ack
    | Ping
    | Bye
    | CallStart
    | CallAnswer
    | CallDecline
    | CallCancel
    | CallHangup
    | CallInvite
    | CallSdp
    | CallCandidate
    | CallMedia
    | CallRejoin
    | CallKey
    | CallHandoff
    | SfuJoin
    | SfuLeave,
    Field(discriminator="type"),
]

#: Client message classes by their ``type``.
CLIENT_MESSAGE_TYPES: dict[str, type[_ClientFrame]] = {
    cls.model_fields["type"].annotation.__args__[0]: cls  # type: ignore[union-attr]
    for cls in (
        Hello,
        Ack,
        Ping,
        Bye,
        CallStart,
        CallAnswer,
        CallDecline,
        CallCancel,
        CallHangup,
        CallInvite,
        CallSdp,
        CallCandidate,
        CallMedia,
        CallRejoin,
        CallKey,
        CallHandoff,
        SfuJoin,
        SfuLeave,
    )
}


_SERVER_ADAPTER: TypeAdapter[Any] = TypeAdapter(ServerMessage)
#: every client message in one validator: a valid frame is parsed once, straight from its text
_CLIENT_ADAPTER: TypeAdapter[Any] = TypeAdapter(ClientMessage)


# ======================================================================================
# parsing and building
# ======================================================================================


def _describe(exc: ValidationError) -> str:
    """A short human description of the first few validation errors."""
    parts = []
    for err in exc.errors()[:3]:
        loc = ".".join(str(p) for p in err["loc"]) or "message"
        parts.append(f"{loc}: {err['msg']}")
    return "; ".join(parts)


def _read_id(obj: dict[str, Any]) -> str | None:
    """The message id if it is a valid id, else ``None`` (so errors can still answer it)."""
    raw = obj.get("id")
    if isinstance(raw, str) and 1 <= len(raw) <= 64 and all("!" <= c <= "~" for c in raw):
        return raw
    return None


def _not_json(constant: str) -> Any:
    """``NaN``, ``Infinity`` and ``-Infinity``, which Python's json reads, are not JSON
    (RFC 8259 §6)."""
    raise ValueError(f"{constant} is not a JSON value")


def parse_client_message(raw: str | bytes, max_bytes: int = MAX_FRAME_BYTES) -> ClientMessage:
    """Parse and validate one client frame.

    Checks, in order: size (``too_large``), JSON object (``malformed_json``), version
    (``unsupported_version``; a missing ``v`` is ``invalid_field``), id (``invalid_field``),
    type (``unknown_type``), fields (``invalid_field``). The raised :class:`ProtocolError`
    carries ``re`` = the message id whenever the id itself was valid.

    :param raw: the WebSocket frame (text, or binary holding UTF-8).
    :param max_bytes: the size limit of a frame, in UTF-8 bytes.
    """
    size = len(raw) if isinstance(raw, bytes) else len(raw.encode("utf-8", "surrogatepass"))
    if size > max_bytes:
        raise ProtocolError(ErrorCode.TOO_LARGE, f"frame of {size} bytes exceeds {max_bytes}")
    try:  # the common case: one pass of pydantic-core over the text, no dict in between
        return _CLIENT_ADAPTER.validate_json(raw)  # type: ignore[no-any-return]
    except ValidationError:
        pass
    # Not valid: parse step by step to say precisely what is wrong (the error codes above).
    try:
        text = raw.decode("utf-8") if isinstance(raw, bytes) else raw  # not json's UTF-16/32 guess
    except UnicodeDecodeError as exc:
        raise ProtocolError(ErrorCode.MALFORMED_JSON, f"not UTF-8: {exc}") from None
    try:
        obj = json.loads(text, parse_constant=_not_json)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError and _not_json's
        raise ProtocolError(ErrorCode.MALFORMED_JSON, f"not valid JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise ProtocolError(ErrorCode.MALFORMED_JSON, "a message must be a JSON object")
    re = _read_id(obj)
    if "v" not in obj:
        raise ProtocolError(ErrorCode.INVALID_FIELD, "v: field required", re=re)
    version = obj["v"]
    if type(version) is not int or version != PROTOCOL_VERSION:
        raise ProtocolError(
            ErrorCode.UNSUPPORTED_VERSION,
            f"protocol version {version!r} is not supported (use {PROTOCOL_VERSION})",
            re=re,
        )
    if re is None:
        raise ProtocolError(ErrorCode.INVALID_FIELD, "id: must be 1..64 printable ASCII characters")
    kind = obj.get("type")
    cls = CLIENT_MESSAGE_TYPES.get(kind) if isinstance(kind, str) else None
    if cls is None:
        shown = kind[:64] if isinstance(kind, str) else kind
        raise ProtocolError(ErrorCode.UNKNOWN_TYPE, f"unknown message type {shown!r}", re=re)
    try:
        return cls.model_validate_json(raw)  # type: ignore[return-value]
    except ValidationError as exc:
        raise ProtocolError(ErrorCode.INVALID_FIELD, _describe(exc), re=re) from None


def parse_server_message(raw: str | bytes | dict[str, Any]) -> ServerMessage:
    """Parse and validate a server frame (used by clients and tests).

    :raises pydantic.ValidationError: if the frame is not a valid server message.
    """
    if isinstance(raw, dict):  # strict mode wants JSON input for enums and literals
        raw = json.dumps(raw)
    return _SERVER_ADAPTER.validate_json(raw)  # type: ignore[no-any-return]


def ok_reply(re: str, **result: Any) -> dict[str, Any]:
    """The ``ok`` reply to message ``re`` with JSON-safe ``result`` fields."""
    return {"v": PROTOCOL_VERSION, "type": "ok", "re": re, **result}


def error_reply(error: ProtocolError) -> dict[str, Any]:
    """The ``error`` reply for ``error``."""
    return dict(error.to_wire())
