"""The state of one call and what each device sees of it: the base of
:class:`~facecall.signaling.machine.CallMachine`, which adds the transitions.

Everything here reads the state and changes nothing: who is in the call, when its next ring
deadline is, the views a device gets of it (a ``welcome.calls`` or ``welcome.elsewhere``
entry, a ``call.ring`` again, the reply to a resent answer or handoff), and the snapshot the
store keeps (:meth:`CallView.to_dict` / :meth:`CallView.from_dict`). docs/protocol.md,
"Calls", has the message flows.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from typing import Any, Self

from .effects import Effect, effect_from_dict, effect_to_dict
from .protocol import PROTOCOL_VERSION
from .reasons import EndReason
from .records import (
    CALL_STATES,
    REASONS,
    CallState,
    Leg,
    LegState,
    Participant,
    ParticipantState,
    Role,
)

#: Version of the :meth:`CallView.to_dict` format.
SNAPSHOT_VERSION = 1


class CallView:
    """The state of one call, read-only. Build a :class:`~.machine.CallMachine` with its
    ``start`` or :meth:`from_dict`.

    Read-only attributes: ``call_id``, ``media``, ``caller_user``, ``caller_device``,
    ``ring_timeout``, ``state``, ``created_at``, ``answered_at``, ``ended_at``, ``end_reason``;
    :attr:`participants` and :attr:`legs` for the store.
    """

    def __init__(
        self,
        *,
        call_id: str,
        media: str,
        caller_user: str,
        caller_device: str,
        ring_timeout: float,
        created_at: float,
    ) -> None:
        """Low-level constructor for an empty call; use :meth:`start`."""
        self.call_id = call_id
        self.media = media
        self.caller_user = caller_user
        self.caller_device = caller_device
        self.ring_timeout = ring_timeout
        self.state = CallState.RINGING
        self.created_at = created_at
        self.answered_at: float | None = None
        self.ended_at: float | None = None
        self.end_reason: EndReason | None = None
        self._participants: dict[str, Participant] = {}
        self._legs: list[Leg] = []
        self._effects: deque[Effect] = deque()

    @property
    def participants(self) -> tuple[Participant, ...]:
        """Every user of the call, the caller first, then in the order they were rung."""
        return tuple(self._participants.values())

    @property
    def legs(self) -> tuple[Leg, ...]:
        """Every device leg, in the order they were created (re-rung devices appear again)."""
        return tuple(self._legs)

    @property
    def ended(self) -> bool:
        """The call is over and accepts nothing."""
        return self.state is CallState.ENDED

    def participant(self, user_id: str) -> Participant | None:
        """The user's record, if the user was ever rung into (or placed) this call."""
        return self._participants.get(user_id)

    def active_leg(self, user_id: str, device_id: str) -> Leg | None:
        """The device's ringing or joined leg, if any."""
        for leg in reversed(self._legs):
            if leg.user_id == user_id and leg.device_id == device_id:
                return None if leg.state is LegState.ENDED else leg
        return None

    def joined_legs(self) -> list[Leg]:
        """The legs of the devices currently in the call."""
        return [leg for leg in self._legs if leg.state is LegState.JOINED]

    def ringing_legs(self) -> list[Leg]:
        """The legs of the devices currently ringing."""
        return [leg for leg in self._legs if leg.state is LegState.RINGING]

    def active_users(self) -> set[str]:
        """Users ringing or joined (the driver's notion of "busy" is "joined somewhere")."""
        return {p.user_id for p in self._participants.values() if p.state is not ParticipantState.ENDED}

    def get_timer(self) -> float | None:
        """When :meth:`handle_timer` must next be called (the earliest ring deadline), or
        ``None`` when nothing is pending. It may be in the past: call it at once then."""
        if self.ended:
            return None
        deadlines = [
            p.ring_deadline
            for p in self._participants.values()
            if p.state is ParticipantState.RINGING and p.ring_deadline is not None
        ]
        return min(deadlines, default=None)

    def answered_by(self, user_id: str, device_id: str) -> dict[str, Any] | None:
        """The result of :class:`Answer` again if this device is the one that answered the
        call (a resend whose reply was lost, say with a node restart): nothing is to change."""
        leg = self.active_leg(user_id, device_id)
        participant = self._participants.get(user_id)
        if self.ended or leg is None or leg.state is not LegState.JOINED or participant is None \
                or participant.role is not Role.CALLEE or participant.device_id != device_id:
            return None
        return {"participants": [{"user_id": other.user_id, "device_id": other.device_id}
                                 for other in self.joined_legs() if other is not leg]}

    def handed_to(self, user_id: str, device_id: str, now: float) -> dict[str, Any] | None:
        """The result of :class:`Handoff` if the user's part of this answered call is on this
        device already (a resend whose reply was lost; or the device that holds the call):
        nothing is to change. None otherwise. ``in_call_for``: seconds since the user joined
        the call at ``now`` (the device that took it shows the same duration)."""
        leg = self.active_leg(user_id, device_id)
        participant = self._participants.get(user_id)
        if self.state is not CallState.ACTIVE or leg is None or leg.state is not LegState.JOINED \
                or participant is None or participant.device_id != device_id:
            return None
        joined = participant.joined_at if participant.joined_at is not None else now
        return {"media": self.media, "role": participant.role._value_,
                "in_call_for": round(max(0.0, now - joined), 3),
                "participants": [{"user_id": other.user_id, "device_id": other.device_id}
                                 for other in self.joined_legs() if other is not leg]}

    def _ring_message(self, by_user: str, by_device: str | None, waiting: bool) -> dict[str, Any]:
        roster = [
            user for user, p in self._participants.items() if p.state is not ParticipantState.ENDED
        ]
        return self._message("call.ring", from_user=by_user, from_device=by_device,
                             media=self.media, participants=roster, call_waiting=waiting)

    def ring_message(self, user_id: str, device_id: str) -> dict[str, Any] | None:
        """The ``call.ring`` for a device of this call that is ringing now, or None: for a
        device that connects after its first ring was lost with a node's memory (a restart)."""
        leg = self.active_leg(user_id, device_id)
        if leg is None or leg.state is not LegState.RINGING:
            return None
        participant = self._participants[user_id]
        by_user = participant.invited_by or self.caller_user
        inviter = self._participants.get(by_user)
        by_device = inviter.device_id if inviter is not None else self.caller_device
        return self._ring_message(by_user, by_device, participant.call_waiting)

    def held_by(self, user_id: str, device_id: str) -> dict[str, Any] | None:
        """The call as a device that still holds it sees it now (a ``welcome.calls`` entry:
        ringing or joined, and the other joined devices), or None if the device is not in it."""
        leg = self.active_leg(user_id, device_id)
        if leg is None:
            return None
        others = [{"user_id": other.user_id, "device_id": other.device_id}
                  for other in self.joined_legs() if other.device_id != device_id]
        state = "joined" if leg.state is LegState.JOINED else "ringing"
        return {"call_id": self.call_id, "media": self.media, "state": state,
                "participants": others}

    def elsewhere_for(self, user_id: str, device_id: str) -> dict[str, Any] | None:
        """This call as a ``welcome.elsewhere`` entry for a device of ``user_id``, if the call
        is answered and the user is in it on another device (which this one may take over)."""
        participant = self._participants.get(user_id)
        if self.state is not CallState.ACTIVE or participant is None \
                or participant.state is not ParticipantState.JOINED or participant.device_id == device_id:
            return None
        return self.elsewhere_view(participant)

    def elsewhere_view(self, participant: Participant) -> dict[str, Any]:
        """What the user's other devices are told of the user's answered part of the call (a
        ``welcome.elsewhere`` entry; names are the driver's to fill in)."""
        return {"call_id": self.call_id, "device_id": participant.device_id, "media": self.media,
                "role": participant.role._value_,
                "participants": [{"user_id": p.user_id, "name": None}
                                 for p in self._participants.values()
                                 if p.state is ParticipantState.JOINED
                                 and p.user_id != participant.user_id]}

    def _message(self, kind: str, **fields: Any) -> dict[str, Any]:
        return {"v": PROTOCOL_VERSION, "type": kind, "call_id": self.call_id, **fields}

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe snapshot, pending effects included; :meth:`from_dict` restores it
        exactly (``type(m).from_dict(m.to_dict()).to_dict() == m.to_dict()``)."""
        return {
            "snapshot_version": SNAPSHOT_VERSION,
            "call_id": self.call_id,
            "media": self.media,
            "caller_user": self.caller_user,
            "caller_device": self.caller_device,
            "ring_timeout": self.ring_timeout,
            "state": self.state._value_,
            "created_at": self.created_at,
            "answered_at": self.answered_at,
            "ended_at": self.ended_at,
            "end_reason": None if self.end_reason is None else self.end_reason._value_,
            "participants": [p.to_dict() for p in self._participants.values()],
            "legs": [leg.to_dict() for leg in self._legs],
            "effects": [effect_to_dict(e) for e in self._effects],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Self:
        """Restore a call from :meth:`to_dict` output.

        :raises ValueError: on an unknown snapshot version.
        """
        if data.get("snapshot_version") != SNAPSHOT_VERSION:
            raise ValueError(f"unsupported snapshot version {data.get('snapshot_version')!r}")
        machine = cls(
            call_id=data["call_id"],
            media=data["media"],
            caller_user=data["caller_user"],
            caller_device=data["caller_device"],
            ring_timeout=data["ring_timeout"],
            created_at=data["created_at"],
        )
        machine.state = CALL_STATES[data["state"]]
        machine.answered_at = data["answered_at"]
        machine.ended_at = data["ended_at"]
        reason = data["end_reason"]
        machine.end_reason = None if reason is None else REASONS[reason]
        for p in data["participants"]:
            participant = Participant.from_dict(p)
            machine._participants[participant.user_id] = participant
        machine._legs = [Leg.from_dict(leg) for leg in data["legs"]]
        machine._effects = deque(effect_from_dict(e) for e in data["effects"])
        return machine

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.call_id} {self.state._value_} users={list(self._participants)}>"
