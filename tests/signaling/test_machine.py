"""Unit tests of the call state machine, one behaviour each."""

from __future__ import annotations

import json
from typing import Any

import pytest

from facecall.signaling.errors import ErrorCode, ProtocolError
from facecall.signaling.events import (
    Abort,
    Answer,
    Cancel,
    Decline,
    DeviceLost,
    Event,
    Hangup,
    Invite,
    Relay,
)
from facecall.signaling.glare import is_glare
from facecall.signaling.machine import CallMachine
from facecall.signaling.protocol import CallCandidate, CallSdp, parse_client_message
from facecall.signaling.reasons import EndReason
from facecall.signaling.records import CallState, LegState, ParticipantState

from .helpers import call, ended, sent

SDP = {"description": {"type": "offer", "sdp": "v=0"}, "ice_restart": False}


def rejects(machine: CallMachine, event: Event, code: ErrorCode, now: float = 1.0) -> None:
    """``event`` is refused with ``code`` and changes nothing at all."""
    before = machine.to_dict()
    with pytest.raises(ProtocolError) as info:
        machine.handle(event, now)
    assert info.value.code is code, info.value
    assert machine.to_dict() == before


def leg_state(machine: CallMachine, device: str) -> tuple[LegState, EndReason | None]:
    leg = [leg for leg in machine.legs if leg.device_id == device][-1]
    return leg.state, leg.reason


def test_start_rings_every_device_and_tells_the_caller() -> None:
    _, effects = call()
    ring = {"from_user": "alice", "from_device": "a1", "media": "video",
            "participants": ["alice", "bob"], "call_waiting": False}
    assert sent(effects) == [
        ("b1", "call.ring", ring),
        ("b2", "call.ring", ring),
        ("a1", "call.ringing", {"user_id": "bob", "devices": 2}),
    ]


def test_busy_callee_rings_with_call_waiting() -> None:
    _, effects = call({"bob": ["b1"], "carol": ["c1"]}, busy=("carol",))
    rings = {dev: f["call_waiting"] for dev, kind, f in sent(effects) if kind == "call.ring"}
    assert rings == {"b1": False, "c1": True}


def test_first_answer_wins_and_other_devices_stop() -> None:
    machine, _ = call()
    result = machine.handle(Answer("bob", "b2"), 2.0)
    assert result == {"participants": [{"user_id": "alice", "device_id": "a1"}]}
    assert sent(machine.drain_effects()) == [
        ("b1", "call.stop_ringing", {"reason": "answered_elsewhere"}),
        ("a1", "call.answered", {"user_id": "bob", "device_id": "b2"}),
        ("b1", "call.elsewhere", {"state": "active", "device_id": "b2", "media": "video", "role": "callee",
                                  "participants": [{"user_id": "alice", "name": None}]}),
    ]
    assert machine.state is CallState.ACTIVE and machine.answered_at == 2.0
    bob = machine.participant("bob")
    assert bob is not None and bob.state is ParticipantState.JOINED and bob.device_id == "b2"
    assert leg_state(machine, "b1") == (LegState.ENDED, EndReason.ANSWERED_ELSEWHERE)
    rejects(machine, Answer("bob", "b1"), ErrorCode.INVALID_STATE)
    rejects(machine, Answer("alice", "a1"), ErrorCode.INVALID_STATE)  # the caller answers nothing
    # the answering device answering again (a resend whose reply was lost): the same ok, and
    # nothing happens
    assert machine.handle(Answer("bob", "b2"), 3.0) == result
    assert machine.drain_effects() == [] and machine.answered_at == 2.0
    assert machine.get_timer() is None


