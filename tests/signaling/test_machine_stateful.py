"""Hypothesis stateful tests of the call machine: random event sequences with a fake clock.

Events come from a small universe of users and devices, so most are valid somewhere and many
are not valid now; both kinds are checked. Invariants hold after every step.
"""

from __future__ import annotations

import json
import os
from collections import Counter

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import event as note
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from facecall.e2ee.agreement import agreement_public_text, b64, new_agreement_key
from facecall.signaling.effects import CallEnded, Deliver, Effect
from facecall.signaling.errors import ErrorCode, ProtocolError
from facecall.signaling.events import (
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
from facecall.signaling.machine import CallMachine
from facecall.signaling.reasons import EndReason
from facecall.signaling.records import Leg, LegState, ParticipantState

from .helpers import check_wire

USERS = ["u0", "u1", "u2", "u3", "u4"]
DEVICES = {user: [f"{user}-d{k}" for k in range(3)] for user in USERS}
CALLER, CALLER_DEVICE = "u0", "u0-d0"
RING_TIMEOUT = 30.0
# A leg ended by its own device's request gets no message about it; others always do.
OWN_REASONS = {EndReason.DECLINED, EndReason.BUSY, EndReason.CONNECTION_LOST,
               EndReason.HUNG_UP, EndReason.CANCELLED}

users = st.sampled_from(USERS)
actors = st.sampled_from([(u, d) for u in USERS for d in DEVICES[u]])
callee_map = st.dictionaries(
    st.sampled_from(USERS[1:]),
    st.sampled_from([1, 2, 3, 1, 2, 0]),  # index 0 is what hypothesis favours
    min_size=1,
    max_size=4,
)

#: Random event sequences per run (each up to 40 steps); raise it for a deeper search.
EXAMPLES = int(os.environ.get("FACECALL_STATEFUL_EXAMPLES", "1000"))


def devices_for(spec: dict[str, int]) -> dict[str, list[str]]:
    return {user: DEVICES[user][:n] for user, n in spec.items()}


#: a sealed sender key's fields of the right shape (what the message model checks; the server
#: opens nothing): an ephemeral public key, one recipient outside the call, a signature
SEALED_KEY_SHAPE = {"v": "1", "call_id": "call", "kid": "458752",
                    "epk": agreement_public_text(new_agreement_key()),
                    "recipients": [{"user": "u9", "device": "u9-d0", "sealed": b64(bytes(48))}],
                    "signature": b64(bytes(64))}


def relay_body(kind: str, key_of: tuple[str, str]) -> dict[str, object]:
    """A well-formed body of a relayed ``kind`` (the machine sees what the message model
    passed); a ``call.key`` names ``key_of`` as the key's sender."""
    sealed = {**SEALED_KEY_SHAPE, "sender_user": key_of[0], "sender_device": key_of[1]}
    bodies: dict[str, dict[str, object]] = {
        "call.sdp": {"description": {"type": "offer", "sdp": "v=0"}, "ice_restart": False},
        "call.candidate": {"candidate": None},
        "call.media": {"audio": True, "video": False, "screen": False},
        "call.rejoin": {},
        "call.key": {"key": sealed},
    }
    return bodies[kind]


class CallRules(RuleBasedStateMachine):
    """Drive one CallMachine with random events and a fake clock."""

    def __init__(self) -> None:
        super().__init__()
        self.now = 0.0
        self.machine: CallMachine
        self.ended_effects = 0
        self.accepted = Counter[str]()

    # ------------------------------------------------------------------ plumbing

    def _check_step(self, before: list[Leg], actor: tuple[str, str] | None,
                    effects: list[Effect]) -> None:
        """Effects are well formed, and every leg that changed was told about it."""
        check_wire(effects)
        ends = [e for e in effects if isinstance(e, CallEnded)]
        self.ended_effects += len(ends)
        assert self.ended_effects <= 1
        if ends:
            assert effects[-1] is ends[0], "CallEnded is the last effect"
        to_device = Counter(
            (e.device_id, e.message["type"]) for e in effects if isinstance(e, Deliver)
        )
        after = self.machine.legs
        for old, new in zip(before, after, strict=False):
            assert (old.user_id, old.device_id) == (new.user_id, new.device_id)
            if old.state is LegState.ENDED:
                assert new == old, "an ended leg never changes"
                continue
            if new.state is not LegState.ENDED:
                continue
            own = (new.user_id, new.device_id) == actor and new.reason in OWN_REASONS
            expected = "call.stop_ringing" if old.state is LegState.RINGING else "call.ended"
            if own:
                assert to_device[(new.device_id, expected)] == 0
            else:
                assert to_device[(new.device_id, expected)] == 1, (new, effects)
        for leg in after[len(before):]:
            if leg.rung_at is None and before:  # a handoff: the acting device took the call
                assert (leg.user_id, leg.device_id) == actor and leg.state is LegState.JOINED
                left = [old for old, new in zip(before, after, strict=False)
                        if old.user_id == leg.user_id and old.state is LegState.JOINED
                        and new.reason is EndReason.HANDED_OFF]
                assert len(left) == 1 and to_device[(leg.device_id, "call.elsewhere")] == 0
                continue
            if leg.rung_at is None:  # the caller's own device, joined from the start
                assert (leg.user_id, leg.device_id) == (CALLER, CALLER_DEVICE)
                continue
            assert leg.state is LegState.RINGING
            assert to_device[(leg.device_id, "call.ring")] == 1
        for effect in effects:
            if isinstance(effect, Deliver) and effect.message["type"] == "call.elsewhere":
                # only to the user's own other devices, never to the one holding the call
                participant = self.machine.participant(effect.user_id)
                assert participant is not None and effect.device_id in DEVICES[effect.user_id]
                assert effect.device_id in participant.devices
                if effect.message["state"] == "active":
                    assert effect.device_id != effect.message["device_id"]
                    assert effect.message["device_id"] == participant.device_id
                    assert self.machine.state.value == "active"
                    assert self.machine.active_leg(effect.user_id, effect.device_id) is None
            if isinstance(effect, Deliver) and effect.message["type"] in RELAY_KINDS:
                target = self.machine.active_leg(effect.user_id, effect.device_id)
                assert target is not None and target.state is LegState.JOINED
                sender = effect.message["from_user"], effect.message["from_device"]
                assert sender == actor and sender != (effect.user_id, effect.device_id)
                if effect.message["type"] == "call.key":  # only a device's own keys
                    key = effect.message["key"]
                    assert (key["sender_user"], key["sender_device"]) == sender

    def teardown(self) -> None:
        for name in sorted(self.accepted):
            note(f"accepted {name}")
        if hasattr(self, "machine"):
            note(f"final state {self.machine.state.value} {self.machine.end_reason}")

    def apply(self, event: Event) -> None:
        before_dict = self.machine.to_dict()
        before_legs = list(self.machine.legs)
        was_ended = self.machine.ended
        try:
            self.machine.handle(event, self.now)
        except ProtocolError as exc:
            assert self.machine.to_dict() == before_dict, "a rejected event changed state"
            stranger = not isinstance(event, DeviceLost | Abort) \
                and self.machine.participant(event.user_id) is None
            if stranger:  # never in the call: it learns nothing of it, ended or not
                assert exc.code is ErrorCode.UNKNOWN_CALL
            elif was_ended:
                assert exc.code is ErrorCode.CALL_ENDED
            return
        assert self.machine.participant(getattr(event, "user_id", CALLER)) is not None
        assert not was_ended, "an ended call accepted an event"
        self.accepted[type(event).__name__] += 1
        actor = None if isinstance(event, Abort) else (event.user_id, event.device_id)
        self._check_step(before_legs, actor, self.machine.drain_effects())

    # ------------------------------------------------------------------ rules

    @initialize(spec=callee_map, busy=st.sets(users), ring_timeout=st.sampled_from([5.0, 30.0]))
    def start(self, spec: dict[str, int], busy: set[str], ring_timeout: float) -> None:
        self.machine = CallMachine.start(
            call_id="call", media="video", caller_user=CALLER, caller_device=CALLER_DEVICE,
            callees=devices_for(spec), busy_users=busy, ring_timeout=ring_timeout, now=self.now,
            caller_devices=DEVICES[CALLER],
        )
        self._check_step([], None, self.machine.drain_effects())

    def _actor(self, data: st.DataObject) -> tuple[str, str]:
        """Mostly a device that is in the call (so events often apply), sometimes anyone."""
        active = [(leg.user_id, leg.device_id) for leg in self.machine.legs
                  if leg.state is not LegState.ENDED]
        if active and data.draw(st.integers(0, 3)) > 0:
            return data.draw(st.sampled_from(active))
        return data.draw(actors)

    @rule(data=st.data())
    def answer(self, data: st.DataObject) -> None:
        self.apply(Answer(*self._actor(data)))

    @rule(data=st.data(), busy=st.booleans())
    def decline(self, data: st.DataObject, busy: bool) -> None:
        self.apply(Decline(*self._actor(data), busy=busy))

    @precondition(lambda self: bool(self.machine.ringing_legs()))
    @rule(data=st.data())
    def answer_ringing(self, data: st.DataObject) -> None:
        leg = data.draw(st.sampled_from(self.machine.ringing_legs()))
        self.apply(Answer(leg.user_id, leg.device_id))

    @rule(data=st.data(), roll=st.integers(0, 2))
    def cancel(self, data: st.DataObject, roll: int) -> None:
        if roll == 0:
            self.apply(Cancel(*self._actor(data)))

    @rule(data=st.data())
    def hangup(self, data: st.DataObject) -> None:
        self.apply(Hangup(*self._actor(data)))

    @rule(data=st.data())
    def handoff(self, data: st.DataObject) -> None:
        """Any device of a user in the call (rung or not), or anyone, takes the call."""
        joined = [leg.user_id for leg in self.machine.joined_legs()]
        if joined and data.draw(st.integers(0, 2)) > 0:
            user = data.draw(st.sampled_from(joined))
            self.apply(Handoff(user, data.draw(st.sampled_from(DEVICES[user]))))
        else:
            self.apply(Handoff(*data.draw(actors)))

    @rule(data=st.data())
    def watch(self, data: st.DataObject) -> None:
        """A device the call did not know connects; it hears call.elsewhere from now on."""
        before = len(self.machine.drain_effects())
        self.apply(Watch(*data.draw(actors)))
        assert before == 0

    @rule(data=st.data(), spec=callee_map, busy=st.sets(users))
    def invite(self, data: st.DataObject, spec: dict[str, int], busy: set[str]) -> None:
        self.apply(Invite(*self._actor(data), devices_for(spec), frozenset(busy)))

    @rule(data=st.data(), kind=st.sampled_from(sorted(RELAY_KINDS)), own_key=st.booleans())
    def relay(self, data: st.DataObject, kind: str, own_key: bool) -> None:
        actor, peer = self._actor(data), self._actor(data)
        key_of = actor if own_key else data.draw(actors)
        before = self.accepted["Relay"]
        self.apply(Relay(*actor, peer[1], kind, relay_body(kind, key_of)))  # type: ignore[arg-type]
        if kind == "call.key" and key_of != actor:
            assert self.accepted["Relay"] == before, "a device relayed another device's key"

    @precondition(lambda self: len(self.machine.joined_legs()) >= 2)
    @rule(data=st.data(), kind=st.sampled_from(sorted(RELAY_KINDS)))
    def relay_joined(self, data: st.DataObject, kind: str) -> None:
        joined = self.machine.joined_legs()
        sender = data.draw(st.sampled_from(joined))
        peer = data.draw(st.sampled_from([leg for leg in joined if leg is not sender]))
        body = relay_body(kind, (sender.user_id, sender.device_id))
        before = self.accepted["Relay"]
        self.apply(Relay(sender.user_id, sender.device_id, peer.device_id, kind, body))  # type: ignore[arg-type]
        assert self.accepted["Relay"] == before + 1, f"a {kind} between joined devices was refused"

    @rule(data=st.data(), roll=st.integers(0, 2))
    def device_lost(self, data: st.DataObject, roll: int) -> None:
        if roll == 0:
            self.apply(DeviceLost(*self._actor(data)))

    @rule(
        reason=st.sampled_from([EndReason.GLARE, EndReason.DEVICE_REMOVED, EndReason.ERROR]),
        roll=st.integers(0, 5),
    )
    def abort(self, reason: EndReason, roll: int) -> None:
        if roll == 0:  # rarely, or most runs would end right away
            self.apply(Abort(reason))

    @rule(dt=st.floats(0.0, 12.0, allow_nan=False))
    def tick(self, dt: float) -> None:
        self.now += dt
        self._expire()

    @precondition(lambda self: self.machine.get_timer() is not None)
    @rule(roll=st.integers(0, 3))
    def jump_to_timer(self, roll: int) -> None:
        if roll:
            return
        timer = self.machine.get_timer()
        assert timer is not None
        self.now = max(self.now, timer)
        self._expire()

    def _expire(self) -> None:
        timer = self.machine.get_timer()
        if timer is None or timer > self.now:
            before = self.machine.to_dict()
            self.machine.handle_timer(self.now)
            assert self.machine.to_dict() == before, "an early timer changed something"
            return
        before_legs = list(self.machine.legs)
        self.machine.handle_timer(self.now)
        after = self.machine.get_timer()
        assert after is None or after > self.now, "handle_timer made no progress"
        self._check_step(before_legs, None, self.machine.drain_effects())

    # ------------------------------------------------------------------ invariants

    @invariant()
    def round_trips(self) -> None:
        snapshot = self.machine.to_dict()
        text = json.dumps(snapshot, allow_nan=False)
        assert CallMachine.from_dict(json.loads(text)).to_dict() == snapshot

    @invariant()
    def legs_and_participants_agree(self) -> None:
        machine = self.machine
        joined_by_user = Counter(leg.user_id for leg in machine.joined_legs())
        ringing_by_user = Counter(leg.user_id for leg in machine.ringing_legs())
        active_devices = [leg.device_id for leg in machine.legs if leg.state is not LegState.ENDED]
        assert len(active_devices) == len(set(active_devices)), "a device has two active legs"
        for p in machine.participants:
            assert joined_by_user[p.user_id] <= 1, "two answering devices for one user"
            if p.state is ParticipantState.JOINED:
                assert joined_by_user[p.user_id] == 1 and ringing_by_user[p.user_id] == 0
                leg = machine.active_leg(p.user_id, p.device_id or "")
                assert leg is not None and leg.state is LegState.JOINED
            elif p.state is ParticipantState.RINGING:
                assert ringing_by_user[p.user_id] >= 1 and joined_by_user[p.user_id] == 0
                assert p.ring_deadline is not None and p.ring_deadline > p.invited_at
            else:
                assert p.reason is not None and p.ended_at is not None
                assert joined_by_user[p.user_id] == ringing_by_user[p.user_id] == 0
        for leg in machine.legs:
            assert (leg.state is LegState.ENDED) == (leg.reason is not None)
            assert leg.user_id in {p.user_id for p in machine.participants}

    @invariant()
    def ended_means_everything_ended(self) -> None:
        machine = self.machine
        if machine.ended:
            assert machine.end_reason is not None and machine.get_timer() is None
            assert self.ended_effects == 1
            assert all(leg.state is LegState.ENDED for leg in machine.legs)
            assert all(p.state is ParticipantState.ENDED for p in machine.participants)
        else:
            assert self.ended_effects == 0
            states = [p.state for p in machine.participants]
            joined = states.count(ParticipantState.JOINED)
            assert joined >= 1
            assert joined >= 2 or ParticipantState.RINGING in states
            assert machine.get_timer() is not None or joined >= 2


# ~45 s of CPU for 1000 sequences; the generous timeout is for a loaded machine, not a target.
TestCallMachine = pytest.mark.timeout(900)(pytest.mark.slow(CallRules.TestCase))
TestCallMachine.settings = settings(
    max_examples=EXAMPLES,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
