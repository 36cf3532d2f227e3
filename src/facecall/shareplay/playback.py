"""Shared playback: both people in a call watch the same video at the same position, and either
can play, pause, seek or change the speed for both (docs/shareplay.md).

The state travels over the call's own data channel (an ``RTCDataChannel`` on the DTLS
connection between the two devices: W3C webrtc §6, RFC 8831), so no server, ours included,
learns what is watched — not even its address. This module is the pure core: it takes
messages and the time, and hands back messages to send; the SDK and the web client
(``web/js/shareplay.js``) move the bytes and play the video.

**State.** One activity at a time: the video's ``url`` and ``title``, whether it is
``playing``, its ``rate``, and the ``position`` (seconds) it had at the instant ``at`` (ms,
on the clock of the device that set it). Its position at any later instant follows from those.
Every change sends the whole state, so a device that joins late (a reloaded page, a handoff,
an ICE restart's new channel) catches up from the next message; each side sends its state when
the channel opens.

**Order.** Each state carries a version ``(n, by)``: a Lamport counter (one more than the
highest seen) and the device that set it. A device keeps the state with the higher version, so
two changes that cross settle on the same one at both ends.

**Clocks.** ``at`` is read on the other device's clock through :class:`~.clock.ClockSync`
(``clock.ping`` / ``clock.pong``, RFC 5905 §8).

**Messages** (JSON objects with ``"v": 1``, at most :data:`MAX_MESSAGE_BYTES`):

* ``{"type": "state", "n", "by", "activity": null | {"id", "url", "title", "playing",
  "position", "rate", "at"}}``
* ``{"type": "clock.ping", "t0"}`` → ``{"type": "clock.pong", "t0", "t1", "t2"}``
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass, replace
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    TypeAdapter,
    ValidationError,
)

from facecall.shareplay.clock import ClockSync

#: largest message accepted, in bytes (a state with the longest URL and title fits)
MAX_MESSAGE_BYTES = 8 * 1024
MAX_URL_CHARS = 2048
MAX_TITLE_CHARS = 200
MIN_RATE, MAX_RATE = 0.25, 4.0
#: positions and times are finite and below these (seconds: 115 days; ms: year 5138)
MAX_POSITION = 10_000_000.0
MAX_TIME_MS = 1e14


class ShareplayError(ValueError):
    """A message that is malformed, too large or not version 1, or a local change that makes
    no sense (a rate out of range, pausing with nothing shared)."""


_Strict = ConfigDict(extra="forbid", strict=True, frozen=True)


def _exactly_one(value: Any) -> Any:
    """Refuse ``true`` and ``1.0`` where the version ``1`` is meant (a literal compares by ==)."""
    if type(value) is not int:
        raise ValueError("must be the integer 1")
    return value


Version = Annotated[Literal[1], BeforeValidator(_exactly_one)]
Time = Annotated[float, Field(ge=0, le=MAX_TIME_MS, allow_inf_nan=False)]
Url = Annotated[str, StringConstraints(min_length=1, max_length=MAX_URL_CHARS,
                                       pattern=r"^https?://[^\s]+$")]


class _ActivityIn(BaseModel):
    model_config = _Strict
    id: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    url: Url
    title: Annotated[str, StringConstraints(max_length=MAX_TITLE_CHARS)]
    playing: bool
    position: Annotated[float, Field(ge=0, le=MAX_POSITION, allow_inf_nan=False)]
    rate: Annotated[float, Field(ge=MIN_RATE, le=MAX_RATE, allow_inf_nan=False)]
    at: Time


class _StateIn(BaseModel):
    model_config = _Strict
    v: Version
    type: Literal["state"]
    n: Annotated[int, Field(ge=0, le=2**53)]
    by: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    activity: _ActivityIn | None


class _PingIn(BaseModel):
    model_config = _Strict
    v: Version
    type: Literal["clock.ping"]
    t0: Time


class _PongIn(BaseModel):
    model_config = _Strict
    v: Version
    type: Literal["clock.pong"]
    t0: Time
    t1: Time
    t2: Time


_MESSAGE: TypeAdapter[Any] = TypeAdapter(
    Annotated[_StateIn | _PingIn | _PongIn, Field(discriminator="type")])


@dataclass(frozen=True, slots=True)
class Activity:
    """What is shared: ``position`` seconds at ``at`` ms — on this device's clock when
    ``local``, else on the other device's."""

    id: str
    url: str
    title: str
    playing: bool
    position: float
    rate: float
    at: float
    local: bool


def parse_message(raw: str | bytes) -> _StateIn | _PingIn | _PongIn:
    """A validated message; :class:`ShareplayError` says what is wrong with one that is not."""
    if len(raw) > MAX_MESSAGE_BYTES or (
            isinstance(raw, str) and len(raw.encode("utf-8", "replace")) > MAX_MESSAGE_BYTES):
        raise ShareplayError(f"a message is at most {MAX_MESSAGE_BYTES} bytes")
    try:
        return _MESSAGE.validate_json(raw)
    except ValidationError as exc:
        raise ShareplayError(_describe(exc)) from None


def _describe(exc: ValidationError) -> str:
    first = exc.errors()[0]
    where = ".".join(str(part) for part in first["loc"]) or "message"
    return f"{where}: {first['msg']}"