@pytest.mark.parametrize(("busy", "reason"), [(False, "declined"), (True, "busy")])
def test_decline_ends_a_one_to_one_call(busy: bool, reason: str) -> None:
    machine, _ = call()
    machine.handle(Decline("bob", "b1", busy=busy), 3.0)
    effects = machine.drain_effects()
    assert sent(effects) == [
        ("b2", "call.stop_ringing", {"reason": "declined_elsewhere"}),
        ("a1", "call.ended", {"reason": reason}),
    ]
    assert ended(effects) == [reason]
    assert machine.end_reason == reason and machine.ended_at == 3.0
    assert leg_state(machine, "b1") == (LegState.ENDED, EndReason(reason))
    assert leg_state(machine, "b2") == (LegState.ENDED, EndReason.DECLINED_ELSEWHERE)
    assert all(p.state is ParticipantState.ENDED for p in machine.participants)


def test_cancel_stops_every_ringing_device() -> None:
    machine, _ = call({"bob": ["b1", "b2"], "carol": ["c1"]})
    machine.handle(Cancel("alice", "a1"), 4.0)
    effects = machine.drain_effects()
    assert sent(effects) == [
        (dev, "call.stop_ringing", {"reason": "cancelled"}) for dev in ("b1", "b2", "c1")
    ]
    assert ended(effects) == ["cancelled"]
    assert {leg.reason for leg in machine.legs} == {EndReason.CANCELLED}
    rejects(machine, Answer("bob", "b1"), ErrorCode.CALL_ENDED)


def test_caller_hangup_before_answer_is_a_cancel() -> None:
    machine, _ = call()
    machine.handle(Hangup("alice", "a1"), 4.0)
    assert ended(machine.drain_effects()) == ["cancelled"]


def test_only_the_caller_cancels_and_only_before_an_answer() -> None:
    machine, _ = call({"bob": ["b1"], "carol": ["c1"]})
    rejects(machine, Cancel("bob", "b1"), ErrorCode.NOT_ALLOWED)
    machine.handle(Answer("bob", "b1"), 1.0)
    rejects(machine, Cancel("alice", "a1"), ErrorCode.INVALID_STATE)
    rejects(machine, Cancel("bob", "b1"), ErrorCode.NOT_ALLOWED)


def test_ring_timeout_is_a_missed_call() -> None:
    machine, _ = call(now=100.0)
    assert machine.get_timer() == 130.0
    machine.handle_timer(129.9)
    assert machine.drain_effects() == [] and not machine.ended
    machine.handle_timer(131.0)
    effects = machine.drain_effects()
    assert sent(effects) == [
        ("b1", "call.stop_ringing", {"reason": "ring_timeout"}),
        ("b2", "call.stop_ringing", {"reason": "ring_timeout"}),
        ("a1", "call.ended", {"reason": "ring_timeout"}),
    ]
    bob = machine.participant("bob")
    assert bob is not None and bob.missed and bob.ended_at == 131.0
    assert machine.get_timer() is None
    machine.handle_timer(500.0)  # no-op once ended
    assert machine.drain_effects() == []


@pytest.mark.parametrize("leaver", [("alice", "a1"), ("bob", "b1")])
def test_either_side_hangs_up_a_one_to_one_call(leaver: tuple[str, str]) -> None:
    machine, _ = call({"bob": ["b1"]})
    machine.handle(Answer("bob", "b1"), 1.0)
    machine.drain_effects()
    machine.handle(Hangup(*leaver), 9.0)
    other = "b1" if leaver[1] == "a1" else "a1"
    effects = machine.drain_effects()
    assert sent(effects) == [(other, "call.ended", {"reason": "hung_up"})]
    assert ended(effects) == ["hung_up"]
    assert [p.reason for p in machine.participants] == [EndReason.HUNG_UP] * 2


