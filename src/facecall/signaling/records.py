"""The state records of a call: its participants (users) and legs (devices).

These are what the store persists (``calls``, ``call_participants``) and what history shows.
Records are immutable; the machine replaces them as they change. All timestamps are the
``now`` values the driver passed in (seconds; use wall-clock time so they survive a restart).
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


@dataclass(frozen=True, slots=True)
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
            "state": self.state.value,
            "rung_at": self.rung_at,
            "joined_at": self.joined_at,
            "ended_at": self.ended_at,
            "reason": None if self.reason is None else self.reason.value,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Leg:
        """Inverse of :meth:`to_dict`."""
        reason = data["reason"]
        return cls(
            user_id=data["user_id"],
            device_id=data["device_id"],
            state=LegState(data["state"]),
            rung_at=data["rung_at"],
            joined_at=data["joined_at"],
            ended_at=data["ended_at"],
            reason=None if reason is None else EndReason(reason),
        )


@dataclass(frozen=True, slots=True)
class Participant:
    """One user's part in a call.

    ``device_id`` is the device that answered (the caller's device for the caller);
    ``ring_deadline`` is when the user's ring times out while ``state`` is ``ringing``;
    ``invited_by`` is the user whose ``call.start``/``call.invite`` rang this user.
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

    @property
    def missed(self) -> bool:
        """The user was rung and never answered before the ring timed out."""
        return self.reason is EndReason.RING_TIMEOUT

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form (enums as their string values)."""
        return {
            "user_id": self.user_id,
            "role": self.role.value,
            "state": self.state.value,
            "invited_at": self.invited_at,
            "invited_by": self.invited_by,
            "ring_deadline": self.ring_deadline,
            "call_waiting": self.call_waiting,
            "device_id": self.device_id,
            "joined_at": self.joined_at,
            "ended_at": self.ended_at,
            "reason": None if self.reason is None else self.reason.value,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Participant:
        """Inverse of :meth:`to_dict`."""
        reason = data["reason"]
        return cls(
            user_id=data["user_id"],
            role=Role(data["role"]),
            state=ParticipantState(data["state"]),
            invited_at=data["invited_at"],
            invited_by=data["invited_by"],
            ring_deadline=data["ring_deadline"],
            call_waiting=data["call_waiting"],
            device_id=data["device_id"],
            joined_at=data["joined_at"],
            ended_at=data["ended_at"],
            reason=None if reason is None else EndReason(reason),
        )