class SharedPlayback:
    """One call's shared playback, as this device (``device_id``) sees it."""

    def __init__(self, device_id: str) -> None:
        self.device_id = device_id
        self.clock = ClockSync()
        self.activity: Activity | None = None
        self.version: tuple[int, str] = (0, "")

    # ------------------------------------------------------------------ reading

    def position(self, now: float) -> float | None:
        """Seconds into the shared video at ``now`` (ms, this device's clock); None if nothing
        is shared."""
        activity = self.activity
        if activity is None:
            return None
        if not activity.playing:
            return activity.position
        at = activity.at if activity.local else self.clock.to_local(activity.at)
        return max(0.0, activity.position + activity.rate * (now - at) / 1000)

    # ------------------------------------------------------------------ local changes

    def start(self, url: str, title: str, now: float, *, position: float = 0.0,
              playing: bool = True) -> dict[str, Any]:
        """Share a video (replacing what was shared); returns the message to send."""
        try:
            activity = _ActivityIn(id=secrets.token_urlsafe(9), url=url, title=title,
                                   playing=playing, position=position, rate=1.0, at=now)
        except ValidationError as exc:
            raise ShareplayError(_describe(exc)) from None
        return self._set(Activity(**activity.model_dump(), local=True))

    def play(self, now: float) -> dict[str, Any]:
        return self._change(now, playing=True)

    def pause(self, now: float) -> dict[str, Any]:
        return self._change(now, playing=False)

    def seek(self, position: float, now: float) -> dict[str, Any]:
        if not 0 <= position <= MAX_POSITION:
            raise ShareplayError(f"a position is 0 to {MAX_POSITION:.0f} seconds")
        return self._change(now, position=position)

    def set_rate(self, rate: float, now: float) -> dict[str, Any]:
        if not MIN_RATE <= rate <= MAX_RATE:
            raise ShareplayError(f"a rate is {MIN_RATE} to {MAX_RATE}")
        return self._change(now, rate=rate)

    def end(self) -> dict[str, Any]:
        """Stop sharing, for both."""
        return self._set(None)

    def state_message(self, now: float) -> dict[str, Any] | None:
        """The current state, re-anchored on this clock, to send when the channel opens; None
        while nothing was ever shared (version 0 is no state: the other side would refuse it)."""
        if self.version[0] == 0:
            return None
        activity = self.activity
        if activity is not None and not activity.local:
            activity = replace(activity, position=self.position(now) or 0.0, at=now, local=True)
        return _state(self.version, activity)

    def new_peer(self, now: float) -> None:
        """The other end is a new connection — a reloaded page, another device after a handoff
        — whose clock may be another: what it set is re-anchored on this clock while the old
        offset still holds, and its clock is measured anew."""
        activity = self.activity
        if activity is not None and not activity.local:
            self.activity = replace(activity, position=self.position(now) or 0.0, at=now, local=True)
        self.clock = ClockSync()

    def ping(self, now: float) -> dict[str, Any]:
        return {"v": 1, "type": "clock.ping", "t0": now}

    # ------------------------------------------------------------------ the other side

    def receive(self, raw: str | bytes, now: float) -> tuple[dict[str, Any] | None, bool]:
        """Take a message from the other device: returns a reply to send (a pong) or None, and
        whether the shared state changed. :class:`ShareplayError` for a bad message (nothing
        changes)."""
        message = parse_message(raw)
        if isinstance(message, _PingIn):
            return {"v": 1, "type": "clock.pong", "t0": message.t0, "t1": now, "t2": now}, False
        if isinstance(message, _PongIn):
            self.clock.sample(message.t0, message.t1, message.t2, now)
            return None, False
        version = (message.n, message.by)
        if version <= self.version:
            return None, False  # older than what this device has, or the same again
        self.version = version
        incoming = message.activity
        self.activity = None if incoming is None else Activity(**incoming.model_dump(), local=False)
        return None, True

    # ------------------------------------------------------------------ internals

    def _change(self, now: float, **changes: Any) -> dict[str, Any]:
        if self.activity is None:
            raise ShareplayError("nothing is shared")
        position = changes.pop("position", self.position(now) or 0.0)
        return self._set(replace(self.activity, position=position, at=now, local=True, **changes))

    def _set(self, activity: Activity | None) -> dict[str, Any]:
        """Make ``activity`` the state, with the next version; the message to send. A state
        whose message would be too large for the other side is refused, nothing changed."""
        version = (self.version[0] + 1, self.device_id)
        message = _state(version, activity)
        if len(encode(message).encode()) > MAX_MESSAGE_BYTES:
            raise ShareplayError(f"the url and title take more than {MAX_MESSAGE_BYTES} bytes")
        self.version, self.activity = version, activity
        return message


def _state(version: tuple[int, str], activity: Activity | None) -> dict[str, Any]:
    fields = None if activity is None else {
        "id": activity.id, "url": activity.url, "title": activity.title,
        "playing": activity.playing, "position": activity.position, "rate": activity.rate,
        "at": activity.at,
    }
    return {"v": 1, "type": "state", "n": version[0], "by": version[1], "activity": fields}


def encode(message: dict[str, Any]) -> str:
    """A message as sent on the data channel (UTF-8 text: non-ASCII as it is, not escaped)."""
    return json.dumps(message, separators=(",", ":"), ensure_ascii=False)