@pytest.mark.parametrize("reason", [EndReason.NO_MEDIA, EndReason.CONNECTION_LOST])
def test_a_client_that_gave_up_on_the_media_says_why(reason: EndReason) -> None:
    """``call.hangup {reason}``: the media never connected, or was lost and did not come back;
    the other side and the history hear that, not ``hung_up``."""
    machine, _ = call({"bob": ["b1"]})
    machine.handle(Answer("bob", "b1"), 1.0)
    machine.drain_effects()
    machine.handle(Hangup("bob", "b1", reason), 31.0)
    effects = machine.drain_effects()
    assert sent(effects) == [("a1", "call.ended", {"reason": reason.value})]
    assert ended(effects) == [reason.value]
    assert [p.reason for p in machine.participants] == [reason] * 2


def test_a_user_still_ringing_when_the_media_failed_is_missed() -> None:
    machine, _ = call({"bob": ["b1"], "carol": ["c1"]}, now=0.0)
    machine.handle(Answer("bob", "b1"), 1.0)
    machine.handle(Hangup("bob", "b1", EndReason.NO_MEDIA), 2.0)
    machine.drain_effects()
    machine.handle(Hangup("alice", "a1", EndReason.NO_MEDIA), 3.0)
    assert sent(machine.drain_effects()) == [("c1", "call.stop_ringing", {"reason": "cancelled"})]
    carol = machine.participant("carol")
    assert carol is not None and carol.reason is EndReason.CANCELLED  # missed, in history


def test_group_call_continues_until_fewer_than_two_remain() -> None:
    machine, _ = call({"bob": ["b1"], "carol": ["c1"], "dave": ["d1"]})
    machine.handle(Answer("bob", "b1"), 1.0)
    machine.handle(Decline("carol", "c1"), 2.0)
    machine.drain_effects()
    machine.handle(Answer("dave", "d1"), 3.0)
    assert sent(machine.drain_effects()) == [
        ("a1", "call.answered", {"user_id": "dave", "device_id": "d1"}),
        ("b1", "call.answered", {"user_id": "dave", "device_id": "d1"}),
    ]
    machine.handle(Hangup("alice", "a1"), 4.0)  # the caller may leave a group call
    assert sent(machine.drain_effects()) == [
        (dev, "call.participant_left", {"user_id": "alice", "device_id": "a1",
                                        "reason": "hung_up"}) for dev in ("b1", "d1")
    ]
    machine.handle(DeviceLost("dave", "d1"), 5.0)
    effects = machine.drain_effects()
    assert sent(effects) == [("b1", "call.ended", {"reason": "connection_lost"})]
    carol = machine.participant("carol")
    assert carol is not None and carol.reason is EndReason.DECLINED


def test_decline_in_a_group_call_is_reported_and_the_call_goes_on() -> None:
    machine, _ = call({"bob": ["b1"], "carol": ["c1"]})
    machine.handle(Decline("carol", "c1"), 2.0)
    assert sent(machine.drain_effects()) == [
        ("a1", "call.declined", {"user_id": "carol", "reason": "declined"})
    ]
    assert not machine.ended
    machine.handle(Decline("bob", "b1"), 3.0)
    assert ended(machine.drain_effects()) == ["declined"]


def test_alone_with_someone_still_ringing_keeps_the_call() -> None:
    machine, _ = call({"bob": ["b1"], "carol": ["c1"]}, now=0.0)
    machine.handle(Answer("bob", "b1"), 1.0)
    machine.handle(Hangup("bob", "b1"), 2.0)
    machine.drain_effects()
    assert not machine.ended  # alice is joined and carol still rings
    machine.handle_timer(30.0)
    effects = machine.drain_effects()
    assert sent(effects) == [
        ("c1", "call.stop_ringing", {"reason": "ring_timeout"}),
        ("a1", "call.ended", {"reason": "ring_timeout"}),
    ]


