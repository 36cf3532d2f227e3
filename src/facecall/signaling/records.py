"""The state records of a call: its participants (users) and legs (devices).

These are what the store persists (``calls``, ``call_participants``) and what history shows.
Records are values: the machine replaces a record when it changes and never mutates one in
place, so a record read from :attr:`CallMachine.legs` stays as it was (do not mutate them
either; they are plain slotted dataclasses, not frozen ones, because frozen dataclasses cost
a third more time per call). All timestamps are the ``now`` values the driver passed in
(seconds; use wall-clock time so they survive a restart).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from .reasons import EndReason


class CallState(StrEnum):
    """Where a call is in its life."""

    RINGING = "ringing"  # placed; no callee has answered yet
    ACTIVE = "active"  # at least one callee answered
    ENDED = "ended"  # terminal: accepts nothing


class Role(StrEnum):
    """How a user came into the call."""

    CALLER = "caller"
    CALLEE = "callee"  # rung by call.start or call.invite


class LegState(StrEnum):
    """The state of one device's leg of a call."""

    RINGING = "ringing"
    JOINED = "joined"
    ENDED = "ended"  # terminal; ``reason`` says why


class ParticipantState(StrEnum):
    """The state of one user in a call."""

    RINGING = "ringing"  # some of the user's devices ring
    JOINED = "joined"  # one device of the user is in the call (``device_id``)
    ENDED = "ended"  # terminal; ``reason`` says why (``ring_timeout`` = a missed call)


# Fast value → member lookups for restoring snapshots (``EndReason(value)`` is slow).
REASONS: dict[str, EndReason] = {m._value_: m for m in EndReason}
CALL_STATES: dict[str, CallState] = {m._value_: m for m in CallState}
_ROLES: dict[str, Role] = {m._value_: m for m in Role}
_LEG_STATES: dict[str, LegState] = {m._value_: m for m in LegState}
_PARTICIPANT_STATES: dict[str, ParticipantState] = {m._value_: m for m in ParticipantState}


@dataclass(slots=True)
class Leg:
    """One device's part in a call: rung (or, for the caller, joined at once), then ended.

    A device that is rung again later (re-invited) gets a new leg; the old one stays in the
    list as history.
    """

    user_id: str
    device_id: str
    state: LegState
    rung_at: float | None  # None for the caller's own device
    joined_at: float | None = None
    ended_at: float | None = None
    reason: EndReason | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form (enums as their string values)."""
        return {
            "user_id": self.user_id,
            "device_id": self.device_id,
            "state": self.state._value_,
            "rung_at": self.rung_at,
            "joined_at": self.joined_at,
            "ended_at": self.ended_at,
            "reason": None if self.reason is None else self.reason._value_,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Leg:
        """Inverse of :meth:`to_dict`."""
        reason = data["reason"]
        return cls(
            user_id=data["user_id"],
            device_id=data["device_id"],
            state=_LEG_STATES[data["state"]],
            rung_at=data["rung_at"],
            joined_at=data["joined_at"],
            ended_at=data["ended_at"],
            reason=None if reason is None else REASONS[reason],
        )


@dataclass(slots=True)
class Participant:
    """One user's part in a call.

    ``device_id`` is the device that answered (the caller's device for the caller);
    ``ring_deadline`` is when the user's ring times out while ``state`` is ``ringing``;
    ``invited_by`` is the user whose ``call.start``/``call.invite`` rang this user;
    ``devices`` are the user's devices known when the user came into the call (the rung ones,
    the caller's registered ones) and any the call moved to: where ``call.elsewhere`` goes.
    A re-invited user's record is replaced (its legs keep the history).
    """

    user_id: str
    role: Role
    state: ParticipantState
    invited_at: float
    invited_by: str | None = None
    ring_deadline: float | None = None
    call_waiting: bool = False
    device_id: str | None = None
    joined_at: float | None = None
    ended_at: float | None = None
    reason: EndReason | None = None
    devices: tuple[str, ...] = ()

    @property
    def missed(self) -> bool:
        """The user was rung and never answered before the ring timed out."""
        return self.reason is EndReason.RING_TIMEOUT

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form (enums as their string values)."""
        return {
            "user_id": self.user_id,
            "role": self.role._value_,
            "state": self.state._value_,
            "invited_at": self.invited_at,
            "invited_by": self.invited_by,
            "ring_deadline": self.ring_deadline,
            "call_waiting": self.call_waiting,
            "device_id": self.device_id,
            "joined_at": self.joined_at,
            "ended_at": self.ended_at,
            "reason": None if self.reason is None else self.reason._value_,
            "devices": list(self.devices),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Participant:
        """Inverse of :meth:`to_dict`."""
        reason = data["reason"]
        return cls(
            user_id=data["user_id"],
            role=_ROLES[data["role"]],
            state=_PARTICIPANT_STATES[data["state"]],
            invited_at=data["invited_at"],
            invited_by=data["invited_by"],
            ring_deadline=data["ring_deadline"],
            call_waiting=data["call_waiting"],
            device_id=data["device_id"],
            joined_at=data["joined_at"],
            ended_at=data["ended_at"],
            reason=None if reason is None else REASONS[reason],
            devices=tuple(data.get("devices", ())),  # absent in snapshots of before handoff
        )
