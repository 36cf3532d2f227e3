"""The plain records of a :class:`~facecall.client.call.Call`: its state and direction, the
events it reports, the milestones it times, and the sink shape it feeds."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

from aiortc import MediaStreamTrack


class CallState(StrEnum):
    """Where a call is, for this device."""

    RINGING = "ringing"  # incoming, not answered yet
    CALLING = "calling"  # outgoing, nobody answered yet
    CONNECTING = "connecting"  # answered; media is being negotiated
    CONNECTED = "connected"  # media flows
    RECONNECTING = "reconnecting"  # the path failed; an ICE restart is under way
    ENDED = "ended"


class Direction(StrEnum):
    INCOMING = "incoming"
    OUTGOING = "outgoing"


@dataclass(frozen=True, slots=True)
class CallEvent:
    """Something that happened to a call: ``type`` is ``state``, ``ringing``, ``answered``,
    ``declined``, ``participant_left``, ``ice_restart``, ``rejoined``, ``remote_media``,
    ``handed_off`` (the other user moved the call to another of their devices: ``user_id``,
    ``from_device``, ``to_device``), ``identity_failed`` (``reason``), ``shareplay``,
    ``group_slots`` (``slots``) or ``group_media`` (``state``); ``data`` holds the details."""

    type: str
    call_id: str
    data: dict[str, Any] = field(default_factory=dict)


class Sink(Protocol):
    """aiortc's sink shape (``MediaRecorder``, ``MediaBlackhole``, ``FrameCallbackSink``)."""

    def addTrack(self, track: MediaStreamTrack) -> None: ...
    async def start(self) -> None: ...
    async def stop(self) -> None: ...


@dataclass
class CallTimings:
    """``time.monotonic()`` instants of a call's milestones (``None`` until reached)."""

    created: float
    answered: float | None = None
    connected: float | None = None
    first_frame: float | None = None
    ended: float | None = None

    @property
    def connect_ms(self) -> float:
        """Answer → media connected (ICE + DTLS), in ms."""
        if self.answered is None or self.connected is None:
            return math.nan
        return 1000 * (self.connected - self.answered)