@pytest.mark.parametrize("leave", ["hangup", "removed"])
def test_a_user_still_ringing_when_the_others_leave_is_missed(leave: str) -> None:
    machine, _ = call({"bob": ["b1"], "carol": ["c1", "c2"]}, now=0.0)
    machine.handle(Answer("bob", "b1"), 1.0)
    machine.handle(Hangup("bob", "b1"), 2.0)
    machine.drain_effects()
    if leave == "hangup":
        machine.handle(Hangup("alice", "a1"), 3.0)
        reason = "hung_up"
    else:
        machine.handle(DeviceLost("alice", "a1", removed=True), 3.0)
        reason = "device_removed"
    assert sent(machine.drain_effects()) == [  # nobody is left for carol: her ring is given up
        ("c1", "call.stop_ringing", {"reason": "cancelled"}),
        ("c2", "call.stop_ringing", {"reason": "cancelled"}),
    ]
    assert machine.end_reason is EndReason(reason)
    carol = machine.participant("carol")
    assert carol is not None and carol.reason is EndReason.CANCELLED  # a missed call
    assert leg_state(machine, "c1") == (LegState.ENDED, EndReason.CANCELLED)
    bob = machine.participant("bob")
    assert bob is not None and bob.reason is EndReason.HUNG_UP


def test_invite_rings_new_users_with_their_own_deadline() -> None:
    machine, _ = call({"bob": ["b1"]}, now=0.0)
    machine.handle(Answer("bob", "b1"), 5.0)
    machine.drain_effects()
    machine.handle(Invite("bob", "b1", {"carol": ["c1", "c2"]}, frozenset({"carol"})), 10.0)
    ring = {"from_user": "bob", "from_device": "b1", "media": "video",
            "participants": ["alice", "bob", "carol"], "call_waiting": True}
    assert sent(machine.drain_effects()) == [
        ("c1", "call.ring", ring),
        ("c2", "call.ring", ring),
        ("a1", "call.ringing", {"user_id": "carol", "devices": 2}),
        ("b1", "call.ringing", {"user_id": "carol", "devices": 2}),
    ]
    assert machine.get_timer() == 40.0
    carol = machine.participant("carol")
    assert carol is not None and carol.invited_by == "bob" and carol.call_waiting
    machine.handle_timer(40.0)
    assert sent(machine.drain_effects())[-2:] == [
        ("a1", "call.declined", {"user_id": "carol", "reason": "ring_timeout"}),
        ("b1", "call.declined", {"user_id": "carol", "reason": "ring_timeout"}),
    ]
    assert not machine.ended


def test_invite_is_checked() -> None:
    machine, _ = call({"bob": ["b1"], "carol": ["c1"]})
    rejects(machine, Invite("bob", "b1", {"dave": ["d1"]}), ErrorCode.NOT_ALLOWED)  # ringing
    rejects(machine, Invite("eve", "e1", {"dave": ["d1"]}), ErrorCode.UNKNOWN_CALL)
    rejects(machine, Invite("alice", "a1", {"carol": ["c1"]}), ErrorCode.INVALID_STATE)
    rejects(machine, Invite("alice", "a1", {"dave": ["b1"]}), ErrorCode.INVALID_STATE)
    rejects(machine, Invite("alice", "a1", {}), ErrorCode.INVALID_FIELD)
    many = {f"u{i}": [f"d{i}"] for i in range(31)}
    rejects(machine, Invite("alice", "a1", many), ErrorCode.CALL_FULL)


def test_a_declined_user_can_be_invited_again() -> None:
    machine, _ = call({"bob": ["b1"], "carol": ["c1"]})
    machine.handle(Answer("bob", "b1"), 1.0)
    machine.handle(Decline("carol", "c1"), 2.0)
    machine.handle(Invite("alice", "a1", {"carol": ["c1"]}), 3.0)
    assert [(leg.device_id, leg.state) for leg in machine.legs if leg.user_id == "carol"] == [
        ("c1", LegState.ENDED),
        ("c1", LegState.RINGING),
    ]
    machine.handle(Answer("carol", "c1"), 4.0)
    carol = machine.participant("carol")
    assert carol is not None and carol.state is ParticipantState.JOINED


