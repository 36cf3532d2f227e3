"""The call state machine: one :class:`CallMachine` per call, pure (events and a clock in,
effects out).

Shaped like aioquic's ``QuicConnection``: it never touches a socket, a database or the clock.
The driver (``facecall.signaling`` service) does, in this order, for every request::

    result = machine.handle(event, now)      # raises ProtocolError and changes nothing, or
    store.save(machine.to_dict())            # persist state (and the pending effects) first,
    for effect in machine.drain_effects():   # then deliver
        ...
    schedule(machine.get_timer())            # and call machine.handle_timer(now) when due

Participants are (user, device) pairs: a :class:`~.records.Participant` per user and a
:class:`~.records.Leg` per rung or joined device. Group calls are the same machine with more
users. Behaviour (``docs/protocol.md`` has the message flows):

* every device of every callee rings (``call.ring``); joined devices hear ``call.ringing``;
* the first device of a user to answer wins (``call.answered`` to the joined devices); the
  user's other devices get ``call.stop_ringing(answered_elsewhere)``;
* a decline stops all of that user's devices (``declined_elsewhere`` for the others); joined
  devices hear ``call.declined``; a 1:1 call declined ends ``declined`` (``busy`` if busy);
* the caller cancelling (or hanging up) before anyone answered ends the call ``cancelled``;
* a user's other devices hear ``call.elsewhere`` when the user's part of the call becomes
  answered (``active``, on which device) and when it ends for the user (``ended``);
* a device of a user who is joined on another device takes the call over (``call.handoff``):
  the old device gets ``call.ended(handed_off)``, the other joined devices
  ``call.handed_off``; the call, its duration and the user's participant go on;
* a user whose devices ring ``ring_timeout`` seconds without an answer is *missed*
  (``ring_timeout``); invitees of an ongoing call each get their own deadline;
* a hang-up (or a lost device) removes that device; the call ends when nobody is joined, or
  fewer than two users are joined and nobody is ringing, with the reason of the event that
  caused it (so a 1:1 hang-up ends ``hung_up``). Devices still joined get ``call.ended``,
  devices still ringing ``call.stop_ringing``; every leg and participant ends with a reason;
* an ended call accepts nothing (``call_ended``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from typing import Any

from .call_view import CallView
from .effects import CallEnded, Deliver, Effect
from .errors import ErrorCode, ProtocolError
from .events import (
    RELAY_KINDS,
    Abort,
    Answer,
    Cancel,
    Decline,
    DeviceLost,
    Event,
    Handoff,
    Hangup,
    Invite,
    Relay,
    Watch,
)
from .protocol import MAX_CALLEES
from .reasons import EndReason
from .records import (
    CallState,
    Leg,
    LegState,
    Participant,
    ParticipantState,
    Role,
)

#: Default seconds a user's devices ring before the user is missed.
DEFAULT_RING_TIMEOUT = 30.0
#: Most users (caller included) that may be ringing or joined at once.
MAX_PARTICIPANTS = MAX_CALLEES + 1
#: call end reasons that, for a user still ringing, mean the others gave up on them: the
#: ring ends ``cancelled`` for that user (a missed call) -- see :meth:`CallMachine._end`
_WITHDRAWN = frozenset({EndReason.HUNG_UP, EndReason.DEVICE_REMOVED, EndReason.NO_MEDIA,
                        EndReason.IDENTITY_CHECK_FAILED})


class CallMachine(CallView):
    """One call: its state (:class:`~.call_view.CallView`) and its transitions. Build it with
    :meth:`start` or :meth:`from_dict`."""

    # ------------------------------------------------------------------ construction

    @classmethod
    def start(
        cls,
        *,
        call_id: str,
        media: str,
        caller_user: str,
        caller_device: str,
        callees: Mapping[str, Sequence[str]],
        now: float,
        busy_users: Iterable[str] = (),
        ring_timeout: float = DEFAULT_RING_TIMEOUT,
        caller_devices: Sequence[str] = (),
    ) -> CallMachine:
        """Place a call: the caller's device is joined, every device of every callee rings.

        :param callees: callee user id → device ids to ring (in order). A user with no device
            is ``unavailable`` at once; if every callee is, the call ends ``unavailable``.
        :param busy_users: callees already in another call (their ring has ``call_waiting``).
        :param caller_devices: the caller's other devices (they hear ``call.elsewhere``).
        :raises ProtocolError: ``invalid_field`` (no callee, or media not audio/video),
            ``not_allowed`` (calling yourself), ``call_full`` (too many callees).
        """
        if media not in ("audio", "video"):
            raise ProtocolError(ErrorCode.INVALID_FIELD, f"media must be audio or video: {media!r}")
        if not callees:
            raise ProtocolError(ErrorCode.INVALID_FIELD, "a call needs at least one callee")
        if caller_user in callees:
            raise ProtocolError(ErrorCode.NOT_ALLOWED, "you cannot call yourself")
        if len(callees) + 1 > MAX_PARTICIPANTS:
            raise ProtocolError(ErrorCode.CALL_FULL, f"at most {MAX_PARTICIPANTS - 1} callees")
        if ring_timeout <= 0:
            raise ValueError("ring_timeout must be positive")
        rung = [device for devices in callees.values() for device in set(devices)]
        if caller_device in rung or len(rung) != len(set(rung)):
            raise ValueError("a device id may ring for one callee only, and not be the caller's")
        machine = cls(
            call_id=call_id,
            media=media,
            caller_user=caller_user,
            caller_device=caller_device,
            ring_timeout=ring_timeout,
            created_at=now,
        )
        machine._participants[caller_user] = Participant(
            user_id=caller_user,
            role=Role.CALLER,
            state=ParticipantState.JOINED,
            invited_at=now,
            device_id=caller_device,
            joined_at=now,
            devices=tuple(dict.fromkeys((caller_device, *caller_devices))),
        )
        machine._legs.append(Leg(caller_user, caller_device, LegState.JOINED, rung_at=None, joined_at=now))
        machine._ring(caller_user, caller_device, callees, frozenset(busy_users), now)
        return machine

    # ------------------------------------------------------------------ effects and timers

    def next_effect(self) -> Effect | None:
        """Pop the oldest pending effect, or ``None``."""
        return self._effects.popleft() if self._effects else None

    def drain_effects(self) -> list[Effect]:
        """Pop every pending effect, oldest first."""
        effects = list(self._effects)
        self._effects.clear()
        return effects

    def handle_timer(self, now: float) -> None:
        """Expire every ring whose deadline is ``<= now`` (missed: ``ring_timeout``).
        Calling it early, or on an ended call, does nothing."""
        for participant in list(self._participants.values()):
            if self.ended:
                return
            deadline = participant.ring_deadline
            if participant.state is ParticipantState.RINGING and deadline is not None:
                if deadline <= now:
                    self._user_out(participant.user_id, EndReason.RING_TIMEOUT, None, now)

    # ------------------------------------------------------------------ events

    def handle(self, event: Event, now: float) -> dict[str, Any]:
        """Apply ``event`` at time ``now``.

        :returns: the JSON-safe result fields of the ``ok`` reply (``{}`` for most events;
            ``{"participants": [{"user_id", "device_id"}, ...]}`` for :class:`Answer`).
        :raises ProtocolError: if the event is not allowed now; then nothing changed. A device
            whose user was never in the call learns nothing of it, not even whether it has
            ended: ``unknown_call``, as for a call id that does not exist.
        """
        if not isinstance(event, DeviceLost | Abort) and event.user_id not in self._participants:
            raise ProtocolError(ErrorCode.UNKNOWN_CALL, "no such call")
        if self.ended:
            raise ProtocolError(ErrorCode.CALL_ENDED, f"call {self.call_id} has ended")
        if isinstance(event, Answer):
            return self._on_answer(event, now)
        if isinstance(event, Decline):
            self._on_decline(event, now)
        elif isinstance(event, Cancel | Hangup):
            self._on_leave(event, now)
        elif isinstance(event, Handoff):
            return self._on_handoff(event, now)
        elif isinstance(event, Watch):
            self._on_watch(event)
        elif isinstance(event, Invite):
            self._on_invite(event, now)
        elif isinstance(event, Relay):
            self._on_relay(event)
        elif isinstance(event, DeviceLost):
            self._on_device_lost(event, now)
        elif isinstance(event, Abort):
            self._end(event.reason, now)
        else:  # pragma: no cover - guarded by the type checker
            raise TypeError(f"not a call event: {event!r}")
        return {}

    def _leg_of(self, user_id: str, device_id: str) -> Leg:
        """The acting device's active leg, or the error explaining why it has none."""
        leg = self.active_leg(user_id, device_id)
        if leg is not None:
            return leg
        for old in reversed(self._legs):
            if old.user_id == user_id and old.device_id == device_id:
                raise ProtocolError(
                    ErrorCode.INVALID_STATE,
                    f"this device is no longer in the call ({old.reason})",
                )
        raise ProtocolError(ErrorCode.NOT_IN_CALL, "this device is not in the call")

    def _on_answer(self, event: Answer, now: float) -> dict[str, Any]:
        leg = self._leg_of(event.user_id, event.device_id)
        if leg.state is not LegState.RINGING:
            if (again := self.answered_by(event.user_id, event.device_id)) is not None:
                return again
            raise ProtocolError(ErrorCode.INVALID_STATE, "this device has already joined")
        others = [{"user_id": other.user_id, "device_id": other.device_id}
                  for other in self.joined_legs()]
        self._set_leg(leg, state=LegState.JOINED, joined_at=now)
        user = event.user_id
        self._participants[user] = replace(
            self._participants[user],
            state=ParticipantState.JOINED,
            device_id=event.device_id,
            joined_at=now,
            ring_deadline=None,
        )
        self._stop_user_ringing(user, EndReason.ANSWERED_ELSEWHERE, now)
        # the users whose part of the call is answered now: this one, and the caller at once
        newly = [user]
        if self.state is CallState.RINGING:
            self.state = CallState.ACTIVE
            self.answered_at = now
            newly = [leg.user_id for leg in self.joined_legs()]
        self._notify_joined(
            "call.answered",
            {"user_id": user, "device_id": event.device_id},
            exclude=(user, event.device_id),
        )
        for user_id in newly:
            self._tell_elsewhere(self._participants[user_id])
        return {"participants": others}

    def _on_handoff(self, event: Handoff, now: float) -> dict[str, Any]:
        """The user's part of the call moves to ``event.device_id`` (see :class:`CallHandoff
        <facecall.signaling.protocol.CallHandoff>`): the old leg ends ``handed_off``, a new
        joined leg starts; the participant, and so the user's history, goes on."""
        if (again := self.handed_to(event.user_id, event.device_id, now)) is not None:
            return again
        if self.active_leg(event.user_id, event.device_id) is not None:
            raise ProtocolError(ErrorCode.INVALID_STATE, "this device rings: answer the call")
        participant = self._participants[event.user_id]
        if self.state is not CallState.ACTIVE or participant.state is not ParticipantState.JOINED:
            raise ProtocolError(ErrorCode.INVALID_STATE,
                                "only an answered call you are in can move to this device")
        old = self.active_leg(event.user_id, participant.device_id or "")
        assert old is not None and old.state is LegState.JOINED  # a joined user has its leg
        self._set_leg(old, state=LegState.ENDED, ended_at=now, reason=EndReason.HANDED_OFF)
        new = Leg(event.user_id, event.device_id, LegState.JOINED, rung_at=None, joined_at=now)
        self._legs.append(new)
        self._participants[event.user_id] = participant = replace(
            participant, device_id=event.device_id,
            devices=tuple(dict.fromkeys((*participant.devices, old.device_id, event.device_id))),
        )
        self._deliver(old, "call.ended", reason=EndReason.HANDED_OFF._value_)
        self._notify_joined(
            "call.handed_off",
            {"user_id": event.user_id, "from_device": old.device_id, "to_device": event.device_id},
            exclude=(event.user_id, event.device_id),
        )
        self._tell_elsewhere(participant)  # the old device too: it may take the call back
        result = self.handed_to(event.user_id, event.device_id, now)
        assert result is not None  # the call is on this device now
        return result

    def _on_watch(self, event: Watch) -> None:
        participant = self._participants[event.user_id]
        if participant.state is ParticipantState.ENDED:
            raise ProtocolError(ErrorCode.INVALID_STATE, "the user is no longer in this call")
        if event.device_id not in participant.devices:
            self._participants[event.user_id] = replace(
                participant, devices=(*participant.devices, event.device_id))

    def _on_decline(self, event: Decline, now: float) -> None:
        leg = self._leg_of(event.user_id, event.device_id)
        if leg.state is not LegState.RINGING:
            raise ProtocolError(ErrorCode.INVALID_STATE, "a joined device hangs up, not declines")
        reason = EndReason.BUSY if event.busy else EndReason.DECLINED
        self._set_leg(leg, state=LegState.ENDED, ended_at=now, reason=reason)
        self._user_out(event.user_id, reason, EndReason.DECLINED_ELSEWHERE, now)

    def _on_leave(self, event: Cancel | Hangup, now: float) -> None:
        leg = self._leg_of(event.user_id, event.device_id)
        is_caller = self._participants[event.user_id].role is Role.CALLER
        if isinstance(event, Cancel):
            if not is_caller:
                raise ProtocolError(ErrorCode.NOT_ALLOWED, "only the caller can cancel")
            if self.state is not CallState.RINGING:
                raise ProtocolError(ErrorCode.INVALID_STATE, "the call was answered; hang up")
        if leg.state is not LegState.JOINED:
            raise ProtocolError(ErrorCode.INVALID_STATE, "a ringing device declines")
        if is_caller and self.state is CallState.RINGING:
            # A hang-up before any answer is a cancel. The caller's device hears nothing
            # about its own request (it gets the ok); everyone else hears ``cancelled``.
            self._set_leg(leg, state=LegState.ENDED, ended_at=now, reason=EndReason.CANCELLED)
            self._end(EndReason.CANCELLED, now)
            return
        self._leave(leg, event.reason if isinstance(event, Hangup) else EndReason.HUNG_UP, now)

    def _on_invite(self, event: Invite, now: float) -> None:
        leg = self._leg_of(event.user_id, event.device_id)
        if leg.state is not LegState.JOINED:
            raise ProtocolError(ErrorCode.NOT_ALLOWED, "only a joined device can invite")
        if not event.callees:
            raise ProtocolError(ErrorCode.INVALID_FIELD, "invite at least one user")
        active = self.active_users()
        already = sorted(set(event.callees) & active)
        if already:
            raise ProtocolError(ErrorCode.INVALID_STATE, f"already in the call: {already}")
        if len(active) + len(event.callees) > MAX_PARTICIPANTS:
            raise ProtocolError(ErrorCode.CALL_FULL, f"at most {MAX_PARTICIPANTS} participants")
        busy_devices = {leg.device_id for leg in self._legs if leg.state is not LegState.ENDED}
        rung = [device for devices in event.callees.values() for device in set(devices)]
        clash = sorted(busy_devices.intersection(rung))
        if clash or len(rung) != len(set(rung)):
            raise ProtocolError(ErrorCode.INVALID_STATE, f"devices already in the call: {clash}")
        self._ring(event.user_id, event.device_id, event.callees, event.busy_users, now)

    def _on_relay(self, event: Relay) -> None:
        leg = self.active_leg(event.user_id, event.device_id)
        if leg is None or leg.state is not LegState.JOINED:
            raise ProtocolError(ErrorCode.NOT_IN_CALL, "only a joined device can send media setup")
        if event.kind not in RELAY_KINDS:
            raise ProtocolError(ErrorCode.INVALID_FIELD, f"cannot relay {event.kind!r}")
        if event.kind == "call.key":
            self._check_key_sender(event)
        target = next((t for t in self.joined_legs() if t.device_id == event.to_device), None)
        if target is None or target.device_id == event.device_id:
            raise ProtocolError(
                ErrorCode.NOT_ALLOWED, f"device {event.to_device!r} is not another joined device"
            )
        message = self._message(
            event.kind, from_user=event.user_id, from_device=event.device_id, **event.body
        )
        self._effects.append(Deliver(target.user_id, target.device_id, message))

    @staticmethod
    def _check_key_sender(event: Relay) -> None:
        """A sealed sender key names its sender, whose identity key signed it; the device that
        sends it must be that sender, or a device could send keys in another device's name
        (say, that device's earlier messages, replayed)."""
        key = event.body.get("key")
        if not isinstance(key, Mapping):
            raise ProtocolError(ErrorCode.INVALID_FIELD, "key: a sealed sender key is an object")
        for field, mine in (("sender_user", event.user_id), ("sender_device", event.device_id)):
            if key.get(field) != mine:
                raise ProtocolError(
                    ErrorCode.INVALID_FIELD,
                    f"key.{field} {key.get(field)!r} is not the sending device's ({mine!r}): "
                    "a device sends only its own sender keys")

    def _on_device_lost(self, event: DeviceLost, now: float) -> None:
        """A joined device that is gone leaves. A ringing device that lost its connection
        rings on, like one that was offline from the start (its ring waits in its mailbox and
        went to push): the user is missed at the ring timeout unless another device answers.
        A removed device stops ringing."""
        leg = self.active_leg(event.user_id, event.device_id)
        if leg is None:
            raise ProtocolError(ErrorCode.NOT_IN_CALL, "this device is not in the call")
        reason = EndReason.DEVICE_REMOVED if event.removed else EndReason.CONNECTION_LOST
        if leg.state is LegState.JOINED:
            self._leave(leg, reason, now)
            return
        if not event.removed:
            return
        self._set_leg(leg, state=LegState.ENDED, ended_at=now, reason=reason)
        still = len({other.device_id for other in self.ringing_legs()
                     if other.user_id == event.user_id})
        if still:  # the callers' "ringing on N devices" is one fewer
            self._notify_joined("call.ringing", {"user_id": event.user_id, "devices": still})
        else:
            self._user_out(event.user_id, reason, None, now)

    # ------------------------------------------------------------------ transitions

    def _ring(
        self,
        by_user: str,
        by_device: str,
        callees: Mapping[str, Sequence[str]],
        busy_users: frozenset[str],
        now: float,
    ) -> None:
        """Ring every device of ``callees``; users without a device are unavailable."""
        for user_id, devices in callees.items():
            self._participants[user_id] = Participant(
                user_id=user_id,
                role=Role.CALLEE,
                state=ParticipantState.RINGING,
                invited_at=now,
                invited_by=by_user,
                ring_deadline=now + self.ring_timeout,
                call_waiting=user_id in busy_users,
                devices=tuple(dict.fromkeys(devices)),
            )
        unavailable = []
        for user_id, devices in callees.items():
            waiting = user_id in busy_users
            for device_id in dict.fromkeys(devices):  # ring each device once
                self._legs.append(Leg(user_id, device_id, LegState.RINGING, rung_at=now))
                ring = self._ring_message(by_user, by_device, waiting)
                self._effects.append(Deliver(user_id, device_id, ring))
            if devices:
                self._notify_joined("call.ringing", {"user_id": user_id, "devices": len(set(devices))})
            else:
                unavailable.append(user_id)
        for user_id in unavailable:
            if self.ended:
                break
            self._user_out(user_id, EndReason.UNAVAILABLE, None, now)

    def _user_out(self, user_id: str, reason: EndReason, others_reason: EndReason | None, now: float) -> None:
        """A ringing user will not join: stop the user's ringing devices (with
        ``others_reason``, or ``reason``), end the participant, tell the joined devices
        ``call.declined`` — unless that ends the call, which then says it all."""
        self._stop_user_ringing(user_id, others_reason or reason, now)
        self._participants[user_id] = replace(
            self._participants[user_id],
            state=ParticipantState.ENDED,
            ended_at=now,
            reason=reason,
            ring_deadline=None,
        )
        if not self._maybe_end(reason, now):
            self._notify_joined("call.declined", {"user_id": user_id, "reason": reason._value_})

    def _leave(self, leg: Leg, reason: EndReason, now: float) -> None:
        """A joined device leaves; its user is out of the call."""
        self._set_leg(leg, state=LegState.ENDED, ended_at=now, reason=reason)
        participant = self._participants[leg.user_id]
        if self.state is CallState.ACTIVE:
            self._tell_elsewhere(participant, ended=True)
        self._participants[leg.user_id] = replace(
            participant, state=ParticipantState.ENDED, ended_at=now, reason=reason
        )
        if not self._maybe_end(reason, now):
            self._notify_joined(
                "call.participant_left",
                {"user_id": leg.user_id, "device_id": leg.device_id, "reason": reason._value_},
            )

    def _maybe_end(self, reason: EndReason, now: float) -> bool:
        """End the call with ``reason`` if nobody is joined, or fewer than two users are
        joined and nobody rings. Returns whether it ended."""
        states = [p.state for p in self._participants.values()]
        joined = states.count(ParticipantState.JOINED)
        ringing = ParticipantState.RINGING in states
        if joined == 0 or (joined < 2 and not ringing):
            self._end(reason, now)
            return True
        return False

    def _end(self, reason: EndReason, now: float) -> None:
        """Terminal transition: every active leg and participant ends with ``reason`` -- except
        that a user still ringing when the others hung up (or their devices were removed) was
        given up on before answering: ``cancelled``, a missed call, as when the caller cancels."""
        ring_reason = EndReason.CANCELLED if reason in _WITHDRAWN else reason
        for leg in list(self._legs):
            if leg.state is LegState.RINGING:
                self._deliver(leg, "call.stop_ringing", reason=ring_reason._value_)
                self._set_leg(leg, state=LegState.ENDED, ended_at=now, reason=ring_reason)
            elif leg.state is LegState.JOINED:
                self._deliver(leg, "call.ended", reason=reason._value_)
                self._set_leg(leg, state=LegState.ENDED, ended_at=now, reason=reason)
        for user_id, participant in self._participants.items():
            if participant.state is ParticipantState.JOINED and self.state is CallState.ACTIVE:
                self._tell_elsewhere(participant, ended=True)
            if participant.state is not ParticipantState.ENDED:
                ringing = participant.state is ParticipantState.RINGING
                self._participants[user_id] = replace(
                    participant,
                    state=ParticipantState.ENDED,
                    ended_at=now,
                    reason=ring_reason if ringing else reason,
                    ring_deadline=None,
                )
        self.state = CallState.ENDED
        self.ended_at = now
        self.end_reason = reason
        self._effects.append(CallEnded(reason))

    def _stop_user_ringing(self, user_id: str, reason: EndReason, now: float) -> None:
        for leg in self.ringing_legs():
            if leg.user_id == user_id:
                self._deliver(leg, "call.stop_ringing", reason=reason._value_)
                self._set_leg(leg, state=LegState.ENDED, ended_at=now, reason=reason)

    def _tell_elsewhere(self, participant: Participant, ended: bool = False) -> None:
        """``call.elsewhere`` to the user's devices other than the one in the call."""
        fields = {"state": "ended"}
        if not ended:
            fields = {"state": "active", **self.elsewhere_view(participant)}
            del fields["call_id"]  # the message has it
        for device_id in participant.devices:
            if device_id != participant.device_id:
                self._effects.append(Deliver(participant.user_id, device_id,
                                             self._message("call.elsewhere", **fields)))

    def _set_leg(self, leg: Leg, **changes: Any) -> None:
        for index in range(len(self._legs) - 1, -1, -1):
            if self._legs[index] is leg:
                self._legs[index] = replace(leg, **changes)
                return
        raise AssertionError("leg not in this call")  # pragma: no cover

    def _deliver(self, leg: Leg, kind: str, **fields: Any) -> None:
        self._effects.append(Deliver(leg.user_id, leg.device_id, self._message(kind, **fields)))

    def _notify_joined(
        self, kind: str, fields: dict[str, Any], exclude: tuple[str, str] | None = None
    ) -> None:
        for leg in self.joined_legs():
            if (leg.user_id, leg.device_id) != exclude:
                self._deliver(leg, kind, **fields)
