"""The call machine moving a user's part of a call between their devices (``call.handoff``)
and telling a user's other devices about it (``call.elsewhere``)."""

from __future__ import annotations

import pytest

from facecall.signaling.errors import ErrorCode, ProtocolError
from facecall.signaling.events import Answer, Handoff, Hangup, Invite, Watch
from facecall.signaling.machine import CallMachine
from facecall.signaling.reasons import EndReason
from facecall.signaling.records import CallState, LegState, ParticipantState

from .helpers import ended, sent


def answered(now: float = 0.0) -> CallMachine:
    """alice (a1; she also has a2 and a3) called bob (b1, b2); bob answered on b2 at 2.0."""
    machine = CallMachine.start(
        call_id="call-1", media="video", caller_user="alice", caller_device="a1",
        caller_devices=["a1", "a2", "a3"], callees={"bob": ["b1", "b2"]}, now=now,
    )
    machine.drain_effects()
    machine.handle(Answer("bob", "b2"), 2.0)
    machine.drain_effects()
    return machine


def refused(machine: CallMachine, event: Handoff, code: ErrorCode) -> None:
    before = machine.to_dict()
    with pytest.raises(ProtocolError) as info:
        machine.handle(event, 5.0)
    assert info.value.code is code, info.value
    assert machine.to_dict() == before


def test_an_answer_tells_both_users_other_devices_where_the_call_is() -> None:
    machine = CallMachine.start(
        call_id="call-1", media="audio", caller_user="alice", caller_device="a1",
        caller_devices=["a2", "a1"], callees={"bob": ["b1", "b2"]}, now=0.0,
    )
    assert [kind for _, kind, _ in sent(machine.drain_effects())] == \
        ["call.ring", "call.ring", "call.ringing"]  # nothing elsewhere while it rings
    machine.handle(Answer("bob", "b1"), 1.0)
    elsewhere = [(device, fields) for device, kind, fields in sent(machine.drain_effects())
                 if kind == "call.elsewhere"]
    assert elsewhere == [
        ("a2", {"state": "active", "device_id": "a1", "media": "audio", "role": "caller",
                "participants": [{"user_id": "bob", "name": None}]}),
        ("b2", {"state": "active", "device_id": "b1", "media": "audio", "role": "callee",
                "participants": [{"user_id": "alice", "name": None}]}),
    ]


def test_handoff_moves_the_users_part_of_the_call_to_the_new_device() -> None:
    machine = answered()
    result = machine.handle(Handoff("alice", "a2"), 10.0)
    assert result == {"media": "video", "role": "caller", "in_call_for": 10.0,
                      "participants": [{"user_id": "bob", "device_id": "b2"}]}
    assert sent(machine.drain_effects()) == [
        ("a1", "call.ended", {"reason": "handed_off"}),
        ("b2", "call.handed_off", {"user_id": "alice", "from_device": "a1", "to_device": "a2"}),
        ("a1", "call.elsewhere", {"state": "active", "device_id": "a2", "media": "video", "role": "caller",
                                  "participants": [{"user_id": "bob", "name": None}]}),
        ("a3", "call.elsewhere", {"state": "active", "device_id": "a2", "media": "video", "role": "caller",
                                  "participants": [{"user_id": "bob", "name": None}]}),
    ]
    assert machine.state is CallState.ACTIVE and machine.answered_at == 2.0
    alice = machine.participant("alice")
    assert alice is not None and alice.state is ParticipantState.JOINED
    assert alice.device_id == "a2" and alice.joined_at == 0.0  # her time in the call goes on
    old, new = [leg for leg in machine.legs if leg.user_id == "alice"]
    assert (old.device_id, old.state, old.reason, old.ended_at) == \
        ("a1", LegState.ENDED, EndReason.HANDED_OFF, 10.0)
    assert (new.device_id, new.state, new.joined_at) == ("a2", LegState.JOINED, 10.0)


def test_a_resent_handoff_answers_the_same_and_changes_nothing() -> None:
    machine = answered()
    first = machine.handle(Handoff("alice", "a2"), 10.0)
    machine.drain_effects()
    before = machine.to_dict()
    assert machine.handle(Handoff("alice", "a2"), 11.0) == {**first, "in_call_for": 11.0}
    assert machine.drain_effects() == [] and machine.to_dict() == before
    # the device that holds the call from the start asking is the same no-op
    assert machine.handle(Handoff("bob", "b2"), 11.0) == \
        {"media": "video", "role": "callee", "in_call_for": 9.0,
         "participants": [{"user_id": "alice", "device_id": "a2"}]}
    assert machine.drain_effects() == []