def test_unavailable_callee() -> None:
    machine, effects = call({"bob": []})
    assert sent(effects) == [("a1", "call.ended", {"reason": "unavailable"})]
    assert machine.ended and machine.end_reason is EndReason.UNAVAILABLE
    machine, effects = call({"bob": [], "carol": ["c1"]})
    assert sent(effects)[-1] == ("a1", "call.declined", {"user_id": "bob", "reason": "unavailable"})
    assert not machine.ended


def test_relay_only_between_joined_devices() -> None:
    machine, _ = call({"bob": ["b1", "b2"], "carol": ["c1"]})
    machine.handle(Answer("bob", "b1"), 1.0)
    machine.drain_effects()
    sdp = parse_client_message(json.dumps({
        "v": 1, "id": "x", "type": "call.sdp", "call_id": "call-1", "to_device": "b1",
        "description": {"type": "offer", "sdp": "v=0"}, "ice_restart": True,
        "signature": "s" * 85 + "A"}))
    assert isinstance(sdp, CallSdp)
    machine.handle(Relay.from_message("alice", "a1", sdp), 2.0)
    assert sent(machine.drain_effects()) == [  # the signature as sent: the device checks it
        ("b1", "call.sdp", {"from_user": "alice", "from_device": "a1",
                            "description": {"type": "offer", "sdp": "v=0"},
                            "ice_restart": True, "signature": "s" * 85 + "A"}),
    ]
    cand = parse_client_message(json.dumps({
        "v": 1, "id": "y", "type": "call.candidate", "call_id": "call-1", "to_device": "a1",
        "candidate": None}))
    assert isinstance(cand, CallCandidate)
    machine.handle(Relay.from_message("bob", "b1", cand), 2.0)
    assert sent(machine.drain_effects()) == [
        ("a1", "call.candidate", {"from_user": "bob", "from_device": "b1", "candidate": None}),
    ]
    rejects(machine, Relay("carol", "c1", "a1", "call.sdp", SDP), ErrorCode.NOT_IN_CALL)
    rejects(machine, Relay("bob", "b2", "a1", "call.sdp", SDP), ErrorCode.NOT_IN_CALL)
    rejects(machine, Relay("eve", "e1", "a1", "call.sdp", SDP), ErrorCode.UNKNOWN_CALL)
    rejects(machine, Relay("alice", "a1", "c1", "call.sdp", SDP), ErrorCode.NOT_ALLOWED)
    rejects(machine, Relay("alice", "a1", "a1", "call.sdp", SDP), ErrorCode.NOT_ALLOWED)
    rejects(machine, Relay("alice", "a1", "zz", "call.sdp", SDP), ErrorCode.NOT_ALLOWED)


def test_lost_ringing_device_rings_on_until_the_timeout() -> None:
    """Like a device offline from the start: the user is missed, not "connection lost"."""
    machine, _ = call()
    for device in ("b1", "b2"):
        machine.handle(DeviceLost("bob", device), 1.0)
    assert machine.drain_effects() == []
    assert leg_state(machine, "b1") == leg_state(machine, "b2") == (LegState.RINGING, None)
    assert machine.ring_message("bob", "b1") is not None  # what it gets if it comes back
    machine.handle_timer(machine.get_timer())
    assert machine.end_reason is EndReason.RING_TIMEOUT
    assert leg_state(machine, "b1") == (LegState.ENDED, EndReason.RING_TIMEOUT)


def test_removed_ringing_device() -> None:
    machine, _ = call()
    machine.handle(DeviceLost("bob", "b1", removed=True), 1.0)
    assert sent(machine.drain_effects()) == [  # b2 still rings
        ("a1", "call.ringing", {"user_id": "bob", "devices": 1})]
    assert leg_state(machine, "b1") == (LegState.ENDED, EndReason.DEVICE_REMOVED)
    machine.handle(DeviceLost("bob", "b2", removed=True), 2.0)
    assert sent(machine.drain_effects()) == [("a1", "call.ended", {"reason": "device_removed"})]


