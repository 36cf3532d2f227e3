"""The shared pieces of the signaling wire protocol (version 1): limits, close codes, the
field types every message uses, the base of every frame, and the SDP and ICE candidate models
that travel both ways. The client messages and parser are in :mod:`.protocol`, the server's
replies and events in :mod:`.server_messages`."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, StringConstraints

#: The protocol version this module speaks (the ``v`` of every frame).
PROTOCOL_VERSION = 1
#: Default limit for one client frame, in bytes (UTF-8). The driver may pass a different one.
MAX_FRAME_BYTES = 64 * 1024
#: Most users one ``call.start`` or ``call.invite`` may name.
MAX_CALLEES = 32
#: Largest SDP accepted in ``call.sdp`` (characters; SDP is ASCII).
MAX_SDP_CHARS = 32 * 1024
#: Largest ICE candidate line accepted in ``call.candidate``.
MAX_CANDIDATE_CHARS = 1024
#: Most calls one ``hello`` may say its device still holds.
MAX_HELD_CALLS = 16
#: WebSocket close codes of docs/protocol.md that a client acts on
CLOSE_REMOVED = 4009  # the device was removed or signed out
CLOSE_REPLACED = 4409  # replaced by a newer connection of the same device: do not reconnect

#: An identifier: 1..64 printable ASCII characters without spaces (client message ids,
#: user ids, device ids and call ids all share this shape).
Id = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[!-~]+$")]
Media = Literal["audio", "video"]
NonNegInt = Annotated[int, Field(ge=0, le=2**63 - 1)]


def _unique(ids: list[str]) -> list[str]:
    if len(set(ids)) != len(ids):
        raise ValueError("ids must be unique")
    return ids


#: The users a call rings: 1..32 distinct user ids.
UserIds = Annotated[list[Id], Field(min_length=1, max_length=MAX_CALLEES), AfterValidator(_unique)]
#: The calls a ``hello`` says its device holds: up to 16 distinct call ids.
HeldCallIds = Annotated[list[Id], Field(max_length=MAX_HELD_CALLS), AfterValidator(_unique)]


def _exact_int(value: Any) -> Any:
    """Refuse ``1.0`` and ``true`` where the version ``1`` is meant (a literal compares by ==)."""
    if type(value) is not int:
        raise ValueError("must be the integer 1")
    return value


class Frame(BaseModel):
    """Common configuration: strict types, no unknown fields, immutable."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    v: Annotated[Literal[1], BeforeValidator(_exact_int)]


class SessionDescription(BaseModel):
    """An SDP offer or answer (W3C ``RTCSessionDescriptionInit``)."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    type: Literal["offer", "answer"]
    sdp: Annotated[str, StringConstraints(min_length=1, max_length=MAX_SDP_CHARS)]


class IceCandidate(BaseModel):
    """A trickled ICE candidate (W3C ``RTCIceCandidateInit``)."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    candidate: Annotated[str, StringConstraints(max_length=MAX_CANDIDATE_CHARS)]
    sdpMid: Annotated[str, StringConstraints(max_length=64)] | None = None
    sdpMLineIndex: Annotated[int, Field(ge=0, le=1023)] | None = None
