"""Calls: create, load, save with optimistic concurrency, and the recovery/glare queries."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest

from facecall.store import (
    CallExists,
    InvalidInput,
    LegWrite,
    NotFound,
    ParticipantWrite,
    StaleVersion,
    Store,
)
from tests.store.factories import T0, ended, ringing_call, user_with_device


async def test_create_and_load_call(store: Store) -> None:
    alice, a_dev = await user_with_device(store, "alice")
    bob, b_dev = await user_with_device(store, "bob")
    b_phone = await store.create_device(bob.id, "ios", "phone", T0)
    call = ringing_call(alice, a_dev, [(bob, b_dev)], snapshot={"nested": {"list": [1, 2.5, None]}})
    call = replace(call, legs=[*call.legs, LegWrite(bob.id, b_phone.id, "ringing", T0)])
    assert await store.create_call(call) == 1

    loaded = await store.load_call(call.call_id)
    assert loaded is not None
    assert loaded.version == 1
    assert loaded.snapshot == {"nested": {"list": [1, 2.5, None]}}
    assert (loaded.state, loaded.media) == ("ringing", "video")
    assert loaded.caller_user_id == alice.id and loaded.caller_device_id == a_dev.id
    assert loaded.created_at == T0 and loaded.next_deadline == T0 + 30
    assert loaded.answered_at is None and loaded.ended_at is None and loaded.end_reason is None
    assert {(p.user_id, p.role, p.state) for p in loaded.participants} == {
        (alice.id, "caller", "joined"),
        (bob.id, "callee", "ringing"),
    }
    assert {(leg.device_id, leg.state) for leg in loaded.legs} == {
        (a_dev.id, "connected"),
        (b_dev.id, "ringing"),
        (b_phone.id, "ringing"),
    }
    bare = await store.load_call(call.call_id, with_rows=False)
    assert bare is not None and bare.participants == () and bare.snapshot == loaded.snapshot
    assert await store.load_call("no-such-call") is None


async def test_save_call_bumps_version_and_upserts_rows(store: Store) -> None:
    alice, a_dev = await user_with_device(store, "alice")
    bob, b_dev = await user_with_device(store, "bob")
    carol, c_dev = await user_with_device(store, "carol")
    call = ringing_call(alice, a_dev, [(bob, b_dev)])
    await store.create_call(call)

    answered = replace(
        call,
        state="active",
        answered_at=T0 + 3,
        next_deadline=None,
        snapshot={"phase": "active"},
        participants=[
            ParticipantWrite(bob.id, "callee", "joined", T0, joined_at=T0 + 3, answered_device_id=b_dev.id),
            ParticipantWrite(carol.id, "callee", "ringing", T0 + 4),  # added to the call
        ],
        legs=[
            LegWrite(bob.id, b_dev.id, "connected", T0 + 3),
            LegWrite(carol.id, c_dev.id, "ringing", T0 + 4),
        ],
    )
    assert await store.save_call(answered, expected_version=1) == 2
    loaded = await store.load_call(call.call_id)
    assert loaded is not None
    assert (loaded.version, loaded.state, loaded.answered_at) == (2, "active", T0 + 3)
    assert loaded.next_deadline is None and loaded.snapshot == {"phase": "active"}
    by_user = {p.user_id: p for p in loaded.participants}
    assert set(by_user) == {alice.id, bob.id, carol.id}  # alice's row was kept
    assert by_user[bob.id].joined_at == T0 + 3 and by_user[bob.id].answered_device_id == b_dev.id
    assert by_user[alice.id].state == "joined"
    legs = {leg.device_id: leg for leg in loaded.legs}
    assert legs[b_dev.id].state == "connected" and legs[b_dev.id].updated_at == T0 + 3
    assert legs[c_dev.id].user_id == carol.id and legs[a_dev.id].state == "connected"


async def test_same_expected_version_twice_one_stale(store: Store) -> None:
    alice, a_dev = await user_with_device(store, "alice")
    bob, b_dev = await user_with_device(store, "bob")
    call = ringing_call(alice, a_dev, [(bob, b_dev)])
    await store.create_call(call)
    first = replace(call, snapshot={"writer": 1})
    second = replace(call, snapshot={"writer": 2}, state="ended", end_reason="cancelled")
    assert await store.save_call(first, 1) == 2
    with pytest.raises(StaleVersion) as info:
        await store.save_call(second, 1)
    assert (info.value.expected, info.value.actual) == (1, 2)
    loaded = await store.load_call(call.call_id)
    assert loaded is not None and loaded.snapshot == {"writer": 1} and loaded.state == "ringing"


async def test_concurrent_saves_from_two_stores_one_wins(store: Store) -> None:
    other = await Store.open(store.url)
    try:
        alice, a_dev = await user_with_device(store, "alice")
        bob, b_dev = await user_with_device(store, "bob")
        call = ringing_call(alice, a_dev, [(bob, b_dev)])
        await store.create_call(call)
        for round_ in range(1, 6):
            writes = [
                s.save_call(replace(call, snapshot={"round": round_, "by": i}), round_)
                for i, s in enumerate((store, other, store, other))
            ]
            results = await asyncio.gather(*writes, return_exceptions=True)
            assert results.count(round_ + 1) == 1, results
            assert sum(isinstance(r, StaleVersion) for r in results) == 3, results
            winner = results.index(round_ + 1)
            loaded = await other.load_call(call.call_id)
            assert loaded is not None and loaded.version == round_ + 1
            assert loaded.snapshot == {"round": round_, "by": winner}
    finally:
        await other.close()


async def test_save_unknown_call(store: Store) -> None:
    alice, a_dev = await user_with_device(store, "alice")
    with pytest.raises(NotFound, match="call"):
        await store.save_call(ringing_call(alice, a_dev, []), 1)


async def test_duplicate_call_id_refused_and_nothing_changes(store: Store) -> None:
    alice, a_dev = await user_with_device(store, "alice")
    bob, b_dev = await user_with_device(store, "bob")
    call = ringing_call(alice, a_dev, [(bob, b_dev)])
    await store.create_call(call)
    with pytest.raises(CallExists):
        await store.create_call(replace(call, snapshot={"overwritten": True}, participants=[]))
    loaded = await store.load_call(call.call_id)
    assert loaded is not None and loaded.snapshot == call.snapshot and loaded.version == 1


async def test_unknown_ids_in_a_call_change_nothing(store: Store) -> None:
    alice, a_dev = await user_with_device(store, "alice")
    bob, b_dev = await user_with_device(store, "bob")
    call = ringing_call(alice, a_dev, [(bob, b_dev)])
    ghost_callee = replace(
        call, participants=[*call.participants, ParticipantWrite("ghost", "callee", "ringing", T0)]
    )
    with pytest.raises(NotFound, match="user: ghost"):
        await store.create_call(ghost_callee)
    ghost_device = replace(call, legs=[*call.legs, LegWrite(bob.id, "ghost-dev", "ringing", T0)])
    with pytest.raises(NotFound, match="device: ghost-dev"):
        await store.create_call(ghost_device)
    assert await store.load_call(call.call_id) is None
    assert await store.unended_calls() == []

    await store.create_call(call)
    with pytest.raises(NotFound, match="user: ghost"):
        await store.save_call(replace(ghost_callee, state="active"), 1)
    carol, c_dev = await user_with_device(store, "carol")
    orphan_leg = replace(call, legs=[LegWrite(carol.id, c_dev.id, "ringing", T0)])
    with pytest.raises(InvalidInput, match="no participant row"):
        await store.save_call(orphan_leg, 1)
    loaded = await store.load_call(call.call_id)
    assert loaded is not None and loaded.version == 1 and loaded.state == "ringing"
    assert len(loaded.participants) == 2 and len(loaded.legs) == 2


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"media": "hologram"}, "media"),
        ({"state": "paused"}, "state"),
        ({"call_id": "c" * 65}, "call_id"),
        ({"end_reason": "r" * 33}, "end_reason"),
        ({"next_deadline": float("nan")}, "next_deadline"),
        ({"snapshot": {"not": {1, 2}}}, "snapshot"),
        ({"snapshot": {"nan": float("nan")}}, "snapshot"),
        ({"snapshot": {"big": "x" * (1024 * 1024)}}, "snapshot"),
    ],
)
async def test_bad_call_input(store: Store, change: dict[str, object], field: str) -> None:
    alice, a_dev = await user_with_device(store, "alice")
    call = replace(ringing_call(alice, a_dev, []), **change)  # type: ignore[arg-type]
    with pytest.raises(InvalidInput) as info:
        await store.create_call(call)
    assert info.value.field == field
    assert await store.unended_calls() == []


async def test_bad_participant_input(store: Store) -> None:
    alice, a_dev = await user_with_device(store, "alice")
    bob, b_dev = await user_with_device(store, "bob")
    call = ringing_call(alice, a_dev, [(bob, b_dev)])
    twice = replace(call, participants=[*call.participants, call.participants[1]])
    with pytest.raises(InvalidInput, match="twice"):
        await store.create_call(twice)
    bad_role = replace(call, participants=[replace(call.participants[0], role="host")])
    with pytest.raises(InvalidInput, match="role"):
        await store.create_call(bad_role)
    assert await store.load_call(call.call_id) is None


async def test_due_and_unended_calls(store: Store) -> None:
    alice, a_dev = await user_with_device(store, "alice")
    bob, b_dev = await user_with_device(store, "bob")
    early = ringing_call(alice, a_dev, [(bob, b_dev)], created_at=T0, ring_timeout=10)
    late = ringing_call(alice, a_dev, [(bob, b_dev)], created_at=T0 + 1, ring_timeout=30)
    timerless = replace(ringing_call(bob, b_dev, [(alice, a_dev)], created_at=T0 + 2), next_deadline=None)
    done = ended(ringing_call(bob, b_dev, [(alice, a_dev)], created_at=T0 + 3), T0 + 4, "cancelled")
    done = replace(done, next_deadline=T0 + 5)  # a stale timer on an ended call is not due
    for call in (late, timerless, early, done):
        await store.create_call(call)
    assert await store.due_calls(T0 + 9) == []
    assert await store.due_calls(T0 + 10) == [early.call_id]
    assert await store.due_calls(T0 + 100) == [early.call_id, late.call_id]
    assert await store.due_calls(T0 + 100, limit=1) == [early.call_id]
    assert await store.unended_calls() == [early.call_id, late.call_id, timerless.call_id]
    with pytest.raises(InvalidInput, match="limit"):
        await store.due_calls(T0, limit=0)


async def test_live_calls_of_user(store: Store) -> None:
    alice, a_dev = await user_with_device(store, "alice")
    bob, b_dev = await user_with_device(store, "bob")
    carol, c_dev = await user_with_device(store, "carol")
    group = ringing_call(alice, a_dev, [(bob, b_dev), (carol, c_dev)])
    await store.create_call(group)
    assert await store.live_calls_of_user(bob.id) == [group.call_id]
    assert await store.live_calls_of_user(alice.id) == [group.call_id]
    # carol declines; the call goes on between alice and bob
    declined = replace(
        group,
        participants=[ParticipantWrite(carol.id, "callee", "declined", T0, end_reason="declined")],
        legs=[LegWrite(carol.id, c_dev.id, "ended", T0 + 1, end_reason="declined")],
    )
    await store.save_call(declined, 1)
    assert await store.live_calls_of_user(carol.id) == []
    assert await store.live_calls_of_user(bob.id) == [group.call_id]
    await store.save_call(ended(group, T0 + 9, "hung_up"), 2)
    assert await store.live_calls_of_user(bob.id) == []
    assert await store.live_calls_of_user(alice.id) == []


async def test_joined_calls_of_user(store: Store) -> None:
    """What makes a user busy: a call the user placed or answered, not one that rings them."""
    alice, a_dev = await user_with_device(store, "alice")
    bob, b_dev = await user_with_device(store, "bob")
    call = ringing_call(alice, a_dev, [(bob, b_dev)])
    await store.create_call(call)
    assert await store.joined_calls_of_user(alice.id) == [call.call_id]  # the caller is in it
    assert await store.joined_calls_of_user(bob.id) == []  # only ringing
    answered = replace(call, state="active", answered_at=T0 + 1, participants=[
        ParticipantWrite(bob.id, "callee", "joined", T0, joined_at=T0 + 1,
                         answered_device_id=b_dev.id)], legs=[])
    await store.save_call(answered, 1)
    assert await store.joined_calls_of_user(bob.id) == [call.call_id]
    await store.save_call(ended(call, T0 + 9, "hung_up"), 2)
    assert await store.joined_calls_of_user(bob.id) == []
    assert await store.joined_calls_of_user(alice.id) == []


async def test_ringing_calls_between(store: Store) -> None:
    alice, a_dev = await user_with_device(store, "alice")
    bob, b_dev = await user_with_device(store, "bob")
    carol, c_dev = await user_with_device(store, "carol")
    a_to_b = ringing_call(alice, a_dev, [(bob, b_dev)])
    a_to_c = ringing_call(alice, a_dev, [(carol, c_dev)])
    await store.create_call(a_to_b)
    await store.create_call(a_to_c)
    assert await store.ringing_calls_between(alice.id, bob.id) == [a_to_b.call_id]
    assert await store.ringing_calls_between(bob.id, alice.id) == []
    assert await store.ringing_calls_between(alice.id, alice.id) == []
    await store.save_call(replace(a_to_b, state="active", participants=[], legs=[]), 1)
    assert await store.ringing_calls_between(alice.id, bob.id) == []
    assert await store.ringing_calls_between(alice.id, carol.id) == [a_to_c.call_id]


async def test_loaded_rows_are_exactly_what_was_written_in_order(store: Store) -> None:
    alice, a_dev = await user_with_device(store, "alice")
    bob, b_dev = await user_with_device(store, "bob")
    carol, c_dev = await user_with_device(store, "carol")
    call = ringing_call(alice, a_dev, [(bob, b_dev), (carol, c_dev)], created_at=T0 + 0.25)
    call = replace(
        call,
        participants=[
            replace(call.participants[0], left_at=T0 + 9.5, end_reason="hangup"),
            replace(call.participants[1], invited_at=T0 + 0.5, answered_device_id=b_dev.id),
            replace(call.participants[2], invited_at=T0 + 0.375, joined_at=T0 + 1.125),
        ],
        legs=[
            replace(leg, updated_at=T0 + n / 8, end_reason="r" if n else None)
            for n, leg in enumerate(call.legs)
        ],
    )
    await store.create_call(call)
    loaded = await store.load_call(call.call_id)
    assert loaded is not None and loaded.created_at == T0 + 0.25
    expected_parts = sorted(call.participants, key=lambda p: (p.invited_at, p.user_id))
    assert [
        (p.user_id, p.role, p.state, p.end_reason, p.invited_at, p.joined_at, p.left_at, p.answered_device_id)
        for p in loaded.participants
    ] == [
        (p.user_id, p.role, p.state, p.end_reason, p.invited_at, p.joined_at, p.left_at, p.answered_device_id)
        for p in expected_parts
    ]
    assert all(p.call_id == call.call_id for p in loaded.participants)
    expected_legs = sorted(call.legs, key=lambda g: (g.user_id, g.device_id))
    assert [(g.user_id, g.device_id, g.state, g.end_reason, g.updated_at) for g in loaded.legs] == [
        (g.user_id, g.device_id, g.state, g.end_reason, g.updated_at) for g in expected_legs
    ]