def test_ring_message_again() -> None:
    machine, effects = call()
    first = next(e.message for e in effects if e.device_id == "b1")
    assert machine.ring_message("bob", "b1") == first
    assert machine.ring_message("alice", "a1") is None  # joined, not ringing
    assert machine.ring_message("bob", "b9") is None  # not in the call


def test_held_by_is_the_call_as_a_device_that_still_holds_it_sees_it() -> None:
    machine, _ = call()
    alice_a1 = {"user_id": "alice", "device_id": "a1"}
    assert machine.held_by("bob", "b1") == {"call_id": "call-1", "media": "video",
                                           "state": "ringing", "participants": [alice_a1]}
    assert machine.held_by("alice", "a1") == {"call_id": "call-1", "media": "video",
                                             "state": "joined", "participants": []}
    machine.handle(Answer("bob", "b2"), 1.0)
    assert machine.held_by("alice", "a1")["participants"] == [  # type: ignore[index]
        {"user_id": "bob", "device_id": "b2"}]
    assert machine.held_by("bob", "b1") is None  # answered elsewhere: out of the call
    assert machine.held_by("carol", "c1") is None  # never in it
    machine.handle(Hangup("alice", "a1"), 2.0)
    assert machine.held_by("bob", "b2") is None  # the call ended


def test_lost_caller_before_answer_ends_the_call() -> None:
    machine, _ = call()
    machine.handle(DeviceLost("alice", "a1"), 1.0)
    assert sent(machine.drain_effects()) == [
        ("b1", "call.stop_ringing", {"reason": "connection_lost"}),
        ("b2", "call.stop_ringing", {"reason": "connection_lost"}),
    ]
    assert machine.end_reason is EndReason.CONNECTION_LOST


def test_glare() -> None:
    a_to_b = CallMachine.start(call_id="c-a", media="audio", caller_user="alice",
                               caller_device="a1", callees={"bob": ["b1"]}, now=0.0)
    b_to_a = CallMachine.start(call_id="c-b", media="audio", caller_user="bob",
                               caller_device="b1", callees={"alice": ["a1"]}, now=0.0)
    a_to_c = CallMachine.start(call_id="c-c", media="audio", caller_user="alice",
                               caller_device="a1", callees={"carol": ["c1"]}, now=0.0)
    assert is_glare(a_to_b, b_to_a) and is_glare(b_to_a, a_to_b)
    assert not is_glare(a_to_b, a_to_c)
    b_to_a.drain_effects()
    b_to_a.handle(Abort(EndReason.GLARE), 0.5)
    assert sent(b_to_a.drain_effects()) == [
        ("b1", "call.ended", {"reason": "glare"}),
        ("a1", "call.stop_ringing", {"reason": "glare"}),
    ]
    a_to_b.handle(Answer("bob", "b1"), 1.0)
    assert not is_glare(a_to_b, b_to_a)


def test_a_group_call_is_never_glare() -> None:
    a_to_b = CallMachine.start(call_id="c-a", media="audio", caller_user="alice",
                               caller_device="a1", callees={"bob": ["b1"]}, now=0.0)
    b_to_ac = CallMachine.start(call_id="c-b", media="audio", caller_user="bob",
                                caller_device="b1", callees={"alice": ["a1"], "carol": ["c1"]},
                                now=0.0)
    assert not is_glare(a_to_b, b_to_ac) and not is_glare(b_to_ac, a_to_b)
    b_to_a = CallMachine.start(call_id="c-c", media="audio", caller_user="bob",
                               caller_device="b1", callees={"alice": ["a1"]}, now=0.0)
    assert is_glare(a_to_b, b_to_a)
    b_to_a.handle(Answer("alice", "a1"), 1.0)  # not glare now; an invitee would make it 3 users
    b_to_a.handle(Invite("alice", "a1", {"carol": ["c1"]}), 2.0)
    assert len(b_to_a.participants) == 3