def test_a_device_registered_after_the_call_began_can_take_it_and_give_it_back() -> None:
    machine = answered()
    machine.handle(Handoff("alice", "a9"), 10.0)
    machine.drain_effects()
    alice = machine.participant("alice")
    assert alice is not None and "a9" in alice.devices
    machine.handle(Handoff("alice", "a1"), 20.0)  # back to the first device
    effects = sent(machine.drain_effects())
    assert ("a9", "call.ended", {"reason": "handed_off"}) in effects
    assert ("b2", "call.handed_off", {"user_id": "alice", "from_device": "a9",
                                      "to_device": "a1"}) in effects
    assert {device for device, kind, _ in effects if kind == "call.elsewhere"} == {"a2", "a3", "a9"}
    assert [leg.device_id for leg in machine.joined_legs()] == ["b2", "a1"]


def test_hanging_up_after_a_handoff_ends_the_call_everywhere() -> None:
    machine = answered()
    machine.handle(Handoff("alice", "a2"), 10.0)
    machine.drain_effects()
    machine.handle(Hangup("alice", "a2"), 30.0)
    effects = machine.drain_effects()
    assert ended(effects) == ["hung_up"]
    assert sorted((device, kind, fields.get("state", fields.get("reason")))
                  for device, kind, fields in sent(effects)) == [
        ("a1", "call.elsewhere", "ended"),
        ("a3", "call.elsewhere", "ended"),
        ("b1", "call.elsewhere", "ended"),
        ("b2", "call.ended", "hung_up"),
    ]
    alice = machine.participant("alice")
    assert alice is not None and alice.reason is EndReason.HUNG_UP and alice.joined_at == 0.0


def test_a_user_leaving_a_group_call_tells_only_their_own_devices() -> None:
    machine = answered()
    machine.handle(Invite("alice", "a1", {"carol": ["c1", "c2"]}), 3.0)
    machine.handle(Answer("carol", "c1"), 4.0)
    machine.drain_effects()
    machine.handle(Hangup("carol", "c1"), 5.0)
    effects = sent(machine.drain_effects())
    assert [(d, f) for d, kind, f in effects if kind == "call.elsewhere"] == \
        [("c2", {"state": "ended"})]
    assert machine.state is CallState.ACTIVE


@pytest.mark.parametrize("event, code", [
    (Handoff("bob", "b1"), ErrorCode.INVALID_STATE),  # rings: it answers instead
    (Handoff("alice", "a2"), ErrorCode.INVALID_STATE),  # not answered yet
    (Handoff("carol", "c1"), ErrorCode.UNKNOWN_CALL),  # not hers
])
def test_a_ringing_call_cannot_move(event: Handoff, code: ErrorCode) -> None:
    machine = CallMachine.start(
        call_id="call-1", media="video", caller_user="alice", caller_device="a1",
        caller_devices=["a2"], callees={"bob": ["b1", "b2"]}, now=0.0,
    )
    machine.drain_effects()
    refused(machine, event, code)


def test_who_may_not_take_an_answered_call() -> None:
    machine = answered()
    refused(machine, Handoff("carol", "a2"), ErrorCode.UNKNOWN_CALL)  # another user's device id
    machine.handle(Invite("alice", "a1", {"carol": ["c1"]}), 3.0)
    machine.drain_effects()
    refused(machine, Handoff("carol", "c2"), ErrorCode.INVALID_STATE)  # carol only rings
    machine.handle(Hangup("alice", "a1"), 4.0)  # alice left; bob and the ring to carol go on
    machine.drain_effects()
    refused(machine, Handoff("alice", "a2"), ErrorCode.INVALID_STATE)
    machine.handle(Hangup("bob", "b2"), 5.0)
    assert machine.ended
    refused(machine, Handoff("bob", "b1"), ErrorCode.CALL_ENDED)


def test_snapshots_keep_the_devices_and_read_those_from_before_handoff() -> None:
    machine = answered()
    snapshot = machine.to_dict()
    assert CallMachine.from_dict(snapshot).to_dict() == snapshot
    for participant in snapshot["participants"]:
        del participant["devices"]  # as written before this version
    old = CallMachine.from_dict(snapshot)
    old.handle(Handoff("alice", "a2"), 10.0)  # moves; nobody else is told elsewhere
    assert [kind for _, kind, _ in sent(old.drain_effects())] == \
        ["call.ended", "call.handed_off", "call.elsewhere"]


def test_a_device_newer_than_the_call_is_told_once_it_watches() -> None:
    machine = answered()
    machine.handle(Watch("alice", "a7"), 5.0)
    assert machine.drain_effects() == []
    machine.handle(Watch("alice", "a7"), 6.0)  # twice: nothing more
    alice = machine.participant("alice")
    assert alice is not None and alice.devices.count("a7") == 1
    machine.handle(Hangup("bob", "b2"), 7.0)
    told = [device for device, kind, _ in sent(machine.drain_effects()) if kind == "call.elsewhere"]
    assert "a7" in told
    refused(machine, Watch("alice", "a8"), ErrorCode.CALL_ENDED)