ALL_EVENTS: list[Event] = [
    Answer("bob", "b1"),
    Decline("bob", "b1"),
    Cancel("alice", "a1"),
    Hangup("alice", "a1"),
    Invite("alice", "a1", {"carol": ["c1"]}),
    Relay("alice", "a1", "b1", "call.sdp", SDP),
    DeviceLost("bob", "b1"),
    Abort(EndReason.ERROR),
]


@pytest.mark.parametrize("event", ALL_EVENTS, ids=lambda e: type(e).__name__)
def test_an_ended_call_accepts_nothing(event: Event) -> None:
    machine, _ = call()
    machine.handle(Abort(EndReason.SERVER_SHUTDOWN), 1.0)
    machine.drain_effects()
    rejects(machine, event, ErrorCode.CALL_ENDED)


def test_events_from_strangers_are_refused() -> None:
    machine, _ = call()
    # a user never in the call learns nothing of it: as if it did not exist, ended or not
    strangers = (Answer("eve", "e1"), Decline("eve", "e1"), Hangup("eve", "e1"),
                 Cancel("eve", "e1"), Invite("eve", "e1", {"dave": ["d1"]}),
                 Relay("eve", "e1", "a1", "call.sdp", SDP))
    for event in strangers:
        rejects(machine, event, ErrorCode.UNKNOWN_CALL)
    # a device of a user in the call, or a lost device the service names: not in it
    for event in (DeviceLost("eve", "e1"), Answer("bob", "b9")):
        rejects(machine, event, ErrorCode.NOT_IN_CALL)
    rejects(machine, Hangup("bob", "b1"), ErrorCode.INVALID_STATE)  # ringing: decline instead
    machine.handle(Answer("bob", "b1"), 1.0)
    rejects(machine, Decline("bob", "b1"), ErrorCode.INVALID_STATE)
    rejects(machine, Decline("bob", "b2"), ErrorCode.INVALID_STATE)  # answered elsewhere
    machine.handle(Hangup("bob", "b1"), 2.0)
    for event in strangers:
        rejects(machine, event, ErrorCode.UNKNOWN_CALL)


@pytest.mark.parametrize(
    ("kwargs", "code"),
    [
        ({"callees": {}}, ErrorCode.INVALID_FIELD),
        ({"callees": {"alice": ["a2"]}}, ErrorCode.NOT_ALLOWED),
        ({"media": "smell"}, ErrorCode.INVALID_FIELD),
        ({"callees": {f"u{i}": [f"d{i}"] for i in range(33)}}, ErrorCode.CALL_FULL),
    ],
)
def test_start_is_checked(kwargs: dict[str, Any], code: ErrorCode) -> None:
    args: dict[str, Any] = {"call_id": "c", "media": "video", "caller_user": "alice",
                            "caller_device": "a1", "callees": {"bob": ["b1"]}, "now": 0.0}
    with pytest.raises(ProtocolError) as info:
        CallMachine.start(**{**args, **kwargs})
    assert info.value.code is code


def test_snapshot_round_trips_through_json() -> None:
    machine, _ = call({"bob": ["b1", "b2"], "carol": ["c1"]})
    machine.handle(Answer("bob", "b1"), 1.0)  # effects left pending on purpose
    snapshot = machine.to_dict()
    restored = CallMachine.from_dict(json.loads(json.dumps(snapshot)))
    assert restored.to_dict() == snapshot
    assert restored.drain_effects() == machine.drain_effects()
    assert restored.get_timer() == machine.get_timer() == 30.0
    restored.handle_timer(30.0)
    carol = restored.participant("carol")
    assert carol is not None and carol.missed and not restored.ended
    with pytest.raises(ValueError):
        CallMachine.from_dict({**snapshot, "snapshot_version": 99})
